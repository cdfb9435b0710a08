"""The accuracy-vs-size report of a run, read only from the run's result records: one row per artifact the run's
stages declare (like Ultralytics' benchmark table, plus memory), a failed or skipped artifact a row with its reason,
device results merged as extra rows, the architecture table, host and versions. Writes report.json, report.md, a
self-contained report.html (plots embedded), pareto.png (top-1 against size), latency.png (top-1 against latency at
224 px where bench/latency.py ran) and layers.png (each int8 file's per-layer error, from explain/)."""

from __future__ import annotations

from pathlib import Path

from ...core import records
from ...core.artifacts import atomic_write_json, atomic_write_text
from ...core.errors import EdgeError
from ...core.host import host, versions
from ...engine.contract import Stage
from ...engine.manifest import manifest_stage_rows, stage_table
from ...engine.memory import memory_png, memory_rows
from .fit_section import fit_records
from .html import img, markdown_html, to_html
from .markdown import architecture, converters_line, explanations, latency_markdown, to_markdown
from .plots import fit_png, front_png, latency_png, layers_png, pareto_png
from .rows import (
    columns,
    fit_row,
    fit_stem,
    fmt,
    fp32_reference,
    in_memory,
    latency_size,
    load_json,
    recommended,
    run_rows,
    smallest,
)

# What compare, bench/ and the tests read of the report: its rows, and how it shows them.
__all__ = [
    "STAGE",
    "report",
    "run_rows",
    "fp32_reference",
    "latency_size",
    "recommended",
    "fit_row",
    "smallest",
    "fmt",
    "in_memory",
    "latency_markdown",
    "front_png",
    "img",
    "markdown_html",
]


def report(ctx) -> dict[str, Path]:
    """report/{report.json, report.md, report.html, pareto.png, layers.png, latency.png, memory.png} from the run's
    records (and bench/latency.py's tables of the run, where it ran)."""
    layout, cfg = ctx.layout, ctx.cfg
    rows, reference, tables = run_rows(ctx)
    # the host the latencies were measured on (the benchmark's own record), the versions the run was made with
    measured_on = next(
        (
            b["host"]
            for rel in (r["artifact"] for r in rows if r["source"] == "host")
            for b in [records.read(layout, rel).get("benchmark") or {}]
            if b.get("host")
        ),
        host(),
    )
    manifest = load_json(layout.manifest)
    meta = {
        "run": str(layout.root),
        "host": measured_on,
        "versions": manifest.get("versions") or versions(),
        "architecture": architecture(layout, cfg),
        "reference": reference,
        "recommended": (recommended(rows, reference) or {}).get("artifact"),
        "legend": records.LEGEND,
        "converters": converters_line(layout),
        "latency_tables": tables,
        "stages": stage_table(manifest_stage_rows(layout)),
    }
    meta["explain"] = explanations(layout, rows)
    meta["fit"] = fit_records(layout, rows)
    meta["smallest"] = (smallest(rows, reference) or {}).get("artifact")
    out = layout.report_dir
    png = pareto_png(rows, out / "pareto.png", reference)
    layers = layers_png(meta["explain"], out / "layers.png")
    latency = latency_png(rows, out / "latency.png", latency_size(rows) or 224, reference, cfg.image_size)
    memory = memory_png(memory_rows(rows, tables), out / "memory.png")
    fit = fit_png(meta["fit"], out / "fit.png") if meta["fit"] else None
    return {
        "json": atomic_write_json(out / "report.json", {**meta, "columns": columns(rows), "rows": rows}),
        "md": atomic_write_text(out / "report.md", to_markdown(rows, meta)),
        "html": atomic_write_text(out / "report.html", to_html(rows, meta, png, layers, latency, memory, fit)),
        "png": png,
        "layers": layers,
        "latency": latency,
        "memory": memory,
        **({"fit": fit} if fit else {}),
    }


def report_stage(ctx) -> None:
    report(ctx)


OUTPUTS = ("report.json", "report.md", "report.html", "pareto.png", "layers.png", "latency.png", "memory.png")


def verdict(ctx) -> None:
    """What `resnet-edge report` fails on once the report is written: the size gate, which is the report's own (the
    other gates' verdicts are their stages'), and rows built from an older model or other data (stale)."""
    layout, cfg = ctx.layout, ctx.cfg
    too_big = [
        f"{rel}: {g.text()}"
        for rel in ctx.rows
        for g in records.size_gates(records.read(layout, rel), cfg.max_size_mib)
        if not g.passed
    ]
    if too_big:
        raise EdgeError(
            f"report written to {layout.report_dir}, but {len(too_big)} file(s) fail "
            f"max_size_mib={cfg.max_size_mib:g}: " + " | ".join(too_big)
        )
    old = {rel: why for rel in ctx.rows for status, why in [records.row_status(layout, rel, 0)] if status == "stale"}
    if old:
        shown = ", ".join(list(old)[:3]) + (", ..." if len(old) > 3 else "")
        raise EdgeError(
            f"report written to {layout.report_dir}, but {len(old)} row(s) are stale ({shown}: "
            f"{next(iter(old.values()))})"
        )


def _fit_files(ctx) -> list[str]:
    """fit/<name>.json of the run's fit rows (pipeline.stages.fit): the report's fit section and fit.png."""
    return [f"fit/{stem}.json" for stem in map(fit_stem, ctx.rows) if stem]


def _fit_png(ctx) -> tuple[str, ...]:
    return ("fit.png",) if _fit_files(ctx) else ()


def _inputs(ctx) -> list[str]:
    layout, rows = ctx.layout, ctx.rows
    extra = sorted(layout.device_dir.glob("*.json")) + sorted(layout.companion("latency").glob("latency_*.json"))
    return (
        [layout.rel(layout.record(rel)) for rel in rows]
        + [rel for rel in _fit_files(ctx) if layout.path(rel).is_file()]
        + [layout.rel(layout.best)]
        + [rel for rel in map(layout.rel, map(layout.explanation, rows)) if layout.path(rel).is_file()]
        + [str(p.resolve()) for p in extra]
    )  # absolute: the latency tables live beside the run


STAGE = Stage(
    "report",
    report_stage,
    "report.json/.md/.html and pareto.png of a run directory",
    needs=(),
    keys=frozenset({"max_size_mib"}),
    verdict=verdict,
    inputs=_inputs,
    needs_run=True,
    sections=(),
    uses_data=False,
    outputs=lambda ctx: [ctx.layout.rel(ctx.layout.report_dir / f) for f in OUTPUTS + _fit_png(ctx)],
)
