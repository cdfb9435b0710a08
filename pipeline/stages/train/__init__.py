"""The train stage: any model in models/ on any data source of pipeline.data; GPU-first (AMP, channels_last, optional
torch.compile, DDP under torchrun), correct on a CPU, resumable. loaders (data on the device), runtime (device,
DDP, AMP, the CPU centre-tap conv), steps (an epoch, an evaluation, EMA, distillation), loop (`train`, checkpoints,
resume), finetune (the compression stages' short runs)."""

from pathlib import Path

from ...config.keys import TRAIN_KEYS
from ...engine.contract import Stage
from .finetune import fine_tune
from .loop import check_batch, check_learned, train, train_stage
from .runtime import CenterTapConv2d, center_tap_convs
from .steps import distillation_loss

__all__ = [
    "STAGE",
    "train",
    "train_stage",
    "fine_tune",
    "check_batch",
    "check_learned",
    "distillation_loss",
    "CenterTapConv2d",
    "center_tap_convs",
]


def _weights_file(ctx) -> list[str]:
    weights = ctx.cfg.weights
    return [str(Path(weights).resolve())] if weights and Path(weights).is_file() else []


STAGE = Stage(
    "train",
    train_stage,
    "train a model (GPU: AMP, channels_last; torchrun for DDP); resumable",
    needs=(),
    keys=TRAIN_KEYS,
    inputs=_weights_file,
    outputs=lambda ctx: ctx.names(ctx.layout.best, ctx.layout.last, ctx.layout.metrics),
    sections=(),
    resumable=lambda ctx: ctx.layout.last.is_file(),
)  # an interrupted training continues from last.pt
