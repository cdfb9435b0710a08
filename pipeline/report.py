"""The accuracy-vs-size report of a run: one row per artifact (like Ultralytics' benchmark table, plus memory),
the architecture table, the host and versions, device results merged as extra rows; report.json, report.md, a
self-contained report.html (plot embedded) and pareto.png (top-1 against size, marker size = latency)."""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

from .artifacts import atomic_write, atomic_write_json, file_sizes
from .benchmark import host
from .errors import EdgeError

COLUMNS = ["artifact", "format", "precision", "sparsity", "status", "size MiB", "gzip MiB", "top-1", "Δ vs fp32",
           "agreement", "ms @1 thread", "ms @N", "peak RSS MiB"]
LEGEND = "status: pass = passed every gate; gate = built but failed a gate; failed = not built (reason given)"
DEVICE_NOTE = ("rows `@ device:...` / `@ android:...`: measured on the device (device_results*.json); top-1 on the "
               "bundle's images (eval.npz), Δ against the fp32 file measured there on the same images")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _latency(bench: dict, key: str):
    cell = bench.get(key) or {}
    return cell.get("latency_ms_median"), cell.get("peak_rss_mib")


def collect_rows(run: Path, max_size_mib: float = 0.0) -> list[dict]:
    """Join eval/, bench/, tflite/gates.json and quant/summary.json per artifact; device results come as extra rows.
    max_size_mib > 0: an int8 .tflite file (the ones meant to ship) larger than that fails its gate."""
    gates = {g["artifact"]: g for g in (_load(run / "tflite" / "gates.json") or [])}
    quant = _load(run / "quant" / "summary.json")
    reference = _load(run / "eval" / "model.json")
    ref_top1 = reference.get("top1")
    rows = []
    for eval_path in sorted((run / "eval").glob("*.json")):
        ev = _load(eval_path)
        if not ev.get("artifact"):
            continue
        name = Path(ev["artifact"]).name
        bench = _load(run / "bench" / f"{Path(name).stem}.json")
        q = quant.get(name, {})
        threads = sorted(int(k[1:]) for k in bench if k.startswith("t") and k[1:].isdigit())
        ms1, rss1 = _latency(bench, "t1")
        msn, rssn = _latency(bench, f"t{threads[-1]}") if threads else (None, None)
        sizes = ({k: bench[k] for k in ("size_mib", "gzip_mib") if k in bench}
                 or (file_sizes(Path(ev["artifact"])) if Path(ev["artifact"]).is_file() else {}))  # gzip once
        gate = gates.get(name, {})
        too_big = (max_size_mib > 0 and name.endswith(".tflite") and ev.get("precision") == "int8"
                   and (sizes.get("size_mib") or 0) > max_size_mib)
        failed_gate = gate.get("passed") is False or q.get("gate") == "fail" or too_big
        rows.append({
            "artifact": name, "format": ev.get("format"), "precision": ev.get("precision"),
            "sparsity": q.get("sparsity_tflite_int8", q.get("nncf_sparsity_prunable")),
            "status": "gate" if failed_gate else "pass",
            "size_mib": sizes.get("size_mib"), "gzip_mib": sizes.get("gzip_mib"),
            "top1": ev.get("top1"), "delta_top1": None if ref_top1 is None else 100 * (ev["top1"] - ref_top1),
            "agreement": ev.get("agreement"), "ms_1": ms1, "ms_n": msn, "threads_n": threads[-1] if threads else None,
            "peak_rss_mib": max(v for v in (rss1, rssn, 0) if v is not None) or None,
            "macs": q.get("macs"), "method": q.get("method"), "source": "host",
            "size_gate": f"{sizes['size_mib']:.2f} MiB > max_size_mib {max_size_mib:g}" if too_big else None,
        })
    for path in sorted(p for p in run.rglob("device_results*.json") if "device_bundle" not in p.parts):
        device_rows = _load(path).get("rows", [])
        # Δ against the fp32 file measured in the same place on the same images (the bundle's subset)
        fp32 = next((r.get("top1") for r in device_rows if r.get("precision") == "fp32" and r.get("top1")), None)
        for row in device_rows:
            source = row.get("source") or path.stem
            top1 = row.get("top1")
            rows.append({**{c: None for c in ("sparsity", "gzip_mib", "agreement", "macs")}, **row,
                         "artifact": f"{row.get('artifact')} @ {source}", "source": source,
                         "delta_top1": None if fp32 is None or top1 is None else 100 * (top1 - fp32)})
    return rows


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cells(r: dict) -> list[str]:
    """One report row as the table's text cells, in COLUMNS order."""
    return [_fmt(c) for c in (
        r["artifact"], r.get("format"), r.get("precision"), _fmt(r.get("sparsity"), 3), r.get("status"),
        _fmt(r.get("size_mib")), _fmt(r.get("gzip_mib")), _fmt(r.get("top1"), 4), _fmt(r.get("delta_top1")),
        _fmt(r.get("agreement"), 4), _fmt(r.get("ms_1")), _fmt(r.get("ms_n")), _fmt(r.get("peak_rss_mib"), 0))]


