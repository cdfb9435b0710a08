"""One typed config: plain values with a comment each, loaded from YAML, overridden by key=value, saved resolved."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgeError


@dataclass
class Config:
    name: str = "default"  # run name: outputs go to runs/<name>/
    # model (models.build_model)
    model: str = "resnet18"  # resnet18/34/50/101/152 or mobilenet_v2
    width: float = 1.0  # channel width multiplier
    stem: str = "imagenet"  # "imagenet" (7x7/2 conv + max-pool) or "small" (3x3/1 conv, no pool)
    shortcut: str = "B"  # "B": 1x1 projection where the shape changes; "A": zero-padding, no parameters
    zero_init_residual: bool = False  # start each residual branch at zero (last BN gamma = 0)
    num_classes: int | None = None  # None: take it from the data set
    in_channels: int | None = None  # None: take it from the data set
    # data (pipeline.data.load_data)
    data_source: str = "fashion_mnist"  # fashion_mnist | cifar10 | imagefolder
    data_root: str | None = None  # None: the Debian package's /usr/share/datasets/fashion-mnist
    image_size: int = 28  # model input is image_size x image_size
    val_size: int = 5000  # images carved from the training split for validation
    calib_size: int = 300  # training images for int8 calibration
    seed: int = 0
    # training (pipeline.train); `preset` fills these first, then the YAML file, then key=value
    preset: str = "auto"  # cpu | gpu | phone | auto (gpu when CUDA is present); the resolved config records which
    epochs: int = 6  # 0: no training, the model is `weights` as given (preset=phone)
    batch_size: int = 256  # global batch, split across DDP processes
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.2  # peak learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4  # not applied to BN parameters and biases
    schedule: str = "onecycle"  # onecycle | cosine (linear warm-up, then cosine to zero)
    warmup_epochs: float = 1.0  # cosine only
    label_smoothing: float = 0.1
    augment: bool = True  # small images: 4 px pad-and-crop + flip; imagefolder: random resized crop + flip
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    amp: bool = True  # CUDA only: bf16 autocast where supported, else fp16 with a grad scaler
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (CUDA: worth it for long runs; first epoch pays compile time)
    workers: int = 4  # loader processes for imagefolder decoding (in-memory data sets use none)
    train_subset: int = 0  # > 0: train on that many images of the training split (tests, quick looks)
    eval_subset: int = 0  # > 0: validate and test on that many images
    weights: str | None = None  # start from a torchvision-format state_dict file (or a resnet-edge checkpoint);
    # "torchvision": the ImageNet weights torchvision publishes for `model`, from torch's hub cache (downloads once)
    resume: bool = False  # continue runs/<name>/train/last.pt to the same end state
    runs_dir: str = "runs"  # parent of runs/<name>/
    # export / convert / evaluate
    dynamic_batch: bool = False  # ONNX with a dynamic batch axis (TFLite files always have batch 1)
    max_int8_drop: float = 1.0  # gate: top-1 drop of any int8 / dynamic-range artifact vs fp32, in points
    threads: int = 0  # inference threads for evaluation (0: all cores)
    # quantization/ (NNCF PTQ and QAT, NNCF magnitude pruning, torch-pruning structured pruning)
    quant_preset: str = "performance"  # NNCF preset: performance (symmetric) | mixed (asymmetric activations)
    ignored_scope: str = ""  # comma-separated node names NNCF leaves in float
    qat: bool = False  # quantize: also run quantization-aware fine-tuning
    qat_epochs: int = 1
    qat_lr: float = 0.001
    prune_ratio: float = 0.5  # NNCF global magnitude pruning: share of weights set to zero
    prune_epochs: int = 1  # fine-tuning epochs under the pruning schedule; 0: batch-norm adaptation only
    prune_lr: float = 0.01
    structured_ratio: float = 0.5  # torch-pruning: share of channels removed per prunable layer
    structured_importance: str = "l1"  # l1 | l2 filter magnitude
    structured_epochs: int = 2
    structured_lr: float = 0.02
    finetune_subset: int = 0  # > 0: fine-tuning epochs see that many training images (0: the whole split)
    # run (pipeline.run): which optional stages the chain includes
    run_structured: bool = True  # channel pruning at structured_ratio -> int8 TFLite (the fast phone variant)
    run_magnitude: bool = True  # NNCF magnitude pruning at prune_ratio -> int8 TFLite (the small download)
    bench_runs: int = 50  # timed runs per artifact and thread count, after 10 warm-up runs
    max_size_mib: float = 0.0  # gate: > 0 fails any int8 .tflite file larger than this (MiB)
    bundle_models: str = "fp32,*int8"  # device bundle: comma-separated globs on the .tflite stems ("*": all)
    bundle_images: int = 1000  # device bundle: test images in eval.npz
    extra: dict = field(default_factory=dict)  # free-form notes carried into the manifest

    def model_options(self, num_classes: int, in_channels: int) -> dict:
        options = {"num_classes": self.num_classes or num_classes, "in_channels": self.in_channels or in_channels,
                   "width": self.width, "stem": self.stem}
        if self.model.startswith("resnet"):
            options |= {"shortcut": self.shortcut, "zero_init_residual": self.zero_init_residual}
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# Named starting points. cpu: what `make demo` trains on a 2-core host in under 10 minutes (the ImageNet stem shrinks
# 32 px to 8 px before the first residual stage, ~750 images/s; measured 92.3% test top-1 in 7.2 min; augmentation
# slows a 6-epoch schedule down: 89.1% with it); gpu: the small stem keeps full resolution (~18x the MACs), the
# published ResNet-18 Fashion-MNIST setting (94-95%), for one H100 in about 2 minutes.
PRESETS: dict[str, dict] = {
    "cpu": {"stem": "imagenet", "image_size": 32, "epochs": 6, "batch_size": 256, "lr": 0.1, "augment": False},
    "gpu": {"stem": "small", "image_size": 28, "epochs": 24, "batch_size": 512, "lr": 0.4, "amp": True,
            "channels_last": True},
    # phone: ImageNet-size input from torchvision weights (weights=PATH or weights=torchvision), no training; needs an
    # ImageFolder (data_root with train/<wnid>/ for calibration, val/<wnid>/ for evaluation, in torchvision's order).
    "phone": {"stem": "imagenet", "image_size": 224, "num_classes": 1000, "in_channels": 3,
              "data_source": "imagefolder", "epochs": 0, "val_size": 0, "augment": False, "bundle_images": 100,
              "run_structured": False, "run_magnitude": False},
}


def save_config(cfg: Config, path: Path) -> Path:
    """The resolved config, as YAML (JSON, itself valid YAML, where PyYAML is absent: stock-PyTorch machines)."""
    from .checkpoint import atomic_write

    try:
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    except ImportError:
        import json

        text = json.dumps(cfg.to_dict(), indent=2)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def resolve_preset(name: str) -> str:
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PRESETS:
        raise EdgeError(f"preset={name}: choose auto, {', '.join(PRESETS)}")
    return name


# What a training result depends on: run's cache key for the train stage, and (less the runtime-only keys in
# RESUMABLE_CHANGES) what a resume must keep as it was.
TRAIN_KEYS = frozenset({
    "model", "width", "stem", "shortcut", "zero_init_residual", "num_classes", "in_channels", "data_source",
    "data_root", "image_size", "val_size", "seed", "epochs", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "augment", "device", "amp", "channels_last",
    "compile", "train_subset", "eval_subset", "weights"})
RESUMABLE_CHANGES = frozenset({"device", "amp", "channels_last", "compile", "data_root", "weights", "eval_subset"})


def parse_bool(name: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise EdgeError(f"{name}={text}: expected bool (true/false)")


def _coerce(name: str, hint, text: str):
    """Turn the text of key=value into the field's type; name the key and the expected type when it does not fit."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if text.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            return parse_bool(name, text)
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        raise EdgeError(f"{name}={text}: expected {hint.__name__}") from None
    raise EdgeError(f"{name}: cannot be set from the command line")


def parse_overrides(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise EdgeError(f"{arg!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, str] | None = None, cls=Config):
    """YAML file (optional) then key=value overrides; unknown keys are errors, never silently dropped."""
    import yaml

    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EdgeError(f"{path}: config file not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise EdgeError(f"{path}: expected a mapping of key: value")
        values.update(loaded)
    if "preset" in {f.name for f in dataclasses.fields(cls)}:
        preset = resolve_preset(str((overrides or {}).get("preset", values.get("preset", "auto"))))
        values = {**PRESETS[preset], **values, "preset": preset}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, text in (overrides or {}).items():
        if key not in known:
            raise EdgeError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))}")
        if key != "preset":  # already resolved above
            values[key] = _coerce(key, hints[key], text)
    unknown = set(values) - known
    if unknown:
        raise EdgeError(f"{path}: unknown config keys {sorted(unknown)}; valid keys: {', '.join(sorted(known))}")
    return cls(**values)
