"""The convert stage: onnx/model.onnx -> tflite/{fp32,fp16,dynamic_range,int8}.tflite by onnx2tf
(pipeline.engine.onnx_to_tflite), each file evaluated on the test split against the ONNX model and gated
(pipeline.engine.evaluate.assess); an int8 file that fails its top-1 gate gets a float fallback when
quant_fallback=auto (pipeline.stages.fallback)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config.keys import CONVERT_KEYS
from ..core.names import VARIANTS, onnx2tf_files, rel
from ..engine.evaluate import assess
from ..engine.onnx_to_tflite import CALIBRATED, convert_tflite, requantize
from ..engine.runners import tflite_weight_sparsity
from ..engine.stage import Stage
from . import fallback


def _gated_int8(ctx, onnx_path: Path, int8: Path, saved_model: Path, build: dict, compressed: bool) -> None:
    """onnx2tf's int8 file evaluated and gated; with quant_fallback=auto a failed top-1 gate gets a repaired sibling,
    <int8>_fallback.tflite, its worst layers (and the convs only they read) in float (pipeline.stages.fallback)."""
    record = assess(ctx, int8, parent=onnx_path, compressed=compressed, build=build)
    if not fallback.wanted(ctx, record, int8, onnx_path):
        fallback.clear(ctx.layout, int8)
    else:
        def float_layers(layers: list[dict], out: Path) -> None:
            names = [t["tensor"] for lay in layers for t in [lay, *lay["sole_producers"]]]
            requantize(saved_model, out, ctx.calib_u8, ctx.data.norm, ctx.cfg.image_size, list(dict.fromkeys(names)))

        fallback.repair(ctx, int8, onnx_path, {**build, "method": f"{build['method']} -> TFLite converter, deny list"},
                        compressed, float_layers, lambda lay: lay["layer"])


def convert_gated(ctx, onnx_path: Path, builds: dict[str, dict], prefix: str = "", compressed: bool = False) -> None:
    """tflite/<prefix><variant>.tflite for each variant in `builds` (one onnx2tf run), each evaluated on the test
    split against `onnx_path` and gated, its record's build section from `builds`; the int8 file with its fallback."""
    layout = ctx.layout
    layout.tflite_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".savedmodel-", dir=layout.tflite_dir) as tmp:
        saved = Path(tmp) / "saved_model"
        paths = convert_tflite(onnx_path, layout.tflite_dir, ctx.calib_u8, ctx.data.norm, ctx.cfg.image_size,
                               tuple(builds), prefix=prefix, keep_saved_model=saved)
        for variant, path in paths.items():
            build = {**builds[variant], **({"calibration": ctx.calibration} if variant in CALIBRATED else {})}
            if variant != "int8":
                assess(ctx, path, parent=onnx_path, compressed=compressed, build=build)
                continue
            if compressed:
                build["sparsity_tflite_int8"] = tflite_weight_sparsity(path)["zero_share"]
            _gated_int8(ctx, onnx_path, path, saved, build, compressed)


def convert_stage(ctx) -> None:
    """onnx/model.onnx -> tflite/{fp32,fp16,dynamic_range,int8}.tflite, each evaluated on the test split against the
    ONNX model and gated."""
    ctx.require(ctx.layout.onnx, "export")
    convert_gated(ctx, ctx.layout.onnx, {v: {"method": f"onnx2tf {v}", "macs": ctx.dense_macs} for v in VARIANTS})


STAGE = Stage("convert", convert_stage, needs=("export",), keys=CONVERT_KEYS,
              inputs=lambda la, c: rel(la, la.onnx), outputs=lambda la, c: rel(la, *onnx2tf_files(la)),
              records=lambda la, c: rel(la, *onnx2tf_files(la)))