def to_markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# resnet-edge report: {meta['run']}", "",
           f"Host: {meta['host']['cpu']}, {meta['host']['cores']} cores ({meta['host']['machine']}); "
           f"MiB = 2^20 bytes; latency = median ms per image, batch 1, after warm-up.", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = _cells(r)
        out.append("| " + " | ".join(cells) + " |")
    out += ["", LEGEND] + ([DEVICE_NOTE] if any(r.get("source") != "host" for r in rows) else [])
    for table in meta.get("latency_tables", []):
        out += ["", latency_markdown(table)]
    out += ["", "## Architecture", "", meta.get("architecture", "(summary not available)"), "",
            "## Versions", "", ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())]
    return "\n".join(out) + "\n"


def latency_markdown(table: dict) -> str:
    """bench/latency.py's table: the same weights at phone resolution through every runtime."""
    threads = table["threads"]
    out = [f"## Latency at {table['image_size']}x{table['image_size']} (bench/latency.py)", "",
           f"Same weights, batch 1, median of {table['runs']} runs; host {table['host']['cpu']}, "
           f"{table['host']['cores']} cores.", "",
           "| model | runtime | precision | size MiB | " + " | ".join(f"ms @{n}" for n in threads)
           + f" | x TFLite fp32 @{threads[0]} | peak RSS MiB |",
           "|---|---|---|---:|" + "---:|" * len(threads) + "---:|---:|"]
    for r in table["rows"]:
        out.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {_fmt(r['size_mib'])} | "
                   + " | ".join(_fmt(r.get(f"ms_{n}")) for n in threads)
                   + f" | {_fmt(r.get('speedup_vs_tflite_fp32'))} | {_fmt(r.get('peak_rss_mib'), 0)} |")
    return "\n".join(out)


