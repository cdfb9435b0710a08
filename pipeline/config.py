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
    extra: dict = field(default_factory=dict)  # free-form notes carried into the manifest

    def model_options(self, num_classes: int, in_channels: int) -> dict:
        options = {"num_classes": self.num_classes or num_classes, "in_channels": self.in_channels or in_channels,
                   "width": self.width, "stem": self.stem}
        if self.model.startswith("resnet"):
            options |= {"shortcut": self.shortcut, "zero_init_residual": self.zero_init_residual}
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, hint, text: str):
    """Turn the text of key=value into the field's type; name the key and the expected type when it does not fit."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if text.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
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
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, text in (overrides or {}).items():
        if key not in known:
            raise EdgeError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))}")
        values[key] = _coerce(key, hints[key], text)
    unknown = set(values) - known
    if unknown:
        raise EdgeError(f"{path}: unknown config keys {sorted(unknown)}; valid keys: {', '.join(sorted(known))}")
    return cls(**values)
