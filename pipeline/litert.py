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

from .artifacts import atomic_write
from .checkpoint import load_checkpoint, model_from_checkpoint
from .errors import EdgeError


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
    from .evaluate import compare

    torch_logits = ctx.logits(ctx.layout.best)
    a, b = ctx.logits(onnx2tf), ctx.logits(litert)
    return {"other": ctx.layout.rel(onnx2tf), **compare(a, b),
            "vs_torch": {ctx.layout.rel(onnx2tf): compare(a, torch_logits)["max_abs_diff"],
                         ctx.layout.rel(litert): compare(b, torch_logits)["max_abs_diff"]}}


def fallback_path(int8: Path) -> Path:
    return int8.with_name(f"{int8.stem}_fallback.tflite")


def fallbacks(layout, *int8: Path) -> list[Path]:
    """The repaired files (quant_fallback) that exist for these int8 rows: they are rows only when made."""
    return [fallback_path(p) for p in int8 if layout.record(fallback_path(p)).is_file()]


def _clear_fallback(layout, int8: Path) -> None:
    """A new int8 file makes its old repair stale: file, record and explanation go."""
    fixed = fallback_path(int8)
    for stale in (fixed, layout.record(fixed), layout.explanation(fixed)):
        stale.unlink(missing_ok=True)


def quantize_gated(ctx, model, out: Path, parent: Path, build: dict, compressed: bool = False) -> dict:
    """NNCF PT2E int8 of `model` -> `out`, evaluated and gated; with quant_fallback=auto a file that fails its top-1
    gate gets a repaired sibling, <out>_fallback.tflite (see `repair`). Returns the int8 file's record."""
    from . import records
    from .evaluate import assess

    layout, cfg = ctx.layout, ctx.cfg
    _clear_fallback(layout, out)
    convert_int8(model, ctx.calib, out, cfg.pt2e_algorithm)
    build = {**build, "calibration": ctx.calibration}
    if compressed:
        from .runners import tflite_weight_sparsity

        build["sparsity_tflite_int8"] = tflite_weight_sparsity(out)["zero_share"]
    record = assess(ctx, out, parent=parent, compressed=compressed, build=build)
    if cfg.quant_fallback == "auto" and records.status(record)[0] == "gate" and any(
            g["name"] == "top-1 drop" and not g["passed"] for g in record["gates"]):
        repair(ctx, model, out, parent, build, compressed)
    return record


def repair(ctx, model, failed: Path, parent: Path, build: dict, compressed: bool) -> Path:
    """Quantize again keeping the worst layers in float, one more at a time up to max_float_layers, until the top-1
    drop on the validation split is within the gate; the result is gated on the test split like any file. The
    ranking is explain's (the noise each conv / fully-connected layer adds), measured on training images, and the
    stopping rule on validation images: the test split only judges. NNCF's accuracy-control loop does the same
    (rank once, revert in rank order, stop at max_drop)."""
    from .evaluate import assess, predict
    from .explain import WEIGHTED_OPS, explain
    from .explain import reference_for as float_sibling
    from .runners import TorchRunner, open_runner

    layout, cfg = ctx.layout, ctx.cfg
    ranked = explain(failed, float_sibling(ctx, layout.rel(failed)), ctx.calib[: cfg.explain_images])
    layers = ranked["layers"]
    order = sorted(range(len(layers)), key=lambda i: layers[i]["snr_added_db"])
    names = list(dict.fromkeys(layers[i]["layer"] for i in order if layers[i]["op"] in WEIGHTED_OPS
                               and layers[i]["module"]))[: cfg.max_float_layers]
    if not names:
        raise EdgeError(f"{failed.name}: no layer to keep in float (no torch module names in the file)")
    x, labels = ctx.val_set
    reference = float((predict(TorchRunner.from_model(model), x).argmax(1) == labels).mean())
    out, tried = fallback_path(failed), []
    for name in names:
        tried.append(name)
        convert_int8(model, ctx.calib, out, cfg.pt2e_algorithm, tuple(tried))
        drop = 100 * (reference - float((predict(open_runner(out), x).argmax(1) == labels).mean()))
        if drop <= cfg.max_int8_drop:
            break
    assess(ctx, out, parent=parent, compressed=compressed,
           build={**build, "method": f"{build['method']}, {len(tried)} layer(s) in float", "repairs":
                  layout.rel(failed), "float_layers": tried, "ranking": [layers[i]["layer"] for i in order[:10]],
                  "validation_drop": round(drop, 3)})
    return out


def litert_stage(ctx) -> None:
    from .evaluate import assess

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    model = model_from_checkpoint(load_checkpoint(ctx.require(layout.best, "train")))
    fp32 = convert_fp32(model, ctx.eval_set.x, layout.tflite("fp32_litert"))
    check = {"cross_check": cross_check(ctx, layout.tflite("fp32"), fp32)} if layout.tflite("fp32").is_file() else {}
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
