"""The one typed config: every key a plain value with a comment, the presets, and the checks every value passes
at the door (type, choice, range), before any work starts."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import EdgeError
from .keys import BUDGET_KEYS


@dataclass
class Config:
    name: str = "default"  # run name: outputs go to <runs_dir>/<name>/
    runs_dir: str = "runs"  # parent of the run directories
    # model (models.build_model)
    model: str = "resnet18"  # resnet18/34/50/101/152 or mobilenet_v2
    width: float = 1.0  # channel width multiplier
    stem: str = "imagenet"  # "imagenet" (7x7/2 conv + max-pool) or "small" (3x3/1 conv, no pool)
    shortcut: str = "B"  # "B": 1x1 projection where the shape changes; "A": zero-padding, no parameters
    zero_init_residual: bool = False  # start each residual branch at zero (last BN gamma = 0)
    num_classes: int | None = None  # None: take it from the data set (a larger head than the data needs is allowed)
    in_channels: int | None = None  # None: take it from the data set
    # data (pipeline.data.load_data)
    data_source: str = "fashion_mnist"  # fashion_mnist | cifar10 | imagefolder
    data_root: str | None = None  # None: the Debian package's /usr/share/datasets/fashion-mnist
    image_size: int = 28  # model input is image_size x image_size
    val_size: int | None = None  # images carved from the training split for validation; None: 10%, at most 5,000
    calib_size: int = 300  # training images for int8 calibration (never test images)
    seed: int = 0
    # training (pipeline.stages.train); `preset` fills these first, then the YAML file, then key=value
    preset: str = "auto"  # cpu | gpu | phone | auto (gpu when CUDA is present); the resolved config records which
    epochs: int = 6  # 0: no training, the model is `weights` as given (preset=phone)
    # training takes at least this many optimizer steps: on a small data set the epochs rise to ceil(min_steps / steps
    # per epoch), said in one line (cpu preset: 800, what 4 Fashion-MNIST epochs take); 0: off
    min_steps: int = 0
    batch_size: int = 256  # global batch; under DDP it must divide evenly by the number of processes
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.2  # peak learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4  # not applied to BN parameters and biases
    schedule: str = "onecycle"  # onecycle | cosine (linear warm-up, then cosine to zero)
    warmup_epochs: float = 1.0  # cosine only
    label_smoothing: float = 0.1
    augment: bool = True  # small images: 4 px pad-and-crop + flip; imagefolder: random resized crop + flip
    random_erasing: float = 0.0  # with augment: share of training images with one random rectangle zeroed
    # > 0: validate, test and export an exponential moving average of the weights (and BN statistics) with this decay
    # per step (warmed up as TensorFlow's: min(ema, (1 + step) / (10 + step))); 0: off
    ema: float = 0.0
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    # CUDA: bf16 autocast where supported, else fp16 with a grad scaler; CPU: bf16 autocast where the CPU has native
    # bf16 (AVX512-BF16/AMX; 1.53x the fp32 images/s on this project's 2-core EPYC), else fp32
    amp: bool = True
    channels_last: bool = True  # CUDA: with amp; a CPU: always (fp32 too)
    compile: bool = False  # torch.compile the model (CUDA: worth it for long runs; first epoch pays compile time)
    workers: int = 4  # loader processes for imagefolder decoding (in-memory data sets use none)
    train_subset: int = 0  # > 0: train on that many images of the training split (tests, quick looks)
    eval_subset: int = 0  # > 0: validate and test on that many images
    # start from a torchvision-format state_dict file (or a resnet-edge checkpoint); "torchvision": the ImageNet weights
    # torchvision publishes for `model`, from torch's hub cache (downloads once)
    weights: str | None = None
    resume: bool = False  # continue <run>/train/last.pt to the same end state
    # export / convert / evaluate
    dynamic_batch: bool = False  # ONNX with a dynamic batch axis (TFLite files always have batch 1)
    # gate: top-1 drop, in points, of any int8, dynamic-range or pruned artifact vs the dense fp32 model, on the same
    # test images
    max_int8_drop: float = 1.0
    threads: int = 0  # inference threads for evaluation (0: all cores)
    # quantization/ (NNCF PTQ and QAT, NNCF magnitude pruning, torch-pruning structured pruning)
    quant_preset: str = "performance"  # NNCF preset: performance (symmetric) | mixed (asymmetric activations)
    ignored_scope: str = ""  # comma-separated node names NNCF leaves in float
    qat: bool = False  # quantize: also run quantization-aware fine-tuning
    qat_epochs: int = 1
    qat_lr: float = 0.001
    # NNCF PT2E int8 for litert-torch: minmax | nncf (+ fast bias correction) | nncf_bias (+ full bias correction, slow)
    # | observers (the quantizer's own, no NNCF); see quantization/pt2e.py auto: an NNCF int8 file that fails its top-1
    # gate is quantized again with its worst layers (explain's ranking) kept in float, one more at a time up to
    # max_float_layers, beside the original row | off
    pt2e_algorithm: str = "minmax"
    quant_fallback: str = "auto"
    max_float_layers: int = 4
    explain_images: int = 64  # test images the per-layer error (explain) is measured on
    prune_method: str = "magnitude"  # the `prune` verb: magnitude (NNCF, sparsity) | structured (fewer channels)
    prune_ratio: float = 0.5  # NNCF global magnitude pruning: share of weights set to zero
    prune_epochs: int = 1  # fine-tuning epochs under the pruning schedule; 0: batch-norm adaptation only
    prune_lr: float = 0.01
    structured_ratio: float = 0.5  # torch-pruning: share of channels removed per prunable layer
    structured_importance: str = "l1"  # l1 | l2 filter magnitude
    # keep channel counts multiples of this: XNNPACK's int8 kernels favour multiples of 8 (measured at 224 px, 70% of
    # channels removed: 1.25-1.53 ms with 8, 2.17-2.51 ms with 1); 1 = exact ratio
    structured_round_to: int = 8
    structured_epochs: int = 2  # fine-tuning epochs in all (iterative: spread over the steps)
    # reach structured_ratio in this many equal steps, fine-tuning after each (iterative pruning; torch-pruning's
    # iterative_steps); 1: one shot, then fine-tune
    structured_steps: int = 1
    structured_lr: float = 0.02
    # > 0: a fine-tuning epoch is that many training images, drawn anew each epoch from the whole split, passing over a
    # smaller split more than once (the fine-tune budget in images seen: pruning and QAT get the same optimizer steps on
    # any data set size, a 3,600-image folder as many as Fashion-MNIST); 0: all structured-prune and QAT fine-tuning:
    # weight of knowledge distillation from the dense fp32 model (loss = (1 - a) CE + a T^2 KL); 0 turns it off. On by
    # default: it recovered more of what channel pruning loses in every case measured (a quarter-width model at 25%:
    # 84.6% against 83.1% without, fp32 84.9%)
    finetune_subset: int = 0
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0  # softens both models' predictions for the KL term
    # fit (pipeline.stages.fit): the most accurate int8 file within one budget; any of the three > 0 adds the stage to
    # `run`. budget_ms: ms per image at budget_size px and budget_threads threads, LiteRT + XNNPACK, measured here;
    # budget_speedup: times faster than the run's fp32 TFLite file at that size and thread count; budget_mib: file MiB
    budget_ms: float = 0.0
    budget_speedup: float = 0.0
    budget_mib: float = 0.0
    budget_size: int = 224  # the latency budget's image size (fully convolutional: accuracy stays at image_size)
    budget_threads: int = 1
    # a latency table measured on the device (device_tests/latency_table.py on the bundle's latency pack): budget_ms
    # is then ms on that device, predicted from its table; "": this host's table, built and timed by fit
    latency_table: str = ""
    fit_steps: int = 6  # the greedy search's iterations to the budget (NetAdapt): more are finer and slower
    fit_levels: int = 8  # channel counts a group may take: this many even steps of its channels (multiples of round_to)
    fit_step_images: int = 2048  # training images of the distilled fine-tune after each search step (0: none)
    # netadapt: greedy steps, each candidate scored and the kept one fine-tuned (the reference); sensitivity: each
    # group's cuts scored alone once, then one accuracy level for every group (AIMET's greedy ratio selection)
    fit_search: str = "netadapt"
    # fit's files at the budget's size (ONNX, fp32 TFLite, the answer timed whole, ~100 MB at 224 px) stay in fit/;
    # false: they go once the answer is delivered (the dense and fastest-plan int8 files stay: the next fit and the
    # bundle's latency pack reuse them; so does a file a device's table left for the device to time)
    keep_fit_files: bool = False
    # run (pipeline.run): which optional stages the chain includes
    run_structured: bool = True  # channel pruning at structured_ratio -> int8 TFLite (the fast phone variant)
    run_magnitude: bool = True  # NNCF magnitude pruning at prune_ratio -> int8 TFLite (the small download)
    run_litert: bool = True  # litert-torch: fp32_litert.tflite and NNCF PT2E int8 (nncf_int8, <pruned>_nncf_int8)
    # benchmark (host latency and memory); bench/latency.py and the device bundle's README use the same values
    bench_runs: int = 50  # timed runs per artifact and thread count
    bench_warmup: int = 10  # untimed runs before them
    bench_threads: str = ""  # comma-separated thread counts, e.g. "1,4"; "": 1 and all cores
    # report and bundle
    max_size_mib: float = 0.0  # gate: > 0 fails any int8 .tflite file larger than this (MiB)
    bundle_models: str = "fp32,*int8,*_fallback"  # device bundle: comma-separated globs on the .tflite stems ("*": all)
    bundle_images: int = 1000  # device bundle: test images in eval.npz
    # device bundle: fit's latency pack (latency/: the ops the search times, at budget_size and budget_threads) for
    # device_tests/latency_table.py to time on the device (ResNets with shortcut B)
    bundle_table: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes carried into the manifest (YAML only)

    def model_options(self, num_classes: int, in_channels: int) -> dict:
        options = {
            "num_classes": self.num_classes or num_classes,
            "in_channels": self.in_channels or in_channels,
            "width": self.width,
            "stem": self.stem,
        }
        if self.model.startswith("resnet"):
            options |= {"shortcut": self.shortcut, "zero_init_residual": self.zero_init_residual}
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def thread_counts(self) -> list[int]:
        """bench_threads as a list: the given counts, or 1 and all cores."""
        if not self.bench_threads.strip():
            return sorted({1, os.cpu_count() or 1})
        return sorted({int(t) for t in self.bench_threads.split(",") if t.strip()})


# Named starting points. cpu: what `make demo` trains on a 2-core host, the quick start (the ImageNet stem shrinks
# 32 px to 8 px before the first residual stage; with bf16 ~1,000 images/s, 57 s an epoch): 4 epochs with a weight
# average (91.74% test top-1; 5 epochs: 91.91% for 71 s more), and every fine-tune an epoch of FINETUNE_IMAGES
# training images drawn anew from all 55,000: channel pruning 6 of them at lr 0.05, distilled at temperature 2 (torch
# top-1 91.26% on the 4-epoch weights, 46 s; 4 epochs at lr 0.02 and temperature 4: 90.50%, the gate failed; 8 epochs
# without distillation: 91.29%, 47 s), magnitude pruning none (batch-norm adaptation: 50% sparse at 91.79% on 5-epoch
# weights, 91.96% after 16,384 images of fine-tuning, 20 s more). 28 px was no faster.
# cpu_long: the recipe before it, 10 epochs and whole-split fine-tunes: 92.54% test top-1 (structured50 int8 91.69%)
# in an 18-minute demo on the same host; augmentation slowed a 6-epoch schedule down (89.1% with it). gpu: the small
# stem keeps full resolution (~18x the MACs), the published ResNet-18 Fashion-MNIST setting, whose target is the
# benchmark's >= 94.9% test top-1 (not yet measured here), for one H100 in about 2 minutes.
FINETUNE_IMAGES = 16384
PRESETS: dict[str, dict] = {
    "cpu": {
        "stem": "imagenet",
        "image_size": 32,
        "epochs": 4,
        "min_steps": 800,
        "batch_size": 256,
        "lr": 0.1,
        "augment": False,
        "ema": 0.998,
        "finetune_subset": FINETUNE_IMAGES,
        "structured_epochs": 6,
        "structured_lr": 0.05,
        "kd_temperature": 2.0,
        "prune_epochs": 0,
    },
    "cpu_long": {
        "stem": "imagenet",
        "image_size": 32,
        "epochs": 10,
        "batch_size": 256,
        "lr": 0.1,
        "augment": False,
        "ema": 0.998,
        "finetune_subset": 0,
        "structured_epochs": 2,
        "prune_epochs": 1,
    },
    "gpu": {
        "stem": "small",
        "image_size": 28,
        "epochs": 24,
        "batch_size": 512,
        "lr": 0.4,
        "amp": True,
        "channels_last": True,
    },
    # phone: ImageNet-size input from torchvision weights (weights=PATH or weights=torchvision), no training; needs an
    # ImageFolder (data_root with train/<wnid>/ for calibration, val/<wnid>/ for evaluation, in torchvision's order).
    "phone": {
        "stem": "imagenet",
        "image_size": 224,
        "num_classes": 1000,
        "in_channels": 3,
        "data_source": "imagefolder",
        "epochs": 0,
        "val_size": 0,
        "augment": False,
        "bundle_images": 100,
        "run_structured": False,
        "run_magnitude": False,
    },
}


def resolve_preset(name: str) -> str:
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PRESETS:
        raise EdgeError(f"preset={name}: choose auto, {', '.join(PRESETS)}")
    return name


# --- checked at the door: every value's type and range, before any work starts ------------------------------------

CHOICES = {
    "stem": ("imagenet", "small"),
    "shortcut": ("A", "B"),
    "data_source": ("fashion_mnist", "cifar10", "imagefolder"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("onecycle", "cosine"),
    "device": ("auto", "cpu", "cuda"),
    "quant_preset": ("performance", "mixed"),
    "structured_importance": ("l1", "l2"),
    "prune_method": ("magnitude", "structured"),
    "pt2e_algorithm": ("minmax", "nncf", "nncf_bias", "observers"),
    "fit_search": ("netadapt", "sensitivity"),
    "quant_fallback": ("auto", "off"),
}
# key: (lowest, highest, what the range means); None = unbounded. Bounds are inclusive unless noted in `open_low`.
RANGES = {
    "width": (0.0, 8.0, "a channel multiplier"),
    "epochs": (0, None, "epochs"),
    "min_steps": (0, None, "steps"),
    "batch_size": (1, None, "images"),
    "lr": (0.0, 10.0, "a learning rate"),
    "momentum": (0.0, 1.0, "a momentum"),
    "weight_decay": (0.0, 1.0, "a decay"),
    "warmup_epochs": (0.0, None, "epochs"),
    "label_smoothing": (0.0, 1.0, "a share"),
    "workers": (0, 64, "processes"),
    "train_subset": (0, None, "images"),
    "eval_subset": (0, None, "images"),
    "calib_size": (1, None, "images"),
    "val_size": (0, None, "images"),
    "num_classes": (2, None, "classes"),
    "in_channels": (1, 4, "channels"),
    "max_int8_drop": (0.0, 100.0, "points"),
    "threads": (0, 1024, "threads"),
    "qat_epochs": (0, None, "epochs"),
    "qat_lr": (0.0, 10.0, "a learning rate"),
    "prune_ratio": (0.0, 1.0, "a share"),
    "prune_epochs": (0, None, "epochs"),
    "prune_lr": (0.0, 10.0, "a rate"),
    "structured_ratio": (0.0, 1.0, "a share"),
    "structured_epochs": (0, None, "epochs"),
    "structured_lr": (0.0, 10.0, "a learning rate"),
    "finetune_subset": (0, None, "images"),
    "bench_runs": (1, None, "runs"),
    "bench_warmup": (0, None, "runs"),
    "max_size_mib": (0.0, None, "MiB"),
    "bundle_images": (1, None, "images"),
    "image_size": (1, 4096, "pixels"),
    "max_float_layers": (1, 64, "layers"),
    "explain_images": (1, None, "images"),
    "kd_alpha": (0.0, 1.0, "a weight"),
    "structured_round_to": (1, 256, "channels"),
    "structured_steps": (1, 20, "steps"),
    "kd_temperature": (0.0, 100.0, "a temperature"),
    "random_erasing": (0.0, 1.0, "a share"),
    "ema": (0.0, 1.0, "a decay per step"),
    "budget_ms": (0.0, None, "ms"),
    "budget_speedup": (0.0, None, "times"),
    "budget_mib": (0.0, None, "MiB"),
    "budget_size": (17, 4096, "pixels"),
    "budget_threads": (1, 1024, "threads"),
    "fit_steps": (1, 100, "steps"),
    "fit_levels": (2, 64, "levels"),
    "fit_step_images": (0, None, "images"),
}
OPEN_LOW = {
    "kd_temperature",
    "width",
    "lr",
    "qat_lr",
    "prune_lr",
    "structured_lr",
    "prune_ratio",
    "structured_ratio",
}  # > low
OPEN_HIGH = {"prune_ratio", "structured_ratio", "momentum", "ema"}  # < high
# The stem and the three strided stages downsample 16x before the last stage (the small stem: 4x); below this the
# last stage sees a single pixel and the model trains at chance.
MIN_IMAGE_SIZE = {"imagenet": 17, "small": 5}
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _check_type(key: str, hint, value):
    """A YAML value (already typed) against the field's type: an int may stand for a float, nothing else converts."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise EdgeError(f"{key}={value!r}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def validate(cfg) -> None:
    """One-line errors for values out of range, before any data is read or any model is built."""
    from models import MODELS

    if cfg.model not in MODELS:
        raise EdgeError(f"model={cfg.model}: unknown model; choose {', '.join(MODELS)}")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise EdgeError(f"{key}={getattr(cfg, key)}: choose {' | '.join(allowed)}")
    for key, (low, high, what) in RANGES.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        too_low = low is not None and (value <= low if key in OPEN_LOW else value < low)
        too_high = high is not None and (value >= high if key in OPEN_HIGH else value > high)
        if too_low or too_high or value != value:  # the last: NaN
            lo = "" if low is None else f"{low:g} {'<' if key in OPEN_LOW else '<='} "
            hi = "" if high is None else f" {'<' if key in OPEN_HIGH else '<='} {high:g}"
            raise EdgeError(f"{key}={value}: expected {lo}{key}{hi} ({what})")
    if cfg.epochs == 0 and not cfg.weights:
        raise EdgeError(
            "epochs=0 skips training and needs weights=PATH (a torchvision state_dict) or weights=torchvision"
        )
    low = MIN_IMAGE_SIZE[cfg.stem]
    if cfg.image_size < low:
        raise EdgeError(
            f"image_size={cfg.image_size}: stem={cfg.stem} leaves the last stage a single pixel below "
            f"{low} px; use image_size >= {low}" + (" or stem=small" if cfg.stem == "imagenet" else "")
        )
    if cfg.epochs > 0 and cfg.val_size == 0:
        raise EdgeError(
            f"val_size=0: training ({cfg.epochs} epochs) picks its best epoch and checks it learned on "
            "validation images; use val_size >= 1 (or leave it unset: 10%, at most 5,000), or epochs=0"
        )
    for key in ("name", "runs_dir"):
        value = getattr(cfg, key)
        if not value or (key == "name" and (not set(value) <= NAME_CHARS or set(value) == {"."})):
            raise EdgeError(f"{key}={value!r}: expected a non-empty folder name (letters, digits, . _ -)")
    budgets = [f"{k}={getattr(cfg, k):g}" for k in BUDGET_KEYS if getattr(cfg, k)]
    if len(budgets) > 1:
        raise EdgeError(f"{' '.join(budgets)}: give one budget (budget_ms, budget_speedup or budget_mib)")
    if cfg.latency_table and budgets and not cfg.budget_ms:
        raise EdgeError(
            f"latency_table={cfg.latency_table}: a device's table is for budget_ms (ms on that device), not "
            f"{budgets[0].split('=')[0]}"
        )
    try:
        threads = cfg.thread_counts
    except ValueError:
        threads = []
    if not threads or threads[0] < 1:
        raise EdgeError(f"bench_threads={cfg.bench_threads}: expected comma-separated thread counts >= 1, e.g. 1,4")
