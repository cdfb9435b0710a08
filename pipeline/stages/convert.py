"""The convert stage: onnx/model.onnx -> tflite/{fp32,fp16,dynamic_range,int8}.tflite by onnx2tf
(pipeline.engine.onnx_to_tflite), each file evaluated on the test split against the ONNX model and gated, the int8
file with its float fallback (pipeline.engine.gated)."""

from __future__ import annotations

from ..config.keys import GATED_KEYS
from ..core.names import VARIANTS, onnx2tf_files
from ..engine.contract import Stage
from ..engine.gated import convert_gated


def convert_stage(ctx) -> None:
    """onnx/model.onnx -> tflite/{fp32,fp16,dynamic_range,int8}.tflite, each evaluated on the test split against the
    ONNX model and gated."""
    ctx.require(ctx.layout.onnx, "export")
    convert_gated(ctx, ctx.layout.onnx, {v: {"method": f"onnx2tf {v}", "macs": ctx.dense_macs} for v in VARIANTS})


STAGE = Stage(
    "convert",
    convert_stage,
    "ONNX -> TFLite fp32/fp16/dynamic-range/int8 with onnx2tf, gated",
    needs=("export",),
    keys=GATED_KEYS,
    inputs=lambda ctx: ctx.names(ctx.layout.onnx),
    outputs=lambda ctx: ctx.names(*onnx2tf_files(ctx.layout)),
    records=lambda ctx: ctx.names(*onnx2tf_files(ctx.layout)),
)
