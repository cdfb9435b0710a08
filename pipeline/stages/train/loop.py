"""Train any model in models/ on any data source of pipeline.data: GPU-first (AMP, channels_last, optional
torch.compile, DDP under torchrun), correct on a CPU, resumable.

Imports only torch, numpy and the project's data and model code, so it runs on a machine with stock PyTorch alone.
Every epoch reseeds from (seed, epoch), so a resumed run replays exactly what the interrupted one would have done."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from models import build_model

from ...config import RESUMABLE_CHANGES, TRAIN_KEYS, Config, save_config
from ...core import console
from ...core.artifacts import atomic_write_json
from ...core.errors import EdgeError
from ...core.layout import Layout
from ...data import load_data_for
from ...engine.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_weights,
    model_from_checkpoint,
    resolve_weights,
    save_checkpoint,
)

try:
    from tqdm import tqdm
except ImportError:  # stock-PyTorch machines: plain per-epoch lines instead of a bar
    tqdm = None


from .loaders import _subset, make_loader
from .runtime import Runtime, center_tap_convs, setup_runtime
from .steps import ema_update, evaluate_model, make_optimizer, make_scheduler, train_epoch

# Diverged: the last epoch's training loss is above twice a uniform guess's (ln K) and validation is at chance (at
# most 1.5 / K). A short run that learned little sits near ln K, never far above it.
CHANCE_MARGIN = 1.5


def check_learned(last_loss: float, best_val_acc: float, num_classes: int, lr: float, kept: Path) -> None:
    """A run that learned nothing is an error: the last epoch's training loss above twice a uniform guess's (ln K)
    and the best validation top-1 at chance (at most CHANCE_MARGIN / K)."""
    k = num_classes
    if best_val_acc <= CHANCE_MARGIN / k and last_loss > 2 * math.log(k):
        raise EdgeError(
            f"training diverged: last epoch's train loss {last_loss:.4g} (a uniform guess scores "
            f"{math.log(k):.2f}) and best validation top-1 {100 * best_val_acc:.2f}% is chance level "
            f"(1/{k}); lower lr={lr}; checkpoints kept in {kept}"
        )


def check_batch(batch_size: int, world: int, train_images: int) -> int:
    """The per-process batch under DDP; an error where the global batch does not divide across the processes or the
    data has fewer images than one global batch."""
    if batch_size % world:
        raise EdgeError(
            f"batch_size={batch_size} does not divide evenly across {world} processes; use a "
            f"multiple of {world} (each process trains on batch_size / {world} images a step)"
        )
    per_rank_batch = batch_size // world
    if train_images < batch_size:
        raise EdgeError(
            f"{world} processes x batch {per_rank_batch} need at least {batch_size} "
            f"training images; have {train_images}: lower --nproc_per_node or batch_size"
        )
    return per_rank_batch


def with_step_floor(cfg: Config, images: int, steps_per_epoch: int, speak: bool = True) -> Config:
    """cfg with enough epochs for min_steps optimizer steps: a budget in epochs starves a small data set (3,600
    images at batch 256 are 14 steps an epoch: 4 epochs, 56 steps, left a model at 68.75%)."""
    floor = math.ceil(cfg.min_steps / max(steps_per_epoch, 1)) if cfg.min_steps else 0
    if floor <= cfg.epochs:
        return cfg
    if speak:
        print(
            f"train: {images:,} training images are {steps_per_epoch} steps an epoch: {floor} epochs instead of "
            f"{cfg.epochs}, for min_steps={cfg.min_steps}",
            file=console.err(),
        )
    return dataclasses.replace(cfg, epochs=floor)


def train_stage(ctx) -> None:
    """The train stage: the run's data, loaded once, into train()."""
    train(ctx.cfg, ctx.data)


