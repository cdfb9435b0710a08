"""A model made, then gated: the shared steps of the stages that build int8 files. Each file is evaluated on the test
split and gated (pipeline.engine.evaluate.assess); an int8 file that fails its top-1 gate gets a float fallback when
quant_fallback=auto (pipeline.engine.fallback).

- `convert_gated`: ONNX -> onnx2tf's TFLite variants (convert, and each compressed model).
- `quantize_gated`: a torch model -> NNCF PT2E int8 through litert-torch (litert, and each compressed model).
- `deliver`: a compressed checkpoint -> its ONNX, its onnx2tf fp32 and int8 files, and its PT2E int8 file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import fallback
from .checkpoint import load_checkpoint, model_from_checkpoint
from .evaluate import assess
from .onnx_to_tflite import CALIBRATED, convert_tflite, requantize
from .runners import tflite_weight_sparsity
from .torch_to_onnx import export_onnx
from .torch_to_tflite import convert_int8


def _gated_int8(ctx, onnx_path: Path, int8: Path, saved_model: Path, build: dict, compressed: bool) -> None:
    """onnx2tf's int8 file evaluated and gated; with quant_fallback=auto a failed top-1 gate gets a repaired sibling,
    <int8>_fallback.tflite, its worst layers (and the convs only they read) in float."""
    record = assess(ctx, int8, parent=onnx_path, compressed=compressed, build=build)
    if not fallback.wanted(ctx, record, int8, onnx_path):
        fallback.clear(ctx.layout, int8)
    else:

        def float_layers(layers: list[dict], out: Path) -> None:
            names = [t["tensor"] for lay in layers for t in [lay, *lay["sole_producers"]]]
            requantize(saved_model, out, ctx.calib_u8, ctx.data.norm, ctx.cfg.image_size, list(dict.fromkeys(names)))

        fallback.repair(
            ctx,
            int8,
            onnx_path,
            {**build, "method": f"{build['method']} -> TFLite converter, deny list"},
            compressed,
            float_layers,
            lambda lay: lay["layer"],
        )


def convert_gated(ctx, onnx_path: Path, builds: dict[str, dict], prefix: str = "", compressed: bool = False) -> None:
    """tflite/<prefix><variant>.tflite for each variant in `builds` (one onnx2tf run), each evaluated on the test
    split against `onnx_path` and gated, its record's build section from `builds`; the int8 file with its fallback."""
    layout = ctx.layout
    layout.tflite_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".savedmodel-", dir=layout.tflite_dir) as tmp:
        saved = Path(tmp) / "saved_model"
        paths = convert_tflite(
            onnx_path,
            layout.tflite_dir,
            ctx.calib_u8,
            ctx.data.norm,
            ctx.cfg.image_size,
            tuple(builds),
            prefix=prefix,
            keep_saved_model=saved,
        )
        for variant, path in paths.items():
            build = {**builds[variant], **({"calibration": ctx.calibration} if variant in CALIBRATED else {})}
            if variant != "int8":
                assess(ctx, path, parent=onnx_path, compressed=compressed, build=build)
                continue
            if compressed:
                build["sparsity_tflite_int8"] = tflite_weight_sparsity(path)["zero_share"]
            _gated_int8(ctx, onnx_path, path, saved, build, compressed)


def quantize_gated(ctx, model, out: Path, parent: Path, build: dict, compressed: bool = False) -> dict:
    """NNCF PT2E int8 of `model` -> `out`, evaluated and gated; with quant_fallback=auto a file that fails its top-1
    gate gets a repaired sibling, <out>_fallback.tflite, with its worst modules in float. Returns the int8 file's
    record."""
    layout, cfg = ctx.layout, ctx.cfg
    convert_int8(model, ctx.calib, out, cfg.pt2e_algorithm)
    build = {**build, "calibration": ctx.calibration}
    if compressed:
        build["sparsity_tflite_int8"] = tflite_weight_sparsity(out)["zero_share"]
    record = assess(ctx, out, parent=parent, compressed=compressed, build=build)
    if not fallback.wanted(ctx, record, out, parent):
        fallback.clear(layout, out)
    else:
        fallback.repair(
            ctx,
            out,
            parent,
            build,
            compressed,
            lambda layers, path: convert_int8(
                model, ctx.calib, path, cfg.pt2e_algorithm, tuple(lay["module"] for lay in layers if lay["module"])
            ),
            lambda lay: lay["module"] or lay["layer"],
        )
    return record


def deliver(ctx, checkpoint: Path, name: str, build: dict) -> None:
    """A compressed checkpoint -> quant/<name>.onnx (parity-checked) -> tflite/<name>_{fp32,int8}.tflite (onnx2tf),
    and with run_litert tflite/<name>_nncf_int8.tflite (NNCF PT2E + litert-torch), each evaluated and gated against
    the dense fp32 model."""
    onnx_path = ctx.layout.quant(f"{name}.onnx")
    export_onnx(checkpoint, onnx_path, ctx.examples)
    convert_gated(ctx, onnx_path, {"fp32": build, "int8": build}, prefix=f"{name}_", compressed=True)
    if ctx.cfg.run_litert:
        model = model_from_checkpoint(load_checkpoint(checkpoint))
        quantize_gated(
            ctx,
            model,
            ctx.layout.tflite(f"{name}_nncf_int8"),
            checkpoint,
            compressed=True,
            build={**build, "method": f"{build['method']} -> nncf pt2e ({ctx.cfg.pt2e_algorithm}) + litert-torch"},
        )
