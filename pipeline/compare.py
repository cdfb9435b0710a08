"""Which model to ship: several runs' results merged into one table (every host artifact of every run) and two
Pareto plots, top-1 against file size and against latency at 224 px, 1 thread (bench/latency.py's figures; the
runs' own size where no run has them). Runs measured at different image sizes or on different data are refused.

    resnet-edge compare runs/a runs/b ... [--out runs/compare]  ->  compare.{json,md,html}, size.png, latency.png
"""

from __future__ import annotations

import html
from pathlib import Path

from .chain import context
from .config import open_run
from .core.artifacts import atomic_write_json, atomic_write_text
from .core.errors import EdgeError
from .core.precision import is_int8_tflite
from .stages.report import fit_row, fmt, front_png, img, in_memory, latency_size, markdown_html, run_rows

COLUMNS = [
    "run",
    "model",
    "width",
    "artifact",
    "precision",
    "sparsity",
    "channels kept",
    "MMACs",
    "status",
    "top-1 %",
    "size MiB",
    "gzip MiB",
    "ms @1",
    "ms @N",
    "ms @1 at {size}px",
    "ms @N at {size}px",
    "model MiB (as shipped)",
    "model MiB (Interpreter)",
    "peak RSS MiB",
]


def load_run(run_dir: Path) -> dict:
    """One run: its config and its host rows (reference and latency attached), labelled with the run's name."""
    cfg = open_run(run_dir)
    rows, reference, _ = run_rows(context(cfg))
    rows = [
        r
        for r in rows
        if r["source"] == "host"
        and r.get("top1") is not None
        and (reference is None or r.get("data_id") == reference["data_id"])
    ]
    return {
        "dir": str(run_dir),
        "name": run_dir.name,
        "cfg": cfg,
        "reference": reference,
        "rows": [{**r, "run": run_dir.name, "model": cfg.model, "width": cfg.width} for r in rows],
    }


def check_comparable(runs: list[dict]) -> None:
    """One image size and one data set, or a one-line error naming the first mismatch."""
    first = runs[0]
    for other in runs[1:]:
        for what, key in (
            ("image size", lambda c: c.image_size),
            ("data set", lambda c: (c.data_source, c.data_root or "default")),
            ("eval_subset", lambda c: c.eval_subset or "all"),
        ):
            a, b = key(first["cfg"]), key(other["cfg"])
            if a != b:
                raise EdgeError(
                    f"{first['dir']} ({what} {a}) and {other['dir']} ({what} {b}) differ in {what}: "
                    f"compare runs measured the same way"
                )


def _cells(r: dict, size: int | None) -> list[str]:
    at = (r.get("at_size") or {}).get(size, {}) if size else {}
    at_size = (fmt(at.get("ms_1")), fmt(at.get("ms_n"))) if size else ()
    return [
        fmt(c)
        for c in (
            r["run"],
            r["model"],
            fmt(r["width"], 2),
            r["artifact"],
            r.get("precision"),
            fmt(r.get("sparsity"), 3),
            fmt(r.get("channels_kept"), 2),
            fmt(r["macs"] / 1e6, 1) if r.get("macs") else None,
            r["status"],
            fmt(100 * r["top1"]),
            fmt(r.get("size_mib")),
            fmt(r.get("gzip_mib")),
            fmt(r.get("ms_1")),
            fmt(r.get("ms_n")),
            *at_size,
            fmt(r.get("model_mib"), 1),
            fmt(r.get("interpreter_model_mib"), 1),
            fmt(r.get("peak_rss_mib"), 0),
        )
    ]


def ship(rows: list[dict], size: int | None, max_drop: dict[str, float]) -> dict | None:
    """The passing int8 TFLite file of any run within its own run's max_int8_drop of that run's fp32 reference (the
    row's Δ, measured on that run's images), fastest at 1 thread (at `size` px where measured there, else at the
    runs' size)."""
    ok = [
        r
        for r in rows
        if r["status"] == "pass"
        and is_int8_tflite(r.get("format"), r.get("precision"))
        and r.get("delta_top1") is not None
        and -r["delta_top1"] <= max_drop[r["run"]]
    ]

    def speed(r):
        at = (r.get("at_size") or {}).get(size, {}).get("ms_1") if size else None
        return (at is None, at or r.get("ms_1") or float("inf"), r.get("size_mib") or 0)

    return min(ok, key=speed, default=None)


