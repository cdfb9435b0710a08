"""Real image data, offline: Fashion-MNIST (Debian's IDX files), an ImageFolder directory, CIFAR-10 (python format),
read by pipeline.data.sources into the types of pipeline.data.sets.

Images travel as uint8 NHWC; `preprocess` is the one place that turns them into the float32 NCHW batches every stage
(and the device bundle) feeds to a model, with the normalisation constants recorded beside the data set.
Only numpy and torch here (Pillow is imported for ImageFolder alone): training on a stock PyTorch machine needs no more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import EdgeError
from .sets import NORMALIZATION, DataSplits, ImageFiles, ImageSet, Normalization, content_id
from .sources import FASHION_MNIST_DIR, read_cifar10, read_fashion_mnist, read_imagefolder

# What the stages and the tests take from pipeline.data: the types (sets), the readers' home (sources), and here the
# preprocessing, the calibration check and the one entry point, load_data.
__all__ = [
    "NORMALIZATION",
    "DataSplits",
    "ImageFiles",
    "ImageSet",
    "Normalization",
    "content_id",
    "FASHION_MNIST_DIR",
    "normalize",
    "to_input",
    "nhwc_constants",
    "preprocess",
    "check_calibration",
    "load_data",
    "input_shape",
    "load_data_for",
    "eval_arrays",
]

DEFAULT_VAL_CAP = 5000  # val_size=None carves 10% of the training split, at most this many
CHANNELS = {"fashion_mnist": 1, "cifar10": 3, "imagefolder": 3}  # ImageFolder images are converted to RGB


def normalize(x: torch.Tensor, norm: Normalization, image_size: int | None = None) -> torch.Tensor:
    """float N,C,H,W in 0..1 -> model input: resized (bilinear, antialiased) if sizes differ, then (x - mean) / std."""
    if image_size is not None and x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(norm.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, device=x.device).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def to_input(images: torch.Tensor, norm: Normalization, image_size: int | None = None) -> torch.Tensor:
    """uint8 N,H,W,C (any device) -> normalised float32 N,C,H,W model input."""
    return normalize(images.permute(0, 3, 1, 2).float().div_(255), norm, image_size)


def nhwc_constants(norm: Normalization, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """mean and std as float32 arrays that broadcast over N,H,W,C images: `normalize` for TensorFlow's layout."""
    return tuple(np.asarray(v, np.float32).reshape(1, 1, 1, channels) for v in (norm.mean, norm.std))


def preprocess(images: np.ndarray, norm: Normalization, image_size: int | None = None) -> np.ndarray:
    """The numpy face of `to_input`: what evaluation, calibration and the device bundle feed to every model."""
    return to_input(torch.from_numpy(np.ascontiguousarray(images)), norm, image_size).numpy()


MAX_CONSTANT_SHARE = 0.1  # calibration: more constant images than this and the activation ranges are not the data's
# Normalised like training: mean ~ 0, std ~ 1 per channel. Loose enough for a real shift of domain (Fashion-MNIST
# under ImageNet's constants: mean -1.3, std 1.2), tight enough for pixels left in 0..255 or wrong constants.
MAX_MEAN_SHIFT, STD_RANGE = 3.0, (0.2, 5.0)


def check_calibration(images_u8: np.ndarray, norm: Normalization, image_size: int | None = None) -> None:
    """Refuse calibration images that would calibrate int8 on something other than the data: mostly constant (or
    all-black) images, or images whose normalised statistics are far from the training set's (mean 0, std 1)."""
    n = len(images_u8)
    if n == 0:
        raise EdgeError("calibration: no images (calib_size=0 or an empty training split)")
    flat = np.asarray(images_u8).reshape(n, -1)
    constant = flat.min(axis=1) == flat.max(axis=1)
    if constant.mean() > MAX_CONSTANT_SHARE:
        black = int((constant & (flat.max(axis=1) == 0)).sum())
        raise EdgeError(
            f"calibration: {int(constant.sum())} of {n} calibration images are constant ({black} all "
            f"black); int8 ranges calibrated on them would not be the data's: check the training images"
        )
    x = preprocess(images_u8, norm, image_size)
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    if np.any(np.abs(mean) > MAX_MEAN_SHIFT) or np.any(std < STD_RANGE[0]) or np.any(std > STD_RANGE[1]):
        raise EdgeError(
            f"calibration: images are not normalised like training: per-channel mean "
            f"{np.round(mean, 2).tolist()}, std {np.round(std, 2).tolist()} after normalisation (expected "
            f"about 0 and 1: the training set's mean {list(norm.mean)} and std {list(norm.std)})"
        )


