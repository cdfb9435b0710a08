"""Train any model in models/ on any data source of pipeline.data: GPU-first (AMP, channels_last, optional
torch.compile, DDP under torchrun), correct on a CPU, resumable.

Imports only torch, numpy and the project's data and model code, so it runs on a machine with stock PyTorch alone.
Every epoch reseeds from (seed, epoch), so a resumed run replays exactly what the interrupted one would have done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from models import build_model

from ..core import console
from ..core.artifacts import atomic_write_json
from ..engine.checkpoint import (CHECKPOINT_FORMAT, load_checkpoint, load_weights, model_from_checkpoint, resolve_weights,
                         save_checkpoint)
from ..config import RESUMABLE_CHANGES, TRAIN_KEYS, Config, save_config
from ..data import ImageFiles, ImageSet, Normalization, load_data_for, normalize, to_input
from ..core.errors import EdgeError
from ..core.layout import Layout

try:
    from tqdm import tqdm
except ImportError:  # stock-PyTorch machines: plain per-epoch lines instead of a bar
    tqdm = None


# Diverged: the last epoch's training loss is above twice a uniform guess's (ln K) and validation is at chance (at
# most 1.5 / K). A short run that learned little sits near ln K, never far above it.
CHANCE_MARGIN = 1.5

# --- data on the device --------------------------------------------------------------------------------------------

class Split(Dataset):
    """uint8 NHWC batches of one split; in-memory arrays are sliced a batch at a time (no per-image Python)."""

    def __init__(self, split: ImageSet) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]):
        images = self.split.images[indices]
        return torch.from_numpy(images.copy()), torch.from_numpy(self.split.labels[indices])


def _keep(batch):
    return batch


def make_loader(split: ImageSet, batch_size: int, shuffle: bool, seed: int, world: int, rank: int, workers: int,
                pin: bool, samples: int = 0) -> DataLoader:
    """samples > 0 (shuffled, one process): an epoch is that many images drawn anew from the whole split each epoch."""
    dataset = Split(split)
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
    elif shuffle:
        sampler = RandomSampler(dataset, num_samples=min(samples, len(dataset)) or None,
                                generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    files = isinstance(split.images, ImageFiles)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=shuffle, collate_fn=_keep,
                      num_workers=workers if files else 0, pin_memory=pin, persistent_workers=files and workers > 0)


def augment(x: torch.Tensor, small_images: bool, generator: torch.Generator, erasing: float = 0.0) -> torch.Tensor:
    """One affine resample per image on the device. Small images: pad 4 px with zeros, random crop, horizontal flip.
    Others: random resized crop (scale 0.25-1, aspect 3/4-4/3) and flip. Then, with probability `erasing`, one
    rectangle (2-25% of the area, aspect 1/3-3) set to zero (Zhong et al.). x is float N,C,H,W in 0..1."""
    n, _, h, w = x.shape
    rand = torch.rand(n, 9, generator=generator).to(x.device)
    flip = torch.where(rand[:, 0] < 0.5, -1.0, 1.0).to(x.device)
    if small_images:
        shifts = (torch.randint(-4, 5, (n, 2), generator=generator).to(x.device).float()
                  * 2 / torch.tensor([w, h], device=x.device))
        sx = sy = torch.ones(n, device=x.device)
        mode = "nearest"  # whole-pixel shifts: exactly pad-and-crop
    else:
        area = 0.25 + 0.75 * rand[:, 1]
        aspect = torch.exp(math.log(3 / 4) + rand[:, 2] * math.log(16 / 9))
        sx, sy = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
        shifts = torch.stack([(1 - sx), (1 - sy)], 1) * (rand[:, 2:4] * 2 - 1)
        mode = "bilinear"
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, :, 2] = shifts
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if erasing > 0:
        area = (0.02 + 0.23 * rand[:, 4]) * h * w
        aspect = torch.exp(math.log(1 / 3) + rand[:, 5] * math.log(9))
        eh, ew = (area * aspect).sqrt().clamp(max=h), (area / aspect).sqrt().clamp(max=w)
        top, left = rand[:, 6] * (h - eh), rand[:, 7] * (w - ew)
        rows = torch.arange(h, device=x.device)[None, :, None]
        cols = torch.arange(w, device=x.device)[None, None, :]
        box = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None]) & (cols >= left[:, None, None])
               & (cols < (left + ew)[:, None, None]) & (rand[:, 8] < erasing)[:, None, None])
        x = x.masked_fill(box[:, None], 0.0)
    return x


def to_device_input(images: torch.Tensor, norm: Normalization, image_size: int, device: torch.device,
                    channels_last: bool, augment_with: torch.Generator | None = None,
                    small_images: bool = True, erasing: float = 0.0) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if augment_with is None:
        x = to_input(images, norm, image_size)
    else:
        x = normalize(augment(images.permute(0, 3, 1, 2).float().div_(255), small_images, augment_with, erasing), norm,
                      image_size)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# --- the run -------------------------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: Config) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise EdgeError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    amp = None
    if want_cuda and cfg.amp:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif cfg.amp and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        amp = torch.bfloat16  # oneDNN's native bf16 convolutions; emulated bf16 would be slower than fp32
    if want_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # channels_last: with AMP, and on a CPU in fp32 too (ResNet-18 at 32 px on an AVX2 EPYC: 344 vs 263 images/s)
    return Runtime(device, rank, world, amp, cfg.channels_last and (amp is not None or device.type == "cpu"))


class CenterTapConv2d(nn.Conv2d):
    """A Conv2d whose k x k kernel, padded by k // 2, meets a 1 x 1 map: only the centre tap sees data (the others
    multiply the zero padding), so the same output and gradients come from a matrix multiply. On an AVX2 CPU oneDNN's
    backward for ResNet's 512-channel 3x3 convs at 1x1 (layer 4 at 32 px) took 280 ms a batch of 256 against 11 ms."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super()._conv_forward(x, weight, bias)
        c = self.kernel_size[0] // 2
        return F.linear(x.flatten(1), weight[:, :, c, c], bias)[:, :, None, None]


