"""Real image data, offline: Fashion-MNIST (Debian's IDX files), an ImageFolder directory, CIFAR-10 (python format).

Images travel as uint8 NHWC; `preprocess` is the one place that turns them into the float32 NCHW batches every stage
(and the device bundle) feeds to a model, with the normalisation constants recorded beside the data set.
Only numpy and torch here (Pillow is imported for ImageFolder alone): training on a stock PyTorch machine needs no more.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .core.errors import EdgeError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
DEFAULT_VAL_CAP = 5000  # val_size=None carves 10% of the training split, at most this many
CHANNELS = {"fashion_mnist": 1, "cifar10": 3, "imagefolder": 3}  # ImageFolder images are converted to RGB


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
            "name": self.name, "classes": self.classes, "in_channels": self.in_channels,
            "normalization": asdict(self.norm),
            "sizes": {s: len(getattr(self, s)) for s in ("train", "val", "test", "calibration")},
        }


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
        raise EdgeError(f"calibration: {int(constant.sum())} of {n} calibration images are constant ({black} all "
                        f"black); int8 ranges calibrated on them would not be the data's: check the training images")
    x = preprocess(images_u8, norm, image_size)
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    if np.any(np.abs(mean) > MAX_MEAN_SHIFT) or np.any(std < STD_RANGE[0]) or np.any(std > STD_RANGE[1]):
        raise EdgeError(f"calibration: images are not normalised like training: per-channel mean "
                        f"{np.round(mean, 2).tolist()}, std {np.round(std, 2).tolist()} after normalisation (expected "
                        f"about 0 and 1: the training set's mean {list(norm.mean)} and std {list(norm.std)})")


# --- readers -------------------------------------------------------------------------------------------------------

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
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * ndim)  # writable
    if data.size != int(np.prod(shape)):
        raise EdgeError(f"{path}: IDX header says {shape} but holds {data.size} bytes (truncated file?)")
    return data.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise EdgeError(f"{root}: missing {stem}(.gz); install the Debian package dataset-fashion-mnist "
                    f"(apt-get install dataset-fashion-mnist) or point data_root at the Fashion-MNIST IDX files")


def _check_labels(labels: np.ndarray, num_classes: int, where: Path) -> np.ndarray:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise EdgeError(f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                        f"0..{num_classes - 1}; fix or remove that entry")
    return labels.astype(np.int64)


def read_fashion_mnist(root: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    if not root.is_dir():
        raise EdgeError(f"{root}: Fashion-MNIST directory not found; install it with "
                        f"'apt-get install dataset-fashion-mnist' (or make setup), or set data_root")
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

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

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
            raise EdgeError(f"{root / name}: empty class folder; add images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                            f"or remove the folder")
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


# --- the one entry point -------------------------------------------------------------------------------------------

def load_data(source: str = "fashion_mnist", root: str | Path | None = None, image_size: int = 224,
              val_size: int | None = None, calib_size: int = 300, seed: int = 0) -> DataSplits:
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
    calib_idx = np.sort(order[val_size:val_size + calib_size])
    sample = train.images[0]
    return DataSplits(
        name=source, classes=list(classes), norm=NORMALIZATION[source], in_channels=int(sample.shape[-1]),
        train=train.subset(train_idx), val=train.subset(val_idx), test=test, calibration=train.subset(calib_idx),
        identity=content_id(train, test),
    )


def input_shape(cfg) -> list[int]:
    """The batch-1 NCHW input a Config's model takes, without loading the data set."""
    return [1, cfg.in_channels or CHANNELS[cfg.data_source], cfg.image_size, cfg.image_size]


def load_data_for(cfg) -> DataSplits:
    """load_data with a Config's data keys, checked against what the config asks of the data."""
    data = load_data(cfg.data_source, cfg.data_root, cfg.image_size, cfg.val_size, cfg.calib_size, cfg.seed)
    if cfg.num_classes is not None and cfg.num_classes < data.num_classes:
        raise EdgeError(f"num_classes={cfg.num_classes}: the {data.name} data has {data.num_classes} classes "
                        f"(labels 0..{data.num_classes - 1}); use num_classes >= {data.num_classes} or leave it unset")
    if cfg.in_channels is not None and cfg.in_channels != data.in_channels:
        raise EdgeError(f"in_channels={cfg.in_channels}: the {data.name} images have {data.in_channels} channel(s); "
                        f"use in_channels={data.in_channels} or leave it unset")
    return data


EVAL_MEMORY_GIB = 4.0  # the evaluation images are held in memory as float32 once per process: at most this much


def eval_arrays(data: DataSplits, image_size: int, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The test split (or its first `limit` images) as model input and labels: what every gate and evaluation uses.
    Refused, before anything is decoded, when it would take more than EVAL_MEMORY_GIB of memory."""
    n = min(limit, len(data.test)) if limit > 0 else len(data.test)
    per_image = 4 * data.in_channels * image_size * image_size
    if n * per_image > EVAL_MEMORY_GIB * 2**30:
        fits = int(EVAL_MEMORY_GIB * 2**30 // per_image)
        raise EdgeError(f"eval_subset={limit}: {n} test images at {image_size} px are {n * per_image / 2**30:.1f} GiB "
                        f"of float32 in memory (the limit is {EVAL_MEMORY_GIB:g} GiB); set eval_subset={fits} or less")
    return preprocess(np.asarray(data.test.images[:n]), data.norm, image_size), data.test.labels[:n]