def pareto_png(rows: list[dict], path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("size_mib") and r.get("top1") is not None and r.get("source") == "host"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    labels: dict[tuple, list[str]] = {}  # points that sit on each other (fp32.tflite and model.onnx) share a label
    for r in pts:
        size = 30 + 20 * (r.get("ms_1") or 1)
        ax.scatter(r["size_mib"], 100 * r["top1"], s=size, alpha=0.6,
                   color="tab:red" if r.get("status") != "pass" else "tab:blue")
        labels.setdefault((round(r["size_mib"], 1), round(100 * r["top1"], 2)), []).append(r["artifact"])
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front, best = [], -1.0
    for r in sorted(pts, key=lambda r: r["size_mib"]):  # smallest file that beats every smaller one
        if r["top1"] > best:
            front.append(r)
            best = r["top1"]
    ax.plot([r["size_mib"] for r in front], [100 * r["top1"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    if pts:  # plain-number ticks (1, 2, 5, 10, ...) across the sizes shown
        lo, hi = min(r["size_mib"] for r in pts), max(r["size_mib"] for r in pts)
        ticks = [t * 10**e for e in range(-3, 4) for t in (1, 2, 5) if lo / 1.5 <= t * 10**e <= hi * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("file size (MiB, log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("accuracy vs size (marker area ~ latency at 1 thread)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def markdown_html(text: str) -> str:
    """The little markdown the summary and latency tables use (## headings, | tables |, - lists, paragraphs)."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table
                    if not set(ln.replace("|", "").strip()) <= {"-", ":"}]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            out.append(f"<h2>{html.escape(line.lstrip('#').strip())}</h2>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def to_html(markdown_rows: list[dict], meta: dict, png: Path) -> str:
    img = base64.b64encode(png.read_bytes()).decode()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in markdown_rows:
        cells = _cells(r)
        cls = "" if r.get("status") == "pass" else ' class="bad"'
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    title = f"resnet-edge report: {html.escape(meta['run'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}tr.bad{{background:#fdd}}
table{{margin-bottom:1em}}</style></head><body>
<h1>resnet-edge report: {html.escape(meta['run'])}</h1>
<p>Host: {html.escape(meta['host']['cpu'])}, {meta['host']['cores']} cores. MiB = 2<sup>20</sup> bytes; latency =
median ms per image, batch 1, after warm-up.</p>
<img alt="accuracy vs size" src="data:image/png;base64,{img}">
<table><tr>{head}</tr>{''.join(body)}</table><p>{html.escape(LEGEND)}</p>
{f"<p>{html.escape(DEVICE_NOTE)}</p>" if any(r.get("source") != "host" for r in markdown_rows) else ""}
{''.join(markdown_html(latency_markdown(t)) for t in meta.get("latency_tables", []))}
<h2>Architecture</h2>{markdown_html(meta.get('architecture', ''))}
<h2>Versions</h2><p>{html.escape(', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items()))}</p>
</body></html>
"""


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert", "nncf", "torch-pruning"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def report(run: Path, architecture: str = "", max_size_mib: float = 0.0) -> dict[str, Path]:
    run = Path(run)
    if not (run / "eval").is_dir():
        raise EdgeError(f"{run}/eval: no evaluations to report; run `resnet-edge convert` (or `run`) first")
    rows = collect_rows(run, max_size_mib)
    meta = {"run": str(run), "host": host(), "versions": versions(), "architecture": architecture,
            "latency_tables": [t for t in map(_load, sorted((run / "bench").glob("latency_*.json"))) if t]}
    out = run / "report"
    png = pareto_png(rows, out / "pareto.png")
    paths = {"json": atomic_write_json(out / "report.json", {**meta, "columns": COLUMNS, "rows": rows}),
             "md": atomic_write(out / "report.md", lambda t: t.write_text(to_markdown(rows, meta))),
             "html": atomic_write(out / "report.html", lambda t: t.write_text(to_html(rows, meta, png))),
             "png": png}
    print(f"report ok -> {out}/report.md, report.html, pareto.png ({len(rows)} rows)", file=sys.stderr)
    return paths


def architecture(cfg) -> str:
    """The summary table of the run's trained model (with its real class count), or a note why there is none."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import input_shape
    from .summary import summarize
    from .summary import to_markdown as summary_markdown

    best = cfg.run_dir / "train" / "best.pt"
    try:
        model = model_from_checkpoint(load_checkpoint(best))
    except EdgeError as e:
        return f"(summary not available: {e})"
    return summary_markdown(summarize(model, cfg.model, cfg.image_size, input_shape(cfg)[1]))


def report_run(cfg) -> dict[str, Path]:
    """report() of cfg's run directory with its architecture table, then the size gate (after the report is out)."""
    paths = report(cfg.run_dir, architecture(cfg), cfg.max_size_mib)
    rows = json.loads(paths["json"].read_text())["rows"]
    too_big = [f"{r['artifact']}: {r['size_gate']}" for r in rows if r.get("size_gate")]
    if too_big:
        raise EdgeError("size gate failed: " + "; ".join(too_big))
    return paths