@contextlib.contextmanager
def center_tap_convs(*models: nn.Module | None, enabled: bool = True):
    """While inside, every Conv2d of `models` that CenterTapConv2d computes exactly (odd square kernel, padding k // 2
    with zeros, no dilation or groups) is one; on the way out they are plain Conv2d again, so what is exported after
    a fine-tune is the model as defined. The state_dict never changes. Yields how many were swapped."""
    swapped = []
    for model in (m for m in models if m is not None and enabled):
        for m in model.modules():
            k = m.kernel_size[0] if type(m) is nn.Conv2d else 0  # NNCF's wrapped convs are left as they are
            if k % 2 and m.kernel_size == (k, k) and m.padding == (k // 2, k // 2) and m.dilation == (1, 1) \
                    and m.groups == 1 and m.padding_mode == "zeros":
                m.__class__ = CenterTapConv2d
                swapped.append(m)
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            m.__class__ = nn.Conv2d


def ema_update(decay: float):
    """AveragedModel's update with TensorFlow's ExponentialMovingAverage warm-up: decay min(decay, (1 + n) / (10 + n))
    at step n, so the average forgets the random initial weights within a short run too (a 150-step test run averages
    over its last ~15 steps; 10 epochs of the demo reach 0.9958)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + n.item()) / (10 + n.item()))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # BN's batch counters
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]  # BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach: one multi-tensor update instead of a loop over 62 tensors, the default on CUDA only; on a 2-core CPU
    # 6-10% more images a second in a bare step loop, 4% in the demo's training (1,025 -> 1,067), same losses
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
    raise EdgeError(f"optimizer={cfg.optimizer}: choose sgd or adamw")


def make_scheduler(opt: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if cfg.schedule == "cosine":
        warm = max(1, round(cfg.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    raise EdgeError(f"schedule={cfg.schedule}: choose onecycle or cosine")


def _autocast(rt: Runtime):
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) CE(labels) + alpha T^2 KL(teacher/T || student/T) (Hinton et al.): T^2 keeps the soft term's
    gradient on the scale of the hard one's as T grows."""
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    soft = F.kl_div(F.log_softmax(logits.float() / temperature, 1), F.log_softmax(teacher_logits.float() / temperature,
                    1), reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * temperature ** 2 * soft


def train_epoch(model, loader, opt, sched, scaler, rt: Runtime, cfg: Config, norm: Normalization, epoch: int,
                small_images: bool, last_good: str, teacher: nn.Module | None = None, ema=None) -> dict:
    """One epoch; with a teacher (eval mode, no grad, the same augmented inputs) the loss is distillation_loss; with
    `ema` (an AveragedModel) the average follows every step."""
    model.train()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    elif isinstance(loader.sampler, RandomSampler):
        loader.sampler.generator.manual_seed(cfg.seed * 1000 + epoch)
    aug = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + epoch) if cfg.augment else None
    show = rt.main and console.err().isatty()  # logs get one line per epoch instead
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not show, file=console.err(),
               dynamic_ncols=True) if tqdm else loader
    seen, correct, loss_sum, start = 0, 0, 0.0, time.perf_counter()
    for step, (images, labels) in enumerate(bar):
        x = to_device_input(images, norm, cfg.image_size, rt.device, rt.channels_last, aug, small_images,
                            cfg.random_erasing)
        y = labels.to(rt.device, non_blocking=True)
        with _autocast(rt):
            logits = model(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = distillation_loss(logits, teacher_logits, y, cfg.kd_alpha, cfg.kd_temperature,
                                         cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise EdgeError(f"epoch {epoch + 1} step {step + 1}: loss is {loss.item()}; training stopped "
                            f"(lower lr={cfg.lr}?); last good checkpoint: {last_good}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        n = len(y)
        seen += n
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        if tqdm and show:
            rate = seen * rt.world / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", img_s=f"{rate:.0f}")
    wall = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "images_per_s": seen * rt.world / wall, "train_wall_s": wall}


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, rt: Runtime, cfg: Config, norm: Normalization) -> dict:
    model.eval()
    seen, correct, loss_sum = 0, 0, 0.0
    for images, labels in loader:
        x = to_device_input(images, norm, cfg.image_size, rt.device, rt.channels_last)
        y = labels.to(rt.device, non_blocking=True)
        with _autocast(rt):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}


