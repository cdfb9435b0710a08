"""The second converter, litert-torch: straight from the trained torch model (no ONNX) to
  tflite/fp32_litert.tflite   the float model, a cross-check of onnx2tf's fp32.tflite, and
  tflite/nncf_int8.tflite     NNCF's own int8 (PT2E post-training quantization) carried into the phone file.
Each file is evaluated and gated like every other artifact (parent: the torch checkpoint). litert-torch, jax and nncf
load here only, when the stage runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core import records
from ..core.artifacts import atomic_write
from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
from ..core.errors import EdgeError


def to_tflite(model, example, out: Path, quant_config=None) -> Path:
    """litert_torch.convert of `model` (a torch module, or a PT2E-quantized graph with its quant_config) at the
    example's shape, written atomically to `out`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import litert_torch
    import torch

    try:
        edge = litert_torch.convert(model, (torch.from_numpy(np.ascontiguousarray(example)),),
                                    quant_config=quant_config)
    except Exception as e:  # noqa: BLE001  the converter's own errors: a failed artifact, with the reason
        raise EdgeError(f"{out.name}: litert-torch cannot convert the model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from e
    return atomic_write(out, lambda tmp: edge.export(str(tmp)))


def convert_fp32(model, example: np.ndarray, out: Path) -> Path:
    """The float model, batch 1, NCHW float input as in torch."""
    return to_tflite(model, example[:1], out)


def convert_int8(model, calib: np.ndarray, out: Path, algorithm: str, float_layers: tuple[str, ...] = ()) -> Path:
    """NNCF PT2E int8 of `model` calibrated on `calib`, converted with its scales; `float_layers` (module names)
    stay in float."""
    from litert_torch.quantize.quant_config import QuantConfig

    from quantization import pt2e

    quantized, quantizer = pt2e.quantize(model, calib, algorithm, float_layers=float_layers)
    return to_tflite(quantized, calib[:1], out, QuantConfig(pt2e_quantizer=quantizer))


def cross_check(ctx, onnx2tf: Path, litert: Path) -> dict:
    """The two fp32 routes on the test split: their agreement, and which one left torch (max |dlogit| vs torch)."""
    from ..engine.evaluate import compare

    torch_logits = ctx.logits(ctx.layout.best)
    a, b = ctx.logits(onnx2tf), ctx.logits(litert)
    return {"other": ctx.layout.rel(onnx2tf), **compare(a, b),
            "vs_torch": {ctx.layout.rel(onnx2tf): compare(a, torch_logits)["max_abs_diff"],
                         ctx.layout.rel(litert): compare(b, torch_logits)["max_abs_diff"]}}


def quantize_gated(ctx, model, out: Path, parent: Path, build: dict, compressed: bool = False) -> dict:
    """NNCF PT2E int8 of `model` -> `out`, evaluated and gated; with quant_fallback=auto a file that fails its top-1
    gate gets a repaired sibling, <out>_fallback.tflite, with its worst modules in float (pipeline.fallback).
    Returns the int8 file's record."""
    from ..stages import fallback
    from ..engine.evaluate import assess

    layout, cfg = ctx.layout, ctx.cfg
    fallback.clear(layout, out)
    convert_int8(model, ctx.calib, out, cfg.pt2e_algorithm)
    build = {**build, "calibration": ctx.calibration}
    if compressed:
        from ..engine.runners import tflite_weight_sparsity

        build["sparsity_tflite_int8"] = tflite_weight_sparsity(out)["zero_share"]
    record = assess(ctx, out, parent=parent, compressed=compressed, build=build)
    if fallback.wanted(ctx, record, out, parent):
        fallback.repair(ctx, out, parent, build, compressed,
                        lambda layers, path: convert_int8(model, ctx.calib, path, cfg.pt2e_algorithm,
                                                          tuple(lay["module"] for lay in layers if lay["module"])),
                        lambda lay: lay["module"] or lay["layer"])
    return record


def litert_stage(ctx) -> None:
    from ..engine.evaluate import assess

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
