"""fine_tune: a short run of the training loop on an already trained model, for the compression stages."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...config import Config
from ...core import console

try:
    from tqdm import tqdm
except ImportError:  # stock-PyTorch machines: plain per-epoch lines instead of a bar
    tqdm = None


from .loaders import _subset, make_loader
from .runtime import center_tap_convs, setup_runtime
from .steps import evaluate_model, make_optimizer, make_scheduler, train_epoch


def fine_tune(
    model: nn.Module,
    cfg: Config,
    data,
    epochs: int,
    lr: float,
    before_epoch=None,
    teacher: nn.Module | None = None,
    plain: bool = False,
) -> list[dict]:
    """A short run of the same loop on an already trained model (pruned, quantization-aware): cosine from `lr`,
    on `cfg.finetune_subset` training images per epoch, drawn anew each epoch from the whole split (0: all); no
    checkpoints (the calling stage saves the result). `before_epoch(epoch)` runs first each epoch, e.g. a
    pruning-ratio scheduler. With `teacher` (the dense fp32 model) and kd_alpha > 0 the student also learns the
    teacher's soft predictions. `plain`: a plain torch model (channel-pruned), which trains as in `train` (bf16
    autocast and channels_last where the CPU has native bf16); NNCF-wrapped ones stay fp32 and NCHW."""
    run = dataclasses.replace(cfg, epochs=epochs, lr=lr, schedule="cosine", warmup_epochs=0.0)
    rt = setup_runtime(run)
    if not plain:
        rt.channels_last = False  # NNCF-wrapped models trace their own layout
        if rt.device.type == "cpu":
            rt.amp_dtype = None  # fake-quantize and pruning masks stay in fp32 on a CPU
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    if teacher is not None and cfg.kd_alpha > 0:
        teacher = teacher.to(
            rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format
        ).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        teacher = None
    split = _subset(data.train, cfg.train_subset)
    n = cfg.finetune_subset or len(split)  # more than the split: repeated passes, so a small set is not starved
    loader = make_loader(split, min(cfg.batch_size, n), True, cfg.seed, 1, 0, cfg.workers, False, samples=n)
    val_loader = make_loader(_subset(data.val, cfg.eval_subset), 512, False, cfg.seed, 1, 0, cfg.workers, False)
    opt = make_optimizer(model, run)
    sched = make_scheduler(opt, run, len(loader))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    history = []
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        with center_tap_convs(model, teacher, enabled=rt.device.type == "cpu"):  # not around the pruner's step
            stats = train_epoch(
                model,
                loader,
                opt,
                sched,
                scaler,
                rt,
                run,
                data.norm,
                epoch,
                data.name != "imagefolder",
                "none (fine-tuning)",
                teacher,
            )
            val = evaluate_model(model, val_loader, rt, run, data.norm)
        history.append(
            {"epoch": epoch + 1, "steps": len(loader), **stats, "val_loss": val["loss"], "val_acc": val["acc"]}
        )
        print(
            f"  fine-tune {epoch + 1}/{epochs}  loss {stats['train_loss']:.4f}  val top-1 {100 * val['acc']:.2f}%",
            file=console.err(),
        )
    if rt.channels_last:
        model.to(memory_format=torch.contiguous_format)  # exported and saved as defined
    return history