def _subset(split: ImageSet, n: int) -> ImageSet:
    return split.subset(np.arange(min(n, len(split)))) if n > 0 else split


def check_learned(last_loss: float, best_val_acc: float, num_classes: int, lr: float, kept: Path) -> None:
    """A run that learned nothing is an error: the last epoch's training loss above twice a uniform guess's (ln K)
    and the best validation top-1 at chance (at most CHANCE_MARGIN / K)."""
    k = num_classes
    if best_val_acc <= CHANCE_MARGIN / k and last_loss > 2 * math.log(k):
        raise EdgeError(f"training diverged: last epoch's train loss {last_loss:.4g} (a uniform guess scores "
                        f"{math.log(k):.2f}) and best validation top-1 {100 * best_val_acc:.2f}% is chance level "
                        f"(1/{k}); lower lr={lr}; checkpoints kept in {kept}")


def check_batch(batch_size: int, world: int, train_images: int) -> int:
    """The per-process batch under DDP; an error where the global batch does not divide across the processes or the
    data has fewer images than one global batch."""
    if batch_size % world:
        raise EdgeError(f"batch_size={batch_size} does not divide evenly across {world} processes; use a "
                        f"multiple of {world} (each process trains on batch_size / {world} images a step)")
    per_rank_batch = batch_size // world
    if train_images < batch_size:
        raise EdgeError(f"{world} processes x batch {per_rank_batch} need at least {batch_size} "
                        f"training images; have {train_images}: lower --nproc_per_node or batch_size")
    return per_rank_batch


def train_stage(ctx) -> None:
    """The train stage: the run's data, loaded once, into train()."""
    train(ctx.cfg, ctx.data)


def train(cfg: Config, data=None) -> Path:
    """Train cfg.model; returns <run>/train/ holding best.pt, last.pt and metrics.json."""
    rt = setup_runtime(cfg)
    layout = Layout(cfg.run_dir)
    data = data if data is not None else load_data_for(cfg)
    train_split = _subset(data.train, cfg.train_subset)
    val_split, test_split = _subset(data.val, cfg.eval_subset), _subset(data.test, cfg.eval_subset)
    if cfg.epochs == 0:
        return import_weights(cfg, rt, data, layout, test_split)
    per_rank_batch = check_batch(cfg.batch_size, rt.world, len(train_split))
    pin = rt.device.type == "cuda"
    train_loader = make_loader(train_split, per_rank_batch, True, cfg.seed, rt.world, rt.rank, cfg.workers, pin)
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
        save_config(cfg, layout.config)
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
            stats = train_epoch(net, train_loader, opt, sched, scaler, rt, cfg, data.norm, epoch, small_images,
                                last_good, ema=ema)
            if rt.main:
                val = evaluate_model(kept, val_loader, rt, cfg, data.norm)
                row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"],
                       "lr": opt.param_groups[0]["lr"], "wall_s": time.perf_counter() - run_start}
                state["history"].append(row)
                state["epoch"] = epoch + 1
                improved = val["acc"] > state["best_acc"]
                state["best_acc"] = max(state["best_acc"], val["acc"])
                raw = {"train_model": _cpu_state(model), "ema_steps": ema.n_averaged.item()} if ema is not None else {}
                ckpt = _checkpoint(kept, state, cfg, data, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                                   scaler=scaler.state_dict(), **raw,
                                   rng={"torch": torch.get_rng_state(),
                                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []})
                save_checkpoint(ckpt, layout.last)
                if improved:
                    save_checkpoint(ckpt, layout.best)
                atomic_write_json(layout.metrics, {"epochs": state["history"], "best_val_acc": state["best_acc"]})
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['train_loss']:.4f}  acc {stats['train_acc']:.4f}  "
                      f"val top-1 {100 * val['acc']:.2f}%  {stats['images_per_s']:.0f} img/s  {row['wall_s']:.0f} s",
                      file=console.err())
            if rt.world > 1:
                dist.barrier()

    if rt.main:
        finish(layout, cfg, rt, data, test_split, time.perf_counter() - run_start, per_rank_batch)
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return layout.train_dir


