"""Training data on the device: the split as a Dataset, seeded loaders (DDP-aware), augmentation on uint8
batches, and the device-side normalisation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ...data import ImageFiles, ImageSet, Normalization, normalize, to_input

try:
    from tqdm import tqdm
except ImportError:  # stock-PyTorch machines: plain per-epoch lines instead of a bar
    tqdm = None


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


def make_loader(
    split: ImageSet,
    batch_size: int,
    shuffle: bool,
    seed: int,
    world: int,
    rank: int,
    workers: int,
    pin: bool,
    samples: int = 0,
) -> DataLoader:
    """samples > 0 (shuffled, one process): an epoch is that many images drawn anew from the whole split each epoch
    (more than the split: whole shuffled passes, then part of one more)."""
    dataset = Split(split)
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
    elif shuffle:
        sampler = RandomSampler(dataset, num_samples=samples or None, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    files = isinstance(split.images, ImageFiles)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=shuffle,
        collate_fn=_keep,
        num_workers=workers if files else 0,
        pin_memory=pin,
        persistent_workers=files and workers > 0,
    )


def augment(x: torch.Tensor, small_images: bool, generator: torch.Generator, erasing: float = 0.0) -> torch.Tensor:
    """One affine resample per image on the device. Small images: pad 4 px with zeros, random crop, horizontal flip.
    Others: random resized crop (scale 0.25-1, aspect 3/4-4/3) and flip. Then, with probability `erasing`, one
    rectangle (2-25% of the area, aspect 1/3-3) set to zero (Zhong et al.). x is float N,C,H,W in 0..1."""
    n, _, h, w = x.shape
    rand = torch.rand(n, 9, generator=generator).to(x.device)
    flip = torch.where(rand[:, 0] < 0.5, -1.0, 1.0).to(x.device)
    if small_images:
        shifts = (
            torch.randint(-4, 5, (n, 2), generator=generator).to(x.device).float()
            * 2
            / torch.tensor([w, h], device=x.device)
        )
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
        box = (
            (rows >= top[:, None, None])
            & (rows < (top + eh)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + ew)[:, None, None])
            & (rand[:, 8] < erasing)[:, None, None]
        )
        x = x.masked_fill(box[:, None], 0.0)
    return x


def to_device_input(
    images: torch.Tensor,
    norm: Normalization,
    image_size: int,
    device: torch.device,
    channels_last: bool,
    augment_with: torch.Generator | None = None,
    small_images: bool = True,
    erasing: float = 0.0,
) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if augment_with is None:
        x = to_input(images, norm, image_size)
    else:
        x = normalize(
            augment(images.permute(0, 3, 1, 2).float().div_(255), small_images, augment_with, erasing), norm, image_size
        )
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _subset(split: ImageSet, n: int) -> ImageSet:
    return split.subset(np.arange(min(n, len(split)))) if n > 0 else split
