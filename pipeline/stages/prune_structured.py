"""The prune_structured stage: torch-pruning channel pruning at structured_ratio (fewer MACs: a faster model),
fine-tuned with distillation from the dense model, to fp32 and int8 TFLite (pipeline.engine.gated.deliver)."""

from __future__ import annotations

import torch

from ..config.keys import FINETUNE_KEYS, GATED_KEYS
from ..core.names import derived_files, structured_name
from ..engine.checkpoint import derived_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..engine.contract import Stage
from ..engine.gated import deliver
from ..engine.summary import count_macs
from .train import fine_tune


def prune_structured_stage(ctx) -> None:
    """torch-pruning channel pruning at structured_ratio (fewer MACs: a faster model), fine-tuned, to fp32 and int8
    TFLite."""
    from quantization.structured import prune_channels

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    model = model_from_checkpoint(parent)
    example = torch.from_numpy(ctx.examples[:1])
    macs_before = count_macs(model, example)
    teacher = model_from_checkpoint(parent)
    steps = cfg.structured_steps
    epochs = [cfg.structured_epochs // steps + (i >= steps - cfg.structured_epochs % steps) for i in range(steps)]
    # one-shot: prune, then fine-tune all epochs; iterative: each step's share of them after it (same compute)
    stats = prune_channels(
        model,
        cfg.structured_ratio,
        example,
        cfg.structured_importance,
        cfg.structured_round_to,
        steps,
        lambda step: (
            fine_tune(model, cfg, ctx.data, epochs[step], cfg.structured_lr, teacher=teacher, plain=True)
            if epochs[step]
            else None
        ),
    )
    plain = model.cpu().eval()
    macs = count_macs(plain, example)
    build = {
        "method": "torch_pruning",
        "ratio": cfg.structured_ratio,
        "importance": cfg.structured_importance,
        "epochs": cfg.structured_epochs,
        "round_to": cfg.structured_round_to,
        "steps": steps,
        "kd": {"alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature},
        **stats,
        "macs_before": macs_before,
        "macs": macs,
        "macs_cut": 1 - macs / macs_before,
    }
    name = structured_name(cfg)
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, compression=build), layout.quant(f"{name}.pt"))
    deliver(ctx, ckpt, name, build)


STAGE = Stage(
    "prune_structured",
    prune_structured_stage,
    "channel pruning (torch-pruning) at structured_ratio, fine-tuned with distillation, to fp32 and int8 TFLite",
    needs=("export",),
    switch="run_structured",
    keys=GATED_KEYS
    | FINETUNE_KEYS
    | {
        "structured_ratio",
        "structured_importance",
        "structured_round_to",
        "structured_steps",
        "structured_epochs",
        "structured_lr",
        "pt2e_algorithm",
        "run_litert",
    },
    inputs=lambda ctx: ctx.names(ctx.layout.onnx, ctx.layout.best),
    outputs=lambda ctx: ctx.names(*derived_files(ctx.layout, structured_name(ctx.cfg), ctx.cfg)),
    records=lambda ctx: ctx.names(*derived_files(ctx.layout, structured_name(ctx.cfg), ctx.cfg)[2:]),
)
