"""The prune_magnitude stage: NNCF global magnitude pruning at prune_ratio (sparsity: a smaller download, not a faster
model), fine-tuned under the pruning schedule, to fp32 and int8 TFLite (pipeline.engine.gated.deliver)."""

from __future__ import annotations

import torch

from ..config.keys import FINETUNE_KEYS, GATED_KEYS
from ..core.names import derived_files, magnitude_name
from ..engine.checkpoint import derived_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..engine.contract import Stage
from ..engine.gated import deliver
from ..engine.summary import count_macs
from .train import fine_tune


def prune_magnitude_stage(ctx) -> None:
    """NNCF global magnitude pruning at prune_ratio (sparsity: a smaller download, not a faster model), fine-tuned
    under a schedule (or batch-norm adaptation only), to fp32 and int8 TFLite."""
    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    example = torch.from_numpy(ctx.examples[:1])
    pruned = nncf_ops.magnitude_prune(model_from_checkpoint(parent), cfg.prune_ratio, example)
    if cfg.prune_epochs > 0:
        fine_tune(
            pruned,
            cfg,
            ctx.data,
            cfg.prune_epochs,
            cfg.prune_lr,
            before_epoch=nncf_ops.pruning_schedule(pruned, cfg.prune_ratio, cfg.prune_epochs),
        )
    else:
        nncf_ops.adapt_batch_norm(pruned, ctx.calib)
    plain, stats = nncf_ops.strip_pruning(pruned.cpu().eval(), model_from_checkpoint(parent))
    build = {
        "method": "nncf_magnitude",
        "ratio": cfg.prune_ratio,
        "epochs": cfg.prune_epochs,
        **stats,
        "macs": count_macs(plain, example),
    }
    name = magnitude_name(cfg)
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, compression=build), layout.quant(f"{name}.pt"))
    deliver(ctx, ckpt, name, build)


STAGE = Stage(
    "prune_magnitude",
    prune_magnitude_stage,
    "NNCF magnitude pruning at prune_ratio, fine-tuned, to fp32 and int8 TFLite",
    needs=("export",),
    switch="run_magnitude",
    keys=GATED_KEYS | FINETUNE_KEYS | {"prune_ratio", "prune_epochs", "prune_lr", "pt2e_algorithm", "run_litert"},
    inputs=lambda ctx: ctx.names(ctx.layout.onnx, ctx.layout.best),
    outputs=lambda ctx: ctx.names(*derived_files(ctx.layout, magnitude_name(ctx.cfg), ctx.cfg)),
    records=lambda ctx: ctx.names(*derived_files(ctx.layout, magnitude_name(ctx.cfg), ctx.cfg)[2:]),
)
