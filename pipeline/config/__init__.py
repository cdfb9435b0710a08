"""The config: schema (the typed keys, presets, checks), load (YAML + key=value, saved resolved, `open_run`), keys
(the groups of keys stages share in their cache keys)."""

from .keys import RESUMABLE_CHANGES, TRAIN_KEYS
from .load import load_config, open_run, parse_bool, parse_overrides, read_yaml, run_folder, save_config
from .schema import MIN_IMAGE_SIZE, PRESETS, Config, resolve_preset, validate

__all__ = [
    "Config",
    "PRESETS",
    "MIN_IMAGE_SIZE",
    "TRAIN_KEYS",
    "RESUMABLE_CHANGES",
    "load_config",
    "open_run",
    "parse_bool",
    "parse_overrides",
    "read_yaml",
    "run_folder",
    "save_config",
    "resolve_preset",
    "validate",
]
