"""The readers of each data source, offline: Fashion-MNIST (Debian's IDX files), CIFAR-10 (python format), an
ImageFolder directory. Each returns (train, test, class names) as ImageSets of uint8 NHWC images."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from ..core.errors import EdgeError
from .sets import ImageFiles, ImageSet

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not), as published with MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise EdgeError(f"{path}: unreadable IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EdgeError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * ndim)  # writable
    if data.size != int(np.prod(shape)):
        raise EdgeError(f"{path}: IDX header says {shape} but holds {data.size} bytes (truncated file?)")
    return data.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise EdgeError(
        f"{root}: missing {stem}(.gz); install the Debian package dataset-fashion-mnist "
        f"(apt-get install dataset-fashion-mnist) or point data_root at the Fashion-MNIST IDX files"
    )


def _check_labels(labels: np.ndarray, num_classes: int, where: Path) -> np.ndarray:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise EdgeError(
            f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{num_classes - 1}; fix or remove that entry"
        )
    return labels.astype(np.int64)


def read_fashion_mnist(root: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    if not root.is_dir():
        raise EdgeError(
            f"{root}: Fashion-MNIST directory not found; install it with "
            f"'apt-get install dataset-fashion-mnist' (or make setup), or set data_root"
        )
    sets = []
    for split in ("train", "t10k"):
        images = _read_idx(_find(root, f"{split}-images-idx3-ubyte"))
        label_path = _find(root, f"{split}-labels-idx1-ubyte")
        labels = _check_labels(_read_idx(label_path), 10, label_path)
        if len(images) != len(labels):
            raise EdgeError(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
        sets.append(ImageSet(images[..., None], labels))
    return sets[0], sets[1], FASHION_MNIST_CLASSES


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python format is pickled dicts of numpy arrays: allow only what those need, run nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> ImageSet:
    if not path.is_file():
        raise EdgeError(f"{path}: missing CIFAR-10 batch; point data_root at the extracted cifar-10-batches-py folder")
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"])
    except Exception as e:  # a corrupt or foreign file: say which one
        raise EdgeError(f"{path}: not a CIFAR-10 python-format batch ({e})") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise EdgeError(f"{path}: expected N x 3072 pixels and N labels, got {data.shape} and {len(labels)}")
    return ImageSet(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), _check_labels(labels, 10, path))


def read_cifar10(root: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    if not root.is_dir():
        raise EdgeError(f"{root}: CIFAR-10 directory not found; set data_root to the extracted cifar-10-batches-py")
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    train = ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    return train, _read_cifar_batch(root / "test_batch"), CIFAR10_CLASSES


def _scan_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[ImageSet, list[str]]:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise EdgeError(f"{root}: image folder not found; expected one sub-folder per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise EdgeError(f"{root}: no class sub-folders; expected {root}/<class>/<image>.png")
    if found != classes:
        raise EdgeError(f"{root}: class folders {found} differ from the training split's {classes}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgeError(
                f"{root / name}: empty class folder; add images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                f"or remove the folder"
            )
        for p in files:
            try:
                with Image.open(p) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise EdgeError(f"{p}: unreadable image ({e.__class__.__name__}); delete or replace it") from e
        paths += files
        labels += [label] * len(files)
    return ImageSet(ImageFiles(paths, size), np.asarray(labels, np.int64)), classes


def read_imagefolder(root: Path, size: int) -> tuple[ImageSet, ImageSet, list[str]]:
    """root/train/<class>/* and root/test/<class>/* (a `val` folder is accepted for test, as ImageNet ships)."""
    train, classes = _scan_folder(root / "train", size)
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    test, _ = _scan_folder(test_dir, size, classes)
    return train, test, classes
