"""The export stage: train/best.pt -> onnx/model.onnx (pipeline.engine.torch_to_onnx), gated on parity with torch."""

from __future__ import annotations

from ..config.keys import EVAL_KEYS
from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
from ..engine.contract import Stage
from ..engine.evaluate import assess
from ..engine.summary import count_macs
from ..engine.torch_to_onnx import export_onnx


def export_stage(ctx) -> None:
    """train/best.pt -> onnx/model.onnx, checked on 64 real test images before the file is written, then evaluated
    on the whole test split with its parity against torch recorded as its gate."""
    layout = ctx.layout
    ctx.require(layout.best, "train")
    import torch

    model = model_from_checkpoint(load_checkpoint(layout.best))  # loaded once: exported, then its MACs counted
    parity = export_onnx(layout.best, layout.onnx, ctx.examples, ctx.cfg.dynamic_batch, model=model)
    macs = count_macs(model, torch.from_numpy(ctx.examples[:1]))
    assess(
        ctx,
        layout.onnx,
        parent=layout.best,
        build={"method": "torch.onnx.export (opset 17)", "macs": macs, "batchnorm_nodes": parity["batchnorm_nodes"]},
    )


STAGE = Stage(
    "export",
    export_stage,
    "torch checkpoint -> ONNX, with onnxruntime parity gate",
    needs=("train",),
    keys=EVAL_KEYS | {"dynamic_batch"},
    inputs=lambda ctx: ctx.names(ctx.layout.best),
    outputs=lambda ctx: ctx.names(ctx.layout.onnx),
    records=lambda ctx: ctx.names(ctx.layout.onnx),
)
