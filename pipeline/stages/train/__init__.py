"""The train stage: any model in models/ on any data source of pipeline.data; GPU-first (AMP, channels_last, optional
torch.compile, DDP under torchrun), correct on a CPU, resumable. loaders (data on the device), runtime (device,
DDP, AMP, the CPU centre-tap conv), steps (an epoch, an evaluation, EMA, distillation), loop (`train`, checkpoints,
resume), finetune (the compression stages' short runs)."""

from pathlib import Path

from ...config.keys import TRAIN_KEYS
from ...core.names import rel
from ...engine.stage import Stage
from .finetune import fine_tune
from .loop import check_batch, check_learned, train, train_stage
from .runtime import CenterTapConv2d, center_tap_convs
from .steps import distillation_loss

__all__ = ["STAGE", "train", "train_stage", "fine_tune", "check_batch", "check_learned", "distillation_loss",
           "CenterTapConv2d", "center_tap_convs"]


def _weights_file(layout, cfg) -> list[str]:
    return [str(Path(cfg.weights).resolve())] if cfg.weights and Path(cfg.weights).is_file() else []


STAGE = Stage("train", train_stage, needs=(), keys=TRAIN_KEYS, inputs=_weights_file,
              outputs=lambda la, c: rel(la, la.best, la.last, la.metrics), sections=())
