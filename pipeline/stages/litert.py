"""The second converter, litert-torch: straight from the trained torch model (no ONNX) to
  tflite/fp32_litert.tflite   the float model, a cross-check of onnx2tf's fp32.tflite, and
  tflite/nncf_int8.tflite     NNCF's own int8 (PT2E post-training quantization) carried into the phone file.
Each file is evaluated and gated like every other artifact (parent: the torch checkpoint). litert-torch, jax and nncf
load here only, when the stage runs.
"""

from __future__ import annotations

from pathlib import Path

from ..config.keys import GATED_KEYS
from ..core import records
from ..core.names import litert_files
from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
from ..engine.contract import Stage
from ..engine.evaluate import assess, compare
from ..engine.gated import quantize_gated
from ..engine.torch_to_tflite import convert_fp32


def cross_check(ctx, onnx2tf: Path, litert: Path) -> dict:
    """The two fp32 routes on the test split: their agreement, and which one left torch (max |dlogit| vs torch)."""
    torch_logits = ctx.logits(ctx.layout.best)
    a, b = ctx.logits(onnx2tf), ctx.logits(litert)
    return {
        "other": ctx.layout.rel(onnx2tf),
        **compare(a, b),
        "vs_torch": {
            ctx.layout.rel(onnx2tf): compare(a, torch_logits)["max_abs_diff"],
            ctx.layout.rel(litert): compare(b, torch_logits)["max_abs_diff"],
        },
    }


def litert_stage(ctx) -> None:
    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    model = model_from_checkpoint(load_checkpoint(ctx.require(layout.best, "train")))
    fp32 = convert_fp32(model, ctx.examples, layout.tflite("fp32_litert"))
    onnx2tf_fp32 = layout.tflite("fp32")  # compared only when its record vouches for it (not a failed rebuild's)
    check = (
        {"cross_check": cross_check(ctx, onnx2tf_fp32, fp32)} if records.built(layout, layout.rel(onnx2tf_fp32)) else {}
    )
    assess(ctx, fp32, parent=layout.best, build={"method": "litert-torch fp32", "macs": ctx.dense_macs, **check})
    quantize_gated(
        ctx,
        model,
        layout.tflite("nncf_int8"),
        layout.best,
        {"method": f"nncf pt2e ({cfg.pt2e_algorithm}) + litert-torch", "macs": ctx.dense_macs},
    )


STAGE = Stage(
    "litert",
    litert_stage,
    "torch -> TFLite with litert-torch: fp32 and NNCF PT2E int8 (nncf_int8.tflite), gated",
    needs=("export",),
    keys=GATED_KEYS | {"pt2e_algorithm"},
    switch="run_litert",
    inputs=lambda ctx: ctx.names(ctx.layout.best, ctx.layout.onnx, ctx.layout.tflite("fp32")),
    sources=lambda ctx: ctx.names(ctx.layout.best),  # the onnx2tf files: only the cross-check's other side
    outputs=lambda ctx: ctx.names(*litert_files(ctx.layout)),
    records=lambda ctx: ctx.names(*litert_files(ctx.layout)),
)
