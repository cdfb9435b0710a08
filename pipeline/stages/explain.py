"""The explain stage: explain/<artifact>.json for every int8 TFLite row of the run, its per-layer error against its
float reference (pipeline.engine.layer_error)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..config.keys import EVAL_KEYS
from ..core import console, records
from ..core.artifacts import atomic_write_json, file_sha
from ..core.errors import EdgeError
from ..core.precision import format_of, is_int8_tflite
from ..engine.contract import Stage
from ..engine.evaluate import external
from ..engine.layer_error import explain, reference_for


def explained_rows(ctx) -> list[str]:
    """The run's int8 TFLite rows that were built: each gets explained."""
    return [
        r
        for r in ctx.rows
        for build in [records.read(ctx.layout, r).get("build") or {}]
        if build.get("status") == "ok" and is_int8_tflite(format_of(Path(r)), build.get("precision"))
    ]


def write_explanation(ctx, artifact: Path, reference: Path) -> dict:
    layout = ctx.layout
    if Path(artifact).resolve() == Path(reference).resolve():
        raise EdgeError(f"{artifact}: reference= is the same file; a file compared with itself has no error to show")
    result = explain(artifact, reference, ctx.eval_set.x[: ctx.cfg.explain_images])
    result.update(
        artifact=layout.rel(artifact) if layout.holds(artifact) else str(artifact),
        reference=layout.rel(reference) if layout.holds(reference) else str(reference),
        split=ctx.eval_set.split,
        sha256=file_sha(artifact),
        reference_sha256=file_sha(reference),
    )
    rel = result["artifact"] if layout.holds(artifact) else external(artifact)  # the name its record has
    atomic_write_json(layout.explanation(rel), result)
    return result


def explain_stage(ctx) -> None:
    """explain/<artifact>.json for every int8 TFLite row of the run."""
    rows = explained_rows(ctx)
    for rel in tqdm(
        rows, desc="explain", unit="file", leave=False, disable=not console.err().isatty(), file=console.err()
    ):
        write_explanation(ctx, ctx.layout.path(rel), reference_for(ctx, rel))


STAGE = Stage(
    "explain",
    explain_stage,
    "per-layer error of each int8 TFLite row against its float sibling: SNR, cosine, max "
    "error, the layers adding most noise",
    needs=("convert",),
    keys=EVAL_KEYS | {"explain_images"},
    inputs=lambda ctx: [
        spec for rel in explained_rows(ctx) for spec in (rel, f"{ctx.layout.rel(ctx.layout.record(rel))}#build")
    ],
    outputs=lambda ctx: [ctx.layout.rel(ctx.layout.explanation(rel)) for rel in explained_rows(ctx)],
    needs_run=True,
    sections=(),
)
