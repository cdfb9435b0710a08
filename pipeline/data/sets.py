"""The data's types: the normalisation constants of each data set, a split (images and labels, in memory or as
files decoded on demand), the splits of one data set, and its content id."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the 0..1 scale: x = (pixel / 255 - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


# Constants that live with each data set (Fashion-MNIST and CIFAR-10: their training splits; ImageFolder: ImageNet's).
NORMALIZATION = {
    "fashion_mnist": Normalization((0.2860,), (0.3530,)),
    "cifar10": Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class ImageFiles:
    """Lazily decoded image files, each resized (short side) and centre-cropped to `size`, as uint8 HWC RGB."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._load(self.paths[index])
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        return np.stack([self._load(self.paths[i]) for i in index])

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = self.size / min(im.size)
            im = im.resize((max(self.size, round(im.width * scale)), max(self.size, round(im.height * scale))))
            left, top = (im.width - self.size) // 2, (im.height - self.size) // 2
            return np.asarray(im.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)

    def take(self, indices: np.ndarray) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], self.size)


@dataclass
class ImageSet:
    """One split: images (uint8 N,H,W,C array, or ImageFiles) and int64 labels."""

    images: np.ndarray | ImageFiles
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageSet:
        if isinstance(self.images, ImageFiles):
            return ImageSet(self.images.take(indices), self.labels[indices])
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass
class DataSplits:
    name: str
    classes: list[str]
    norm: Normalization
    in_channels: int
    train: ImageSet  # training split less the validation carve-out
    val: ImageSet  # deterministic carve-out of the training split
    test: ImageSet
    calibration: ImageSet  # subset of `train` for int8 calibration
    identity: str = ""  # content_id of the training and test splits as read: a stage's key and a record's lineage

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """What later stages and the manifest need to preprocess identically."""
        return {
            "name": self.name,
            "classes": self.classes,
            "in_channels": self.in_channels,
            "normalization": asdict(self.norm),
            "sizes": {s: len(getattr(self, s)) for s in ("train", "val", "test", "calibration")},
        }


def content_id(*splits: ImageSet) -> str:
    """sha256 (16 hex) of what the splits hold: pixels and labels of arrays; for image files, each file's path, size
    and modification time (as make and rsync judge a change) and its label. Equal ids: the same data."""
    h = hashlib.sha256()
    for split in splits:
        h.update(np.ascontiguousarray(split.labels).tobytes())
        if isinstance(split.images, ImageFiles):
            for p in split.images.paths:
                st = p.stat()
                h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        else:
            h.update(np.ascontiguousarray(split.images).tobytes())
    return h.hexdigest()[:16]