def import_weights(cfg: Config, rt: Runtime, data, layout: Layout, test_split: ImageSet) -> Path:
    """epochs=0: the model is the given weights (e.g. torchvision's ImageNet ResNet-18), scored on the test split and
    written as best.pt / last.pt so every later stage works as after training."""
    if not cfg.weights:
        raise EdgeError("epochs=0 skips training and needs weights=PATH (a torchvision state_dict) or "
                        "weights=torchvision")
    model = build_model(cfg.model, **cfg.model_options(data.num_classes, data.in_channels))
    if rt.main:
        print("\n".join(load_weights(model, resolve_weights(cfg.weights, cfg.model))), file=console.err())
        layout.train_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, layout.config)
        ckpt = _checkpoint(model, {"epoch": 0, "best_acc": -1.0, "history": []}, cfg, data, weights=str(cfg.weights))
        save_checkpoint(ckpt, layout.last)
        save_checkpoint(ckpt, layout.best)
        atomic_write_json(layout.metrics, {"epochs": [], "best_val_acc": None, "weights": str(cfg.weights)})
        finish(layout, cfg, rt, data, test_split, 0.0)
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
        raise EdgeError(f"{path}: resume with a different {', '.join(changed)} ({was} in the checkpoint); "
                        f"use the same values or a new name=")
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


def finish(layout: Layout, cfg: Config, rt: Runtime, data, test_split: ImageSet, wall: float,
           per_rank_batch: int | None = None) -> None:
    """Score best.pt on the test split and close metrics.json; a model that learned nothing is an error."""
    best = load_checkpoint(layout.best)
    model = model_from_checkpoint(best).to(rt.device)
    test_loader = make_loader(test_split, 512, False, cfg.seed, 1, 0, cfg.workers, rt.device.type == "cuda")
    test = evaluate_model(model, test_loader, rt, cfg, data.norm)
    metrics = json.loads((layout.metrics).read_text())
    metrics |= {"best_epoch": best["epoch"], "test_loss": test["loss"], "test_acc": test["acc"],
                "test_images": len(test_split), "device": str(rt.device), "world_size": rt.world,
                "amp": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else "fp32",
                "channels_last": rt.channels_last, "compile": cfg.compile, "train_wall_s": wall,
                "preset": cfg.preset, "batch_size": cfg.batch_size, "per_rank_batch": per_rank_batch}
    atomic_write_json(layout.metrics, metrics)
    last_loss = metrics["epochs"][-1]["train_loss"] if metrics["epochs"] else 0.0
    if best["epoch"] > 0:
        check_learned(last_loss, best["best_acc"], data.num_classes, cfg.lr, layout.train_dir)
    source = f"weights {cfg.weights} as given" if best["epoch"] == 0 else \
        f"best epoch {best['epoch']}, val top-1 {100 * best['best_acc']:.2f}%"
    print(f"trained: {source}, test top-1 {100 * test['acc']:.2f}% "
          f"({len(test_split)} images), {wall:.0f} s -> {layout.train_dir}", file=console.err())


def fine_tune(model: nn.Module, cfg: Config, data, epochs: int, lr: float, before_epoch=None,
              teacher: nn.Module | None = None, plain: bool = False) -> list[dict]:
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
        teacher = teacher.to(rt.device, memory_format=torch.channels_last if rt.channels_last else
                             torch.preserve_format).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        teacher = None
    split = _subset(data.train, cfg.train_subset)
    n = min(cfg.finetune_subset or len(split), len(split))
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
            stats = train_epoch(model, loader, opt, sched, scaler, rt, run, data.norm, epoch,
                                data.name != "imagefolder", "none (fine-tuning)", teacher)
            val = evaluate_model(model, val_loader, rt, run, data.norm)
        history.append({"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"]})
        print(f"  fine-tune {epoch + 1}/{epochs}  loss {stats['train_loss']:.4f}  val top-1 {100 * val['acc']:.2f}%",
              file=console.err())
    if rt.channels_last:
        model.to(memory_format=torch.contiguous_format)  # exported and saved as defined
    return history