def train(cfg: Config, data=None) -> Path:
    """Train cfg.model; returns <run>/train/ holding best.pt, last.pt and metrics.json."""
    rt = setup_runtime(cfg)
    layout = Layout(cfg.run_dir)
    data = data if data is not None else load_data_for(cfg)
    train_split = _subset(data.train, cfg.train_subset)
    val_split = _subset(data.val, cfg.eval_subset)  # what it chooses on; the test split only scores the end (finish)
    if cfg.epochs == 0:
        return import_weights(cfg, rt, data, layout)
    per_rank_batch = check_batch(cfg.batch_size, rt.world, len(train_split))
    pin = rt.device.type == "cuda"
    train_loader = make_loader(train_split, per_rank_batch, True, cfg.seed, rt.world, rt.rank, cfg.workers, pin)
    saved, cfg = cfg, with_step_floor(cfg, len(train_split), len(train_loader), rt.main)
    val_loader = make_loader(val_split, 512, False, cfg.seed, 1, 0, cfg.workers, pin)
    small_images = data.name != "imagefolder"

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every re-run
    model = build_model(cfg.model, **cfg.model_options(data.num_classes, data.in_channels))
    if cfg.weights and not cfg.resume:
        notes = load_weights(model, resolve_weights(cfg.weights, cfg.model))
        if rt.main:
            print("\n".join(notes), file=console.err())
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, len(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp_dtype == torch.float16)
    # The average (weights and BN statistics) is what is validated, checkpointed as "model" and exported.
    ema = AveragedModel(model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True) if cfg.ema else None
    kept = ema.module if ema is not None else model
    state = {"epoch": 0, "best_acc": -1.0, "history": []}
    if cfg.resume:
        state = resume_from(layout.last, cfg, model, opt, sched, scaler, ema)
    if rt.main:
        layout.train_dir.mkdir(parents=True, exist_ok=True)
        save_config(saved, layout.config)  # as asked: the floor is re-derived from the data each time
    net: nn.Module = model
    if rt.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if pin else None)
    if cfg.compile:
        net = torch.compile(net)

    run_start = time.perf_counter()
    with center_tap_convs(model, ema.module if ema is not None else None, enabled=rt.device.type == "cpu"):
        for epoch in range(state["epoch"], cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout etc.: the same stream on resume
            last_good = str(layout.last) if state["epoch"] else "none (first epoch)"
            stats = train_epoch(
                net, train_loader, opt, sched, scaler, rt, cfg, data.norm, epoch, small_images, last_good, ema=ema
            )
            if rt.main:
                val = evaluate_model(kept, val_loader, rt, cfg, data.norm)
                row = {
                    "epoch": epoch + 1,
                    **stats,
                    "val_loss": val["loss"],
                    "val_acc": val["acc"],
                    "lr": opt.param_groups[0]["lr"],
                    "wall_s": time.perf_counter() - run_start,
                }
                state["history"].append(row)
                state["epoch"] = epoch + 1
                improved = val["acc"] > state["best_acc"]
                state["best_acc"] = max(state["best_acc"], val["acc"])
                raw = {"train_model": _cpu_state(model), "ema_steps": ema.n_averaged.item()} if ema is not None else {}
                ckpt = _checkpoint(
                    kept,
                    state,
                    cfg,
                    data,
                    optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(),
                    scaler=scaler.state_dict(),
                    **raw,
                    rng={
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    },
                )
                save_checkpoint(ckpt, layout.last)
                if improved:
                    save_checkpoint(ckpt, layout.best)
                atomic_write_json(layout.metrics, {"epochs": state["history"], "best_val_acc": state["best_acc"]})
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['train_loss']:.4f}  acc {stats['train_acc']:.4f}  "
                    f"val top-1 {100 * val['acc']:.2f}%  {stats['images_per_s']:.0f} img/s  {row['wall_s']:.0f} s",
                    file=console.err(),
                )
            if rt.world > 1:
                dist.barrier()

    if rt.main:
        finish(layout, cfg, rt, data, time.perf_counter() - run_start, per_rank_batch)
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return layout.train_dir


