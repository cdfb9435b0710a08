"""The accuracy-vs-size report of a run, read only from the run's result records: one row per artifact the run's
stages declare (like Ultralytics' benchmark table, plus memory), a failed or skipped artifact a row with its reason,
device results merged as extra rows, the architecture table, host and versions. Writes report.json, report.md, a
self-contained report.html (plots embedded), pareto.png (top-1 against size), latency.png (top-1 against latency at
224 px where bench/latency.py ran) and layers.png (each int8 file's per-layer error, from explain/)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..core import records
from ..core.artifacts import atomic_write, atomic_write_json, atomic_write_text
from ..core.errors import EdgeError
from ..engine.evaluate import delta_points
from ..core.host import host, versions
from ..engine.memory import memory_figures, memory_markdown, memory_png, memory_rows
from ..core.precision import is_int8_tflite
from ..engine.stage import manifest_stage_rows, stage_table

COLUMNS = ["artifact", "format", "precision", "sparsity", "channels kept", "MMACs", "status", "size MiB", "gzip MiB",
           "top-1 %", "Δ top-1 vs fp32 (points)", "agreement", "ms @1 thread", "ms @N", "peak RSS MiB",
           "model MiB (measured)", "floor MiB"]
LATENCY_COLUMNS = ["ms @1 at {size}px", "x fp32 TFLite at {size}px"]  # where bench/latency.py measured the run


def latency_size(rows: list[dict]) -> int | None:
    """The size bench/latency.py measured the rows' artifacts at: 224 where measured there (its default), else the
    largest; None where it did not run. The report's and compare's one rule."""
    sizes = {size for r in rows for size in r.get("at_size") or {}}
    return 224 if 224 in sizes else max(sizes, default=None)


def columns(rows: list[dict]) -> list[str]:
    size = latency_size(rows)
    return COLUMNS + ([c.format(size=size) for c in LATENCY_COLUMNS] if size else [])
DEVICE_NOTE = ("rows `@ device:...` / `@ android:...`: measured on the device (device/*.json); top-1 on the bundle's "
               "images (eval.npz), Δ against the fp32 file measured there on the same images")


EMULATED_NOTE = ("rows `@ arm64 (emulated, ...)`: the bundle run on arm64 under qemu-user (device_tests/arm64_check.py); "
                 "their top-1 is the arm64 kernels' answer, their latency is emulation's and NOT representative of "
                 "real hardware (qemu is many times slower)")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def host_row(layout, rel: str, max_size_mib: float) -> dict:
    """One record as a report row: its status decided by pipeline.core.records.status, nothing else."""
    record = records.read(layout, rel)
    build, ev = record.get("build") or {}, record.get("evaluation") or {}
    size_gates = records.size_gates(record, max_size_mib)
    status, reason = records.status(record, size_gates)
    cells = (record.get("benchmark") or {}).get("threads") or {}
    ok = {int(n): c for n, c in cells.items() if "error" not in c}
    top_n = max(ok, default=None)
    top1, ref = ev.get("top1"), ev.get("reference_top1")
    channel_pruned = build.get("channels_kept") is not None  # its weight sparsity is near zero: not the figure
    return {
        "artifact": rel, "format": build.get("format"), "precision": build.get("precision"),
        "sparsity": None if channel_pruned else build.get("sparsity_tflite_int8", build.get("nncf_sparsity_prunable")),
        "channels_kept": build.get("channels_kept") if channel_pruned else None,
        "macs": build.get("macs"), "method": build.get("method"), "status": status, "reason": reason,
        "size_mib": build.get("size_mib"), "gzip_mib": build.get("gzip_mib"), "top1": top1,
        "delta_top1": delta_points(ref, top1),
        "agreement": ev.get("agreement"), "images": ev.get("images"), "split": ev.get("split"),
        "data_id": ev.get("data_id"), "ms_1": ok.get(1, {}).get("latency_ms_median"),
        "ms_n": ok.get(top_n, {}).get("latency_ms_median") if top_n else None, "threads_n": top_n,
        "peak_rss_mib": max((c.get("peak_rss_mib") or 0 for c in ok.values()), default=None) or None,
        **memory_figures(ok.values()),
        "gates": [*(record.get("gates") or []), *(g.to_dict() for g in size_gates)], "source": "host",
        "repairs": build.get("repairs"), "float_layers": build.get("float_layers"),
    }


def device_rows(layout) -> list[dict]:
    """Rows from device/*.json (bench_tflite.py, android_benchmark.py); Δ against the fp32 file measured in the same
    place on the same images."""
    rows = []
    for path in sorted(layout.device_dir.glob("*.json")):
        found = _load(path).get("rows", [])
        fp32_rows = sorted((r for r in found if r.get("precision") == "fp32" and r.get("top1") is not None),
                           key=lambda r: r.get("artifact") != "fp32.tflite")  # the dense fp32 file first
        fp32 = fp32_rows[0]["top1"] if fp32_rows else None
        for row in found:
            source = row.get("source") or path.stem
            top1 = row.get("top1")
            row = {k: v for k, v in row.items() if k != "predictions"}  # per-image classes: the JSON's, not the report's
            rows.append({**{c: None for c in ("sparsity", "gzip_mib", "agreement", "macs", "reason")}, **row,
                         "artifact": f"{row.get('artifact')} @ {source}", "source": source,
                         "status": "pass" if row.get("status") == "pass" else "bench failed",
                         "reason": row.get("error"),
                         "delta_top1": delta_points(fp32, top1)})
    return rows


def collect_rows(layout, cfg) -> list[dict]:
    from ..chain import declared_rows

    return [host_row(layout, rel, cfg.max_size_mib) for rel in declared_rows(layout, cfg)] + device_rows(layout)


def _shippable(rows: list[dict], reference: dict | None) -> list[dict]:
    """Host int8 TFLite rows that passed every gate, measured on the reference's images."""
    return [r for r in rows if r["source"] == "host" and r["status"] == "pass"
            and is_int8_tflite(r["format"], r.get("precision"))
            and (reference is None or r.get("data_id") == reference.get("data_id"))]


def recommended(rows: list[dict], reference: dict | None = None) -> dict | None:
    """The phone file to ship: the fastest passing int8 TFLite file at 1 thread (then the smallest)."""
    return min(_shippable(rows, reference),
               key=lambda r: (r["ms_1"] if r["ms_1"] is not None else float("inf"), r["size_mib"]), default=None)


def smallest(rows: list[dict], reference: dict | None = None) -> dict | None:
    """The smallest passing int8 TFLite file (then the fastest)."""
    return min(_shippable(rows, reference),
               key=lambda r: (r["size_mib"], r["ms_1"] if r["ms_1"] is not None else float("inf")), default=None)


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cells(r: dict, reference: dict | None, size: int | None = None) -> list[str]:
    """One report row as the table's text cells, in columns() order. † marks a top-1 measured on other images than the
    fp32 reference row's."""
    other_set = reference and r["source"] == "host" and r.get("data_id") and r["data_id"] != reference.get("data_id")
    top1 = None if r.get("top1") is None else _fmt(100 * r["top1"]) + ("†" if other_set else "")
    cells = [_fmt(c) for c in (
        r["artifact"], r.get("format"), r.get("precision"), _fmt(r.get("sparsity"), 3),
        _fmt(r.get("channels_kept"), 2), _fmt(r["macs"] / 1e6, 1) if r.get("macs") else None, r.get("status"),
        _fmt(r.get("size_mib")), _fmt(r.get("gzip_mib")), top1, _fmt(r.get("delta_top1")), _fmt(r.get("agreement"), 4),
        _fmt(r.get("ms_1")), _fmt(r.get("ms_n")), _fmt(r.get("peak_rss_mib"), 0), _fmt(r.get("model_mib"), 1),
        _fmt(r.get("floor_mib"), 1))]
    if size:
        at = (r.get("at_size") or {}).get(size, {})
        cells += [_fmt(at.get("ms_1")), _fmt(at.get("speedup"), 1)]
    return cells


def _notes(rows: list[dict], reference: dict | None) -> list[str]:
    out = [records.LEGEND]
    for r in rows:
        if r["status"] != "pass":
            out.append(f"- {r['artifact']}: {r['status']}: {r['reason']}")
    for r in rows:
        if r.get("repairs"):
            speed = f", {r['ms_1']:.2f} ms at 1 thread" if r.get("ms_1") is not None else ""
            out.append(f"- {r['artifact']}: the repair of {r['repairs']} (quant_fallback=auto): "
                       f"{len(r['float_layers'])} layer(s) kept in float ({', '.join(r['float_layers'])}), "
                       f"{r['status']}, {_fmt(r.get('size_mib'))} MiB{speed}")
    if reference and any(r["source"] == "host" and r.get("data_id") and r["data_id"] != reference.get("data_id")
                         for r in rows):
        out.append(f"- †: top-1 measured on other images than the fp32 reference ({reference['images']} "
                   f"{reference['split']} images): Δ is against the reference on those same images, but the top-1 is "
                   f"not comparable with the other rows; re-run the stage that built it")
    if any(r["source"] != "host" for r in rows):
        out.append(DEVICE_NOTE)
    if any(r.get("emulated") for r in rows):
        out.append(EMULATED_NOTE)
    return out


def _described(r: dict, rows: list[dict]) -> str:
    """artifact (size, top-1, drop, speed and speed-up over the fp32 TFLite file at 1 thread)."""
    fp32 = next((x["ms_1"] for x in rows if x["artifact"] == "tflite/fp32.tflite" and x.get("ms_1")), None)
    speed = f", {r['ms_1']:.2f} ms at 1 thread" if r["ms_1"] is not None else ""
    if speed and fp32:
        speed += f", {fp32 / r['ms_1']:.1f}x the fp32 TFLite file"
    delta = f", Δ {r['delta_top1']:+.2f} points vs fp32" if r["delta_top1"] is not None else ""
    return f"{r['artifact']} ({r['size_mib']:.2f} MiB, top-1 {100 * r['top1']:.2f}%{delta}{speed})"


def _headline(rows: list[dict], reference: dict | None) -> str:
    best, small = recommended(rows, reference), smallest(rows, reference)
    if best is None:
        return "Recommended phone file: none (no int8 TFLite file passed every gate)."
    line = f"Recommended phone file: {_described(best, rows)}: the fastest int8 TFLite file that passed every gate."
    if small is not best:
        line += f" Smallest: {_described(small, rows)}."
    return line


def converters_line(layout) -> str | None:
    """The two fp32 routes compared (onnx2tf via ONNX, litert-torch from torch): do they agree, and if not, which
    one left torch."""
    rel = layout.rel(layout.tflite("fp32_litert"))
    check = (records.read(layout, rel).get("build") or {}).get("cross_check")
    if not check:
        return None
    (a, da), (b, db) = check["vs_torch"].items()
    farther = a if da > db else b
    verdict = ("they agree" if check["agreement"] >= 0.999 else
               f"they disagree, and {farther} is the one that left torch")
    return (f"Two fp32 converters: {a} (onnx2tf, from ONNX) and {b} (litert-torch, from torch) give the same top-1 on "
            f"{100 * check['agreement']:.2f}% of the test images, max |dlogit| between them {check['max_abs_diff']:.2g}; "
            f"against torch {da:.2g} and {db:.2g}: {verdict}.")


def explanations(layout, rows: list[dict]) -> list[dict]:
    """explain/<artifact>.json of the host rows that have one (pipeline.explain), in row order."""
    found = [_load(layout.explanation(r["artifact"])) for r in rows if r["source"] == "host"]
    return [e for e in found if e.get("layers")]


def explain_markdown(found: list[dict]) -> str:
    out = ["## Per-layer int8 error (explain)", "",
           "Each int8 file against the float file of the same converter and weights, every op output compared on the "
           "same test images: SNR of the int8 output (dB), and the SNR of the noise the layer itself added, by which "
           "layers are ranked (a later layer inherits an earlier one's noise without causing it). Bars: "
           "report/layers.png.", ""]
    for e in found:
        out += [f"- {e['artifact']} vs {e['reference']} ({e['images']} {e.get('split', 'test')} images, "
                f"{len(e['layers'])} layers): {e['verdict']}", ""]
        out += ["| worst layers | op | output shape | int8 | output SNR dB | added-noise SNR dB | cosine | max abs err |",
                "|---|---|---|---|---:|---:|---:|---:|"]
        for i in e["worst"]:
            lay = e["layers"][i]
            out.append(f"| {lay['layer']} | {lay['op']} | {'x'.join(map(str, lay['shape']))} | "
                       f"{'yes' if lay['int8'] else 'no'} | {lay['snr_db']:.1f} | {lay['snr_added_db']:.1f} | "
                       f"{lay['cosine']:.5f} | {lay['max_abs_err']:.3g} |")
        out.append("")
    return "\n".join(out).rstrip()


def layers_png(found: list[dict], path: Path) -> Path:
    """One panel per explained file: output SNR per layer in graph order, the five worst in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(1, len(found)), 1, figsize=(10, 2.6 * max(1, len(found))), dpi=100, squeeze=False)
    for ax, e in zip(axes[:, 0], found):
        snr = [lay["snr_db"] for lay in e["layers"]]
        colors = ["tab:red" if i in e["worst"] else "tab:blue" for i in range(len(snr))]
        ax.bar(range(len(snr)), snr, color=colors)
        ax.axhline(20, color="k", lw=0.8, ls="--")
        for i in e["worst"]:
            ax.annotate(e["layers"][i]["layer"], (i, snr[i]), fontsize=6, rotation=60, xytext=(0, 3),
                        textcoords="offset points")
        ax.set_title(f"{e['artifact']}: {e['verdict']}", fontsize=8)
        ax.set_ylabel("SNR dB")
    if not found:
        axes[0, 0].text(0.5, 0.5, "no int8 file explained", ha="center")
    axes[-1, 0].set_xlabel("layer (graph order); red: the five adding most noise")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def _table(rows: list[dict], reference: dict | None) -> list[str]:
    cols, size = columns(rows), latency_size(rows)
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + \
        ["| " + " | ".join(_cells(r, reference, size)) + " |" for r in rows]


def to_markdown(rows: list[dict], meta: dict) -> str:
    reference = meta.get("reference")
    out = [f"# resnet-edge report: {meta['run']}", "", _headline(rows, reference), "",
           f"Host: {meta['host']['cpu']}, {meta['host']['cores']} cores ({meta['host']['machine']}); "
           f"MiB = 2^20 bytes; latency = median ms per image, batch 1, after warm-up; top-1 on "
           + (f"{reference['images']} {reference['split']} images." if reference else "the test split."), "",
           *_table(rows, reference), "", *_notes(rows, reference),
           *([meta["converters"]] if meta.get("converters") else [])]
    for table in meta.get("latency_tables", []):
        out += ["", latency_markdown(table)]
    if latency_size(rows):
        out += ["", f"Top-1 against latency at {latency_size(rows)} px, 1 thread: report/latency.png."]
    memory = memory_rows(rows, meta.get("latency_tables", []))
    if memory:
        out += ["", memory_markdown(memory)]
    if meta.get("explain"):
        out += ["", explain_markdown(meta["explain"])]
    if meta.get("stages"):
        out += ["", "## Stages", "", "Wall time of each stage on this host as the manifest last recorded it (the report and "
                "bundle stages' own times: the console's closing table and manifest.json).", "", *meta["stages"]]
    out += ["", "## Architecture", "", meta.get("architecture", "(summary not available)"), "",
            "## Versions", "", ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())]
    return "\n".join(out) + "\n"


def latency_markdown(table: dict) -> str:
    """bench/latency.py's table: the same weights at phone resolution through every runtime."""
    threads = table["threads"]
    out = [f"## Latency at {table['image_size']}x{table['image_size']} (bench/latency.py)", "",
           f"Same weights, batch 1, median of {table['runs']} runs after {table['warmup']} warm-up runs; host "
           f"{table['host']['cpu']}, {table['host']['cores']} cores.", "",
           "| model | runtime | precision | size MiB | " + " | ".join(f"ms @{n}" for n in threads)
           + f" | x TFLite fp32 @{threads[0]} | peak RSS MiB | model MiB (measured) | floor MiB |",
           "|---|---|---|---:|" + "---:|" * len(threads) + "---:|---:|---:|---:|"]
    for r in table["rows"]:
        out.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {_fmt(r['size_mib'])} | "
                   + " | ".join(_fmt(r.get(f"ms_{n}")) for n in threads)
                   + f" | {_fmt(r.get('speedup_vs_tflite_fp32'))} | {_fmt(r.get('peak_rss_mib'), 0)} | "
                   + f"{_fmt(r.get('model_mib'), 1)} | {_fmt(r.get('floor_mib'), 1)} |")
    return "\n".join(out)


def front_png(points: list[dict], path: Path, xlabel: str, title: str) -> Path:
    """Top-1 (%) against a cost (log x axis), each point {x, top1, label, ok}, points on each other sharing one label,
    and the Pareto front through the passing points: each the cheapest that beats every cheaper one."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    labels: dict[tuple, list[str]] = {}
    for p in points:
        ax.scatter(p["x"], 100 * p["top1"], s=40, alpha=0.6, color="tab:blue" if p["ok"] else "tab:red")
        labels.setdefault((round(p["x"], 2), round(100 * p["top1"], 2)), []).append(p["label"])
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front, best = [], -1.0
    for p in sorted((p for p in points if p["ok"]), key=lambda p: p["x"]):
        if p["top1"] > best:
            front.append(p)
            best = p["top1"]
    ax.plot([p["x"] for p in front], [100 * p["top1"] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    if points:  # plain-number ticks (1, 2, 5, 10, ...) across the values shown
        lo, hi = min(p["x"] for p in points), max(p["x"] for p in points)
        ticks = [t * 10**e for e in range(-3, 5) for t in (1, 2, 5) if lo / 1.5 <= t * 10**e <= hi * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.text(0.5, 0.5, "nothing measured", ha="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def _measured(rows: list[dict], reference: dict | None) -> list[dict]:
    """Host rows with a top-1 on the reference's images (one measurement set)."""
    return [r for r in rows if r.get("top1") is not None and r.get("source") == "host"
            and (reference is None or r.get("data_id") == reference["data_id"])]


def pareto_png(rows: list[dict], path: Path, reference: dict | None = None) -> Path:
    points = [{"x": r["size_mib"], "top1": r["top1"], "label": Path(r["artifact"]).name, "ok": r["status"] == "pass"}
              for r in _measured(rows, reference) if r.get("size_mib")]
    return front_png(points, path, "file size (MiB, log scale)", "accuracy vs size")


def latency_png(rows: list[dict], path: Path, size: int, reference: dict | None = None) -> Path:
    """Top-1 against latency at `size` px, 1 thread (bench/latency.py), for the rows it measured."""
    points = [{"x": r["at_size"][size]["ms_1"], "top1": r["top1"], "label": Path(r["artifact"]).name,
               "ok": r["status"] == "pass"} for r in _measured(rows, reference)
              if (r.get("at_size") or {}).get(size, {}).get("ms_1")]
    return front_png(points, path, f"ms per image at {size}x{size}, 1 thread (log scale)",
                     f"accuracy vs latency at {size} px (bench/latency.py)")


def latency_artifact(name: str, runtime: str) -> str | None:
    """The run artifact a bench/latency.py file stands for (the same weights at another size): model_int8.tflite is
    tflite/int8.tflite, structured50_int8.tflite is tflite/structured50_int8.tflite; None for its own models."""
    if runtime.startswith("tflite"):
        return f"tflite/{name.removeprefix('model_')}"
    if runtime == "onnxruntime":
        return {"model.onnx": "onnx/model.onnx", "model_ptq_int8.onnx": "quant/ptq_int8.onnx"}.get(name)
    return None


def attach_latency(rows: list[dict], tables: list[dict]) -> None:
    """rows[i]["at_size"][size] = {ms_1, ms_n, speedup} from bench/latency.py's tables (first and last thread count;
    speed-up over its fp32 TFLite file at the first)."""
    by_artifact = {r["artifact"]: r for r in rows if r["source"] == "host"}
    for table in tables:
        first, last = table["threads"][0], table["threads"][-1]
        for lat in table["rows"]:
            row = by_artifact.get(latency_artifact(lat["artifact"], lat["runtime"]))
            if row is not None and lat.get(f"ms_{first}"):
                row.setdefault("at_size", {})[table["image_size"]] = {
                    "ms_1": lat[f"ms_{first}"], "ms_n": lat.get(f"ms_{last}"), "threads": [first, last],
                    "speedup": lat.get("speedup_vs_tflite_fp32")}


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


def _img(path: Path, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def to_html(rows: list[dict], meta: dict, png: Path, layers: Path, latency: Path | None = None,
            memory: Path | None = None) -> str:
    reference = meta.get("reference")
    mem = memory_rows(rows, meta.get("latency_tables", []))
    explained = ""
    if meta.get("explain"):
        explained = markdown_html(explain_markdown(meta["explain"])) + _img(layers, "per-layer SNR")
    size = latency_size(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns(rows))
    body = "".join(f"<tr class=\"{'ok' if r['status'] == 'pass' else 'bad'}\">"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, reference, size)) + "</tr>" for r in rows)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in [*_notes(rows, reference), meta.get("converters") or ""]
                    if n)
    title = f"resnet-edge report: {html.escape(meta['run'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}tr.bad{{background:#fdd}}
table{{margin-bottom:1em}}</style></head><body>
<h1>{title}</h1>
<p><b>{html.escape(_headline(rows, reference))}</b></p>
<p>Host: {html.escape(meta['host']['cpu'])}, {meta['host']['cores']} cores. MiB = 2<sup>20</sup> bytes; latency =
median ms per image, batch 1, after warm-up.</p>
{_img(png, "accuracy vs size")}
<table><tr>{head}</tr>{body}</table>{notes}
{''.join(markdown_html(latency_markdown(t)) for t in meta.get("latency_tables", []))}
{_img(latency, "accuracy vs latency") if latency and latency_size(rows) else ""}
{markdown_html(memory_markdown(mem)) + _img(memory, "memory") if memory and mem else ""}
{explained}
{"<h2>Stages</h2>" + markdown_html(chr(10).join(meta["stages"])) if meta.get("stages") else ""}
<h2>Architecture</h2>{markdown_html(meta.get('architecture', ''))}
<h2>Versions</h2><p>{html.escape(', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items()))}</p>
</body></html>
"""


def architecture(layout, cfg) -> str:
    """The summary table of the run's trained model (with its real class count), or a note why there is none."""
    from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
    from ..data import input_shape
    from ..engine.summary import summarize
    from ..engine.summary import to_markdown as summary_markdown

    try:
        model = model_from_checkpoint(load_checkpoint(layout.best))
    except EdgeError as e:
        return f"(summary not available: {e})"
    return summary_markdown(summarize(model, cfg.model, cfg.image_size, input_shape(cfg)[1]))


def run_rows(layout, cfg) -> tuple[list[dict], dict | None, list[dict]]:
    """The run's rows (with bench/latency.py's figures attached where it ran), the fp32 reference's measurement set
    and the latency tables: what report and compare read."""
    rows = collect_rows(layout, cfg)
    reference = next((r for r in rows if r["artifact"] == layout.rel(layout.onnx) and r.get("data_id")), None)
    reference = reference and {k: reference[k] for k in ("images", "split", "data_id")}
    tables = [t for t in map(_load, sorted(layout.companion("latency").glob("latency_*.json"))) if t]
    attach_latency(rows, tables)
    return rows, reference, tables


def report(layout, cfg) -> dict[str, Path]:
    """report/{report.json, report.md, report.html, pareto.png, layers.png, latency.png, memory.png} from the run's records (and
    bench/latency.py's tables of the run, where it ran)."""
    rows, reference, tables = run_rows(layout, cfg)
    # the host the latencies were measured on (the benchmark's own record), the versions the run was made with
    measured_on = next((b["host"] for rel in (r["artifact"] for r in rows if r["source"] == "host")
                        for b in [records.read(layout, rel).get("benchmark") or {}] if b.get("host")), host())
    manifest = _load(layout.manifest)
    meta = {"run": str(layout.root), "host": measured_on, "versions": manifest.get("versions") or versions(),
            "architecture": architecture(layout, cfg), "reference": reference,
            "recommended": (recommended(rows, reference) or {}).get("artifact"), "legend": records.LEGEND,
            "converters": converters_line(layout), "latency_tables": tables,
            "stages": stage_table(manifest_stage_rows(layout))}
    meta["explain"] = explanations(layout, rows)
    meta["smallest"] = (smallest(rows, reference) or {}).get("artifact")
    out = layout.report_dir
    png = pareto_png(rows, out / "pareto.png", reference)
    layers = layers_png(meta["explain"], out / "layers.png")
    latency = latency_png(rows, out / "latency.png", latency_size(rows) or 224, reference)
    memory = memory_png(memory_rows(rows, tables), out / "memory.png")
    return {"json": atomic_write_json(out / "report.json", {**meta, "columns": columns(rows), "rows": rows}),
            "md": atomic_write_text(out / "report.md", to_markdown(rows, meta)),
            "html": atomic_write_text(out / "report.html", to_html(rows, meta, png, layers, latency, memory)),
            "png": png, "layers": layers, "latency": latency, "memory": memory}


def report_stage(ctx) -> None:
    report(ctx.layout, ctx.cfg)
