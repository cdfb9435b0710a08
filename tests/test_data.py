import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import EdgeError
from pipeline.data import FASHION_MNIST_DIR, NORMALIZATION, load_data, preprocess


def test_fashion_mnist_real_splits(fmnist):
    assert len(fmnist.test) == 10_000 and fmnist.num_classes == 10
    assert fmnist.test.images.shape == (10_000, 28, 28, 1) and fmnist.test.images.dtype == np.uint8
    assert np.bincount(fmnist.test.labels).tolist() == [1000] * 10
    assert len(fmnist.train) == 55_000 and len(fmnist.val) == 5_000 and len(fmnist.calibration) == 300
    assert fmnist.in_channels == 1 and fmnist.classes[9] == "Ankle boot"


def test_calibration_subset_is_training_images_only(fmnist):
    """Every int8 route calibrates on this subset: it must come from the training split, not validation or test."""
    train = {img.tobytes() for img in fmnist.train.images}
    assert all(img.tobytes() in train for img in fmnist.calibration.images)
    val = {img.tobytes() for img in fmnist.val.images}
    test = {img.tobytes() for img in fmnist.test.images}
    assert sum(img.tobytes() in val or img.tobytes() in test for img in fmnist.calibration.images) <= 1


def test_validation_size_defaults_to_a_share_of_the_training_split(tmp_path):
    _write_folder(tmp_path, {"cat": 30, "dog": 20})
    data = load_data("imagefolder", root=tmp_path, image_size=24, calib_size=3)
    assert len(data.val) == 5 and len(data.train) == 45  # 10% of 50
    with pytest.raises(EdgeError, match=r"val_size=50 must be in 0..49 \(training split has 50 images\)"):
        load_data("imagefolder", root=tmp_path, image_size=24, val_size=50, calib_size=3)


def test_validation_split_is_deterministic_and_disjoint(fmnist):
    again = load_data("fashion_mnist", val_size=5000, seed=0)
    assert np.array_equal(again.val.labels, fmnist.val.labels)
    assert np.array_equal(again.val.images, fmnist.val.images)
    other = load_data("fashion_mnist", val_size=5000, seed=1)
    assert not np.array_equal(other.val.images, fmnist.val.images)
    # no training image is a validation image (compare raw bytes of a sample)
    train = {img.tobytes() for img in fmnist.train.images[:20000]}
    assert sum(img.tobytes() in train for img in fmnist.val.images[:500]) <= 2  # Fashion-MNIST has a few duplicates


def test_normalization_constants_match_training_statistics(fmnist):
    x = np.concatenate([fmnist.train.images, fmnist.val.images]).astype(np.float64) / 255
    norm = NORMALIZATION["fashion_mnist"]
    assert abs(x.mean() - norm.mean[0]) < 1e-3 and abs(x.std() - norm.std[0]) < 1e-3
    batch = preprocess(fmnist.train.images[:2000], norm)
    assert batch.shape == (2000, 1, 28, 28) and batch.dtype == np.float32
    assert abs(batch.mean()) < 0.05 and abs(batch.std() - 1) < 0.05
    assert preprocess(fmnist.test.images[:4], norm, image_size=32).shape == (4, 1, 32, 32)


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(EdgeError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion_mnist", root=tmp_path / "nowhere")


def test_idx_label_out_of_range(tmp_path):
    for name in (
        "train-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (tmp_path / name).write_bytes((FASHION_MNIST_DIR / name).read_bytes())
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[8 + 17] = 12
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(EdgeError, match=r"t10k-labels.*label 12 at index 17 is out of range 0..9"):
        load_data("fashion_mnist", root=tmp_path)


def _write_folder(root, counts, size=(40, 30)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png"
                )


def test_imagefolder(tmp_path):
    _write_folder(tmp_path, {"cat": 6, "dog": 4})
    data = load_data("imagefolder", root=tmp_path, image_size=24, val_size=2, calib_size=3)
    assert data.classes == ["cat", "dog"] and data.in_channels == 3
    assert len(data.train) == 8 and len(data.val) == 2 and len(data.test) == 10
    assert data.test.images[0].shape == (24, 24, 3) and data.test.images[0:3].shape == (3, 24, 24, 3)
    assert data.test.labels.tolist() == [0] * 6 + [1] * 4


def test_imagefolder_empty_class_and_unreadable_image(tmp_path):
    _write_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(EdgeError, match=r"train/emu: empty class folder"):
        load_data("imagefolder", root=tmp_path, val_size=1, calib_size=1)
    (tmp_path / "train" / "emu").rmdir()
    (tmp_path / "train" / "dog" / "1.png").write_bytes(b"not a png")
    with pytest.raises(EdgeError, match=r"dog/1.png: unreadable image"):
        load_data("imagefolder", root=tmp_path, val_size=1, calib_size=1)
    with pytest.raises(EdgeError, match="image folder not found"):
        load_data("imagefolder", root=tmp_path / "missing")


def _write_cifar(root, bad_label=False):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, 20).tolist()
        if bad_label and name == "test_batch":
            labels[3] = 10
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), b"labels": labels}, f)


def test_cifar10_python_format(tmp_path):
    _write_cifar(tmp_path / "c")
    data = load_data("cifar10", root=tmp_path / "c", val_size=10, calib_size=5)
    assert len(data.train) == 90 and len(data.test) == 20 and data.test.images.shape == (20, 32, 32, 3)
    assert data.norm == NORMALIZATION["cifar10"]


def test_cifar10_bad_label_and_foreign_pickle(tmp_path):
    _write_cifar(tmp_path / "c", bad_label=True)
    with pytest.raises(EdgeError, match=r"test_batch: label 10 at index 3 is out of range"):
        load_data("cifar10", root=tmp_path / "c", val_size=10, calib_size=5)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(EdgeError, match="not a CIFAR-10 python-format batch.*refusing to load builtins.print"):
        load_data("cifar10", root=tmp_path / "c", val_size=10, calib_size=5)


def test_bad_split_sizes(fmnist):
    with pytest.raises(EdgeError, match="calib_size=60000"):
        load_data("fashion_mnist", val_size=100, calib_size=60_000)
    with pytest.raises(EdgeError, match="unknown data_source 'mnist'"):
        load_data("mnist")


def test_an_evaluation_set_too_large_for_memory_is_refused_before_decoding(tmp_path):
    """preset=phone on ImageNet's 50,000-image val/ folder used to preprocess it all into memory (28 GiB of float32);
    now it is one line naming the figure and the eval_subset that fits, before a single image is decoded."""
    from pipeline.data import NORMALIZATION, DataSplits, ImageFiles, ImageSet, eval_arrays

    missing = ImageFiles([tmp_path / f"{i}.JPEG" for i in range(50_000)], 224)  # never opened
    split = ImageSet(missing, np.zeros(50_000, np.int64))
    data = DataSplits("imagefolder", ["a"], NORMALIZATION["imagefolder"], 3, split, split, split, split)
    with pytest.raises(
        EdgeError,
        match=r"^eval_subset=0: 50000 test images at 224 px are 28\.0 GiB of float32 in "
        r"memory \(the limit is 4 GiB\); set eval_subset=7133 or less$",
    ):
        eval_arrays(data, 224)
    with pytest.raises(FileNotFoundError):  # within the limit: it goes on to decode (here: files that are not there)
        eval_arrays(data, 224, limit=7133)