def import_weights(cfg: Config, rt: Runtime, data, layout: Layout) -> Path:
    """epochs=0: the model is the given weights (e.g. torchvision's ImageNet ResNet-18), scored on the test split and
    written as best.pt / last.pt so every later stage works as after training."""
    if not cfg.weights:
        raise EdgeError(
            "epochs=0 skips training and needs weights=PATH (a torchvision state_dict) or weights=torchvision"
        )
    model = build_model(cfg.model, **cfg.model_options(data.num_classes, data.in_channels))
    if rt.main:
        print("\n".join(load_weights(model, resolve_weights(cfg.weights, cfg.model))), file=console.err())
        layout.train_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, layout.config)
        ckpt = _checkpoint(model, {"epoch": 0, "best_acc": -1.0, "history": []}, cfg, data, weights=str(cfg.weights))
        save_checkpoint(ckpt, layout.last)
        save_checkpoint(ckpt, layout.best)
        atomic_write_json(layout.metrics, {"epochs": [], "best_val_acc": None, "weights": str(cfg.weights)})
        finish(layout, cfg, rt, data, 0.0)
    return layout.train_dir


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _checkpoint(model, state: dict, cfg: Config, data, **extra) -> dict:
    """A resnet-edge checkpoint; `extra`: the optimizer, scheduler, scaler and RNG states a resume needs (training),
    or a note of where the weights came from (epochs=0)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": _cpu_state(model),
        "model_name": cfg.model,
        "model_options": cfg.model_options(data.num_classes, data.in_channels),
        "epoch": state["epoch"],
        "best_acc": state["best_acc"],
        "history": state["history"],
        "config": cfg.to_dict(),
        "data": data.describe(),
        **extra,
    }


def resume_from(path: Path, cfg: Config, model, opt, sched, scaler, ema=None) -> dict:
    if not path.is_file():
        raise EdgeError(f"{path}: no checkpoint to resume; run train without resume=true first")
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    changed = sorted(k for k in TRAIN_KEYS - RESUMABLE_CHANGES if saved.get(k) != getattr(cfg, k))
    if changed:
        was = ", ".join(f"{k}={saved.get(k)}" for k in changed)
        raise EdgeError(
            f"{path}: resume with a different {', '.join(changed)} ({was} in the checkpoint); "
            f"use the same values or a new name="
        )
    if ema is not None:
        model.load_state_dict(ckpt["train_model"])
        ema.module.load_state_dict(ckpt["model"])
        ema.n_averaged.fill_(ckpt["ema_steps"])
    else:
        model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    print(f"resuming {path} after epoch {ckpt['epoch']}", file=console.err())
    return {"epoch": ckpt["epoch"], "best_acc": ckpt["best_acc"], "history": ckpt["history"]}


def finish(layout: Layout, cfg: Config, rt: Runtime, data, wall: float, per_rank_batch: int | None = None) -> None:
    """Score best.pt on the test split (read here only: the epochs were chosen on validation images) and close
    metrics.json; a model that learned nothing is an error."""
    test_split = _subset(data.test, cfg.eval_subset)
    best = load_checkpoint(layout.best)
    model = model_from_checkpoint(best).to(rt.device)
    test_loader = make_loader(test_split, 512, False, cfg.seed, 1, 0, cfg.workers, rt.device.type == "cuda")
    test = evaluate_model(model, test_loader, rt, cfg, data.norm)
    metrics = json.loads((layout.metrics).read_text())
    metrics |= {
        "best_epoch": best["epoch"],
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "test_images": len(test_split),
        "device": str(rt.device),
        "world_size": rt.world,
        "amp": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else "fp32",
        "channels_last": rt.channels_last,
        "compile": cfg.compile,
        "train_wall_s": wall,
        "preset": cfg.preset,
        "batch_size": cfg.batch_size,
        "per_rank_batch": per_rank_batch,
    }
    atomic_write_json(layout.metrics, metrics)
    last_loss = metrics["epochs"][-1]["train_loss"] if metrics["epochs"] else 0.0
    if best["epoch"] > 0:
        check_learned(last_loss, best["best_acc"], data.num_classes, cfg.lr, layout.train_dir)
    source = (
        f"weights {cfg.weights} as given"
        if best["epoch"] == 0
        else f"best epoch {best['epoch']}, val top-1 {100 * best['best_acc']:.2f}%"
    )
    print(
        f"trained: {source}, test top-1 {100 * test['acc']:.2f}% "
        f"({len(test_split)} images), {wall:.0f} s -> {layout.train_dir}",
        file=console.err(),
    )
