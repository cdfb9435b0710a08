"""The second converter, litert-torch: straight from the trained torch model (no ONNX) to
  tflite/fp32_litert.tflite   the float model, a cross-check of onnx2tf's fp32.tflite, and
  tflite/nncf_int8.tflite     NNCF's own int8 (PT2E post-training quantization) carried into the phone file.
Each file is evaluated and gated like every other artifact (parent: the torch checkpoint). litert-torch, jax and nncf
load here only, when the stage runs.
"""

from __future__ import annotations

from pathlib import Path

from ..config.keys import LITERT_KEYS
from ..core import records
from ..core.names import litert_files, rel
from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
from ..engine.evaluate import assess, compare
from ..engine.runners import tflite_weight_sparsity
from ..engine.stage import Stage
from ..engine.torch_to_tflite import convert_fp32, convert_int8
from . import fallback


def cross_check(ctx, onnx2tf: Path, litert: Path) -> dict:
    """The two fp32 routes on the test split: their agreement, and which one left torch (max |dlogit| vs torch)."""
    torch_logits = ctx.logits(ctx.layout.best)
    a, b = ctx.logits(onnx2tf), ctx.logits(litert)
    return {"other": ctx.layout.rel(onnx2tf), **compare(a, b),
            "vs_torch": {ctx.layout.rel(onnx2tf): compare(a, torch_logits)["max_abs_diff"],
                         ctx.layout.rel(litert): compare(b, torch_logits)["max_abs_diff"]}}


def quantize_gated(ctx, model, out: Path, parent: Path, build: dict, compressed: bool = False) -> dict:
    """NNCF PT2E int8 of `model` -> `out`, evaluated and gated; with quant_fallback=auto a file that fails its top-1
    gate gets a repaired sibling, <out>_fallback.tflite, with its worst modules in float (pipeline.stages.fallback).
    Returns the int8 file's record."""
    layout, cfg = ctx.layout, ctx.cfg
    convert_int8(model, ctx.calib, out, cfg.pt2e_algorithm)
    build = {**build, "calibration": ctx.calibration}
    if compressed:
        build["sparsity_tflite_int8"] = tflite_weight_sparsity(out)["zero_share"]
    record = assess(ctx, out, parent=parent, compressed=compressed, build=build)
    if not fallback.wanted(ctx, record, out, parent):
        fallback.clear(layout, out)
    else:
        fallback.repair(ctx, out, parent, build, compressed,
                        lambda layers, path: convert_int8(model, ctx.calib, path, cfg.pt2e_algorithm,
                                                          tuple(lay["module"] for lay in layers if lay["module"])),
                        lambda lay: lay["module"] or lay["layer"])
    return record


def litert_stage(ctx) -> None:
    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    model = model_from_checkpoint(load_checkpoint(ctx.require(layout.best, "train")))
    fp32 = convert_fp32(model, ctx.eval_set.x, layout.tflite("fp32_litert"))
    onnx2tf_fp32 = layout.tflite("fp32")  # compared only when its record vouches for it (not a failed rebuild's)
    check = ({"cross_check": cross_check(ctx, onnx2tf_fp32, fp32)}
             if records.built(layout, layout.rel(onnx2tf_fp32)) else {})
    assess(ctx, fp32, parent=layout.best, build={"method": "litert-torch fp32", "macs": ctx.dense_macs, **check})
    quantize_gated(ctx, model, layout.tflite("nncf_int8"), layout.best,
                   {"method": f"nncf pt2e ({cfg.pt2e_algorithm}) + litert-torch", "macs": ctx.dense_macs})


def deliver_int8(ctx, checkpoint: Path, name: str, build: dict) -> Path:
    """A compressed checkpoint's NNCF PT2E int8 file, tflite/<name>_nncf_int8.tflite, evaluated and gated."""
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    out = ctx.layout.tflite(f"{name}_nncf_int8")
    quantize_gated(ctx, model, out, checkpoint, compressed=True, build={
        **build, "method": f"{build['method']} -> nncf pt2e ({ctx.cfg.pt2e_algorithm}) + litert-torch"})
    return out


STAGE = Stage("litert", litert_stage, needs=("export",), keys=LITERT_KEYS,
              inputs=lambda la, c: rel(la, la.best, la.onnx, la.tflite("fp32")),
              sources=lambda la, c: rel(la, la.best),  # the onnx2tf files: only the cross-check's other side
              outputs=lambda la, c: rel(la, *litert_files(la)), records=lambda la, c: rel(la, *litert_files(la)))
