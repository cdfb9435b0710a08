"""Where a config comes from: YAML, then key=value overrides; saved resolved beside the run; and one way to open
an existing run (`open_run`) that the CLI, compare and the bench scripts share."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path

from ..core.artifacts import atomic_write_text
from ..core.errors import EdgeError
from ..core.layout import Layout
from .keys import BUDGET_KEYS, BUDGET_UNITS
from .schema import PRESETS, Config, _check_type, resolve_preset, validate


def save_config(cfg: Config, path: Path) -> Path:
    """The resolved config, as YAML (JSON, itself valid YAML, where PyYAML is absent: stock-PyTorch machines)."""
    try:
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    except ImportError:
        import json

        text = json.dumps(cfg.to_dict(), indent=2)
    return atomic_write_text(path, text)


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
    except ValueError as e:
        raise EdgeError(f"{name}={text}: expected {hint.__name__}") from e
    raise EdgeError(f"{name}: cannot be set from the command line (use a YAML file)")


def parse_overrides(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            raise EdgeError(f"{arg!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def read_yaml(path: Path) -> dict:
    """A YAML mapping; a syntax error names the file and the line."""
    import yaml

    if not path.is_file():
        raise EdgeError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise EdgeError(f"{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from e
    loaded = loaded or {}
    if not isinstance(loaded, dict):
        raise EdgeError(f"{path}: expected a mapping of key: value, got a {type(loaded).__name__}")
    return loaded


PATH_KEYS = ("runs_dir", "data_root", "weights", "latency_table")  # the keys that name a file or folder
NOT_PATHS = {"weights": ("torchvision",)}  # a path key's values that name no file


def resolve_paths(values: dict, base: Path) -> dict:
    """values with each path key made absolute, as the user meant it where it was typed: a leading ~ is the home
    folder (a YAML file has no shell to expand it), a relative path is relative to `base` (the current folder for
    key=value, the YAML file's folder for a YAML file). A run's config.yaml then names the same files from any
    folder. Empty values and the names that are not files (weights=torchvision) stay as they are."""

    def resolve(key: str, v):
        if key not in PATH_KEYS or not isinstance(v, str) or not v.strip() or v in NOT_PATHS.get(key, ()):
            return v
        return str((base / os.path.expanduser(v)).resolve())

    return {k: resolve(k, v) for k, v in values.items()}


def load_config(path: str | Path | None = None, overrides: dict[str, str] | None = None, cls=Config):
    """YAML file (optional) then key=value overrides; unknown keys and wrong types are errors, never dropped."""
    values: dict = {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        unknown = sorted(set(map(str, loaded)) - known)
        if unknown:
            raise EdgeError(f"{path}: unknown config keys {unknown}; valid keys: {', '.join(sorted(known))}")
        typed = {k: _check_type(k, hints[k], v) for k, v in loaded.items()}
        values.update(resolve_paths(typed, path.resolve().parent))
    if "preset" in known:
        preset = resolve_preset(str((overrides or {}).get("preset", values.get("preset", "auto"))))
        values = {**PRESETS[preset], **values, "preset": preset}
    given = set(overrides or {})
    if given & set(BUDGET_KEYS):  # one budget: naming one on top of a file (a run's saved one) replaces the file's
        values.update({k: 0.0 for k in set(BUDGET_KEYS) - given})
    typed = {}
    for key, text in (overrides or {}).items():
        if key not in known:
            raise EdgeError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))}")
        if key != "preset":  # already resolved above
            typed[key] = _coerce(key, hints[key], text)
        if key in BUDGET_KEYS and not typed[key] > 0:  # 0 would read as "no budget" and clear the run's saved one
            raise EdgeError(f"{key}={text}: expected {key} > 0 ({BUDGET_UNITS[key]}); a budget is a positive number")
    values.update(resolve_paths(typed, Path.cwd()))
    cfg = cls(**values)
    if cls is Config:
        validate(cfg)
    return cfg


def open_run(run_dir: str | Path | None = None, overrides: dict[str, str] | None = None) -> Config:
    """The saved config of an existing run, pointed at where that run's folder is now: the folder `run_dir`, or the one
    overrides' runs_dir=/name= name (runs/default by default); the other overrides on top. Every command that reads a
    run it did not make (report, bundle, compare, the bench scripts) opens it here."""
    overrides = dict(overrides or {})
    root = Path(run_dir) if run_dir is not None else run_folder(overrides)
    layout = Layout(root)
    if not layout.config.is_file():
        raise EdgeError(f"{root}: not a run directory (no config.yaml); run `resnet-edge run` first")
    return load_config(layout.config, {**overrides, "runs_dir": str(layout.root.parent), "name": layout.root.name})


def run_folder(overrides: dict[str, str]) -> Path:
    """The run folder that key=value overrides name: <runs_dir>/<name>, runs/default by default."""
    return Path(overrides.get("runs_dir", "runs")) / overrides.get("name", "default")