# --- the one entry point -------------------------------------------------------------------------------------------


def load_data(
    source: str = "fashion_mnist",
    root: str | Path | None = None,
    image_size: int = 224,
    val_size: int | None = None,
    calib_size: int = 300,
    seed: int = 0,
) -> DataSplits:
    """Load a data set and carve a deterministic validation split and calibration subset from its training split.

    `val_size` None: 10% of the training split, at most 5,000 (Fashion-MNIST: 5,000; 4,000 images: 400).
    `image_size` only sizes ImageFolder decoding; resizing for the model happens in `preprocess`.
    """
    if source == "fashion_mnist":
        train, test, classes = read_fashion_mnist(Path(root) if root else FASHION_MNIST_DIR)
    elif source == "cifar10":
        if root is None:
            raise EdgeError("data_source=cifar10 needs data_root=<folder with data_batch_1..5 and test_batch>")
        train, test, classes = read_cifar10(Path(root))
    elif source == "imagefolder":
        if root is None:
            raise EdgeError("data_source=imagefolder needs data_root=<folder with train/<class>/ and test/<class>/>")
        train, test, classes = read_imagefolder(Path(root), image_size)
    else:
        raise EdgeError(f"unknown data_source {source!r}; choose fashion_mnist, cifar10 or imagefolder")

    if val_size is None:
        val_size = min(DEFAULT_VAL_CAP, len(train) // 10)
    if not 0 <= val_size < len(train):
        raise EdgeError(f"val_size={val_size} must be in 0..{len(train) - 1} (training split has {len(train)} images)")
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, train_idx = np.sort(order[:val_size]), np.sort(order[val_size:])
    if calib_size > len(train_idx):
        raise EdgeError(f"calib_size={calib_size} exceeds the {len(train_idx)} training images available")
    calib_idx = np.sort(order[val_size : val_size + calib_size])
    sample = train.images[0]
    return DataSplits(
        name=source,
        classes=list(classes),
        norm=NORMALIZATION[source],
        in_channels=int(sample.shape[-1]),
        train=train.subset(train_idx),
        val=train.subset(val_idx),
        test=test,
        calibration=train.subset(calib_idx),
        identity=content_id(train, test),
    )


def input_shape(cfg) -> list[int]:
    """The batch-1 NCHW input a Config's model takes, without loading the data set."""
    return [1, cfg.in_channels or CHANNELS[cfg.data_source], cfg.image_size, cfg.image_size]


def load_data_for(cfg) -> DataSplits:
    """load_data with a Config's data keys, checked against what the config asks of the data."""
    data = load_data(cfg.data_source, cfg.data_root, cfg.image_size, cfg.val_size, cfg.calib_size, cfg.seed)
    if cfg.num_classes is not None and cfg.num_classes < data.num_classes:
        raise EdgeError(
            f"num_classes={cfg.num_classes}: the {data.name} data has {data.num_classes} classes "
            f"(labels 0..{data.num_classes - 1}); use num_classes >= {data.num_classes} or leave it unset"
        )
    if cfg.in_channels is not None and cfg.in_channels != data.in_channels:
        raise EdgeError(
            f"in_channels={cfg.in_channels}: the {data.name} images have {data.in_channels} channel(s); "
            f"use in_channels={data.in_channels} or leave it unset"
        )
    return data


EVAL_MEMORY_GIB = 4.0  # the evaluation images are held in memory as float32 once per process: at most this much


def eval_arrays(data: DataSplits, image_size: int, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The test split (or its first `limit` images) as model input and labels: what every gate and evaluation uses.
    Refused, before anything is decoded, when it would take more than EVAL_MEMORY_GIB of memory."""
    n = min(limit, len(data.test)) if limit > 0 else len(data.test)
    per_image = 4 * data.in_channels * image_size * image_size
    if n * per_image > EVAL_MEMORY_GIB * 2**30:
        fits = int(EVAL_MEMORY_GIB * 2**30 // per_image)
        raise EdgeError(
            f"eval_subset={limit}: {n} test images at {image_size} px are {n * per_image / 2**30:.1f} GiB "
            f"of float32 in memory (the limit is {EVAL_MEMORY_GIB:g} GiB); set eval_subset={fits} or less"
        )
    return preprocess(np.asarray(data.test.images[:n]), data.norm, image_size), data.test.labels[:n]