def compare(run_dirs: list[Path], out: Path) -> dict[str, Path]:
    if not run_dirs:
        raise EdgeError("compare needs at least one run directory")
    runs = [load_run(Path(d)) for d in run_dirs]
    check_comparable(runs)
    rows = [r for run in runs for r in run["rows"]]
    size = latency_size(rows)
    cols = [c.format(size=size) for c in COLUMNS if size or "{size}" not in c]
    host = next((r for r in rows if r.get("ms_1")), None)
    max_drop = {run["name"]: run["cfg"].max_int8_drop for run in runs}
    best = ship(rows, size, max_drop)
    base = runs[0]["cfg"]
    memory = in_memory(best) if best else ""
    headline = (
        f"Ship: {best['run']} / {best['artifact']} ({best['model']} width {best['width']:g}, top-1 "
        f"{100 * best['top1']:.2f}%, {best['size_mib']:.2f} MiB{memory}): the fastest int8 TFLite file that "
        f"passed every gate within {max_drop[best['run']]:g} point(s) (max_int8_drop) of its own run's fp32 model."
        if best
        else "Ship: none (no int8 TFLite file passed every gate within the drop allowed)."
    )

    fitted = [fit_row([r for r in rows if r["run"] == run["name"]]) for run in runs]
    if any(fitted):  # each run's answer to its own budget (resnet-edge fit), beside the pick across runs
        headline += (
            " Within each run's budget (fit): "
            + "; ".join(
                f"{r['run']} / {r['artifact']} (top-1 {100 * r['top1']:.2f}%, {r['size_mib']:.2f} MiB)"
                for r in fitted
                if r
            )
            + "."
        )

    def label(r: dict) -> str:
        return f"{r['run']}/{Path(r['artifact']).name}"

    def points(x) -> list[dict]:
        return [
            {
                "x": x(r),
                "top1": r["top1"],
                "label": label(r),
                "ok": r["status"] == "pass",
                "group": r["run"],
            }
            for r in rows
            if x(r)
        ]

    out.mkdir(parents=True, exist_ok=True)
    size_png = front_png(
        points(lambda r: r.get("size_mib")), out / "size.png", "file size (MiB, log scale)", "top-1 vs size, every run"
    )
    if size:
        latency = front_png(
            points(lambda r: (r.get("at_size") or {}).get(size, {}).get("ms_1")),
            out / "latency.png",
            f"ms per image at {size}x{size}, 1 thread (log scale; bench/latency.py)",
            f"top-1 vs latency at {size} px, every run",
            f"top-1 (%) at the runs' {base.image_size} px",
        )
    else:
        latency = front_png(
            points(lambda r: r.get("ms_1")),
            out / "latency.png",
            f"ms per image at {base.image_size}x{base.image_size}, 1 thread (log scale)",
            f"top-1 vs latency at the runs' {base.image_size} px (no bench/latency.py figures)",
        )
    intro = (
        f"Runs: {', '.join(run['dir'] for run in runs)}; {base.data_source} at {base.image_size} px, top-1 on "
        f"each run's own test images ({', '.join(str((run['reference'] or {}).get('images', '?')) for run in runs)})"
        f"; MiB = 2^20 bytes; ms = median per image, batch 1; model MiB = the resident memory a TFLite file "
        "added when run, as the device bundle runs it (CompiledModel with XNNPACK's weight cache) and with the "
        "Interpreter (the report's Memory section)"
        + (f", measured on {host['run']}'s host" if host else "")
        + ". Plots: size.png, latency.png."
    )
    md = (
        "\n".join(
            [
                "# resnet-edge compare",
                "",
                headline,
                "",
                intro,
                "",
                "| " + " | ".join(cols) + " |",
                "|" + "---|" * len(cols),
                *("| " + " | ".join(_cells(r, size)) + " |" for r in rows),
            ]
        )
        + "\n"
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>resnet-edge compare</title><style>'
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>resnet-edge compare</h1><p><b>{html.escape(headline)}</b></p>{markdown_html(intro)}"
        f"{img(size_png, 'top-1 vs size')}{img(latency, 'top-1 vs latency')}"
        f"{markdown_html(md.split(intro, 1)[1])}</body></html>\n"
    )
    return {
        "json": atomic_write_json(
            out / "compare.json",
            {
                "runs": [r["dir"] for r in runs],
                "columns": cols,
                "latency_size": size,
                "ship": best and label(best),
                "rows": rows,
            },
        ),
        "md": atomic_write_text(out / "compare.md", md),
        "html": atomic_write_text(out / "compare.html", page),
        "size_png": size_png,
        "latency_png": latency,
    }
