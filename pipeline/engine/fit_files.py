"""What fit's files and tables are keyed by, shared by the fit stage, the bundle (its latency pack) and bench/fit.py:
which models the search can prune, the key a table's calibration holds for, a checkpoint's files at the budget's
size, and the pack a device times (pipeline.engine.device_table)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np


def fittable(cfg) -> bool:
    """A model the search can prune: a ResNet with projection shortcuts (its table holds plain convs)."""
    return cfg.model.startswith("resnet") and cfg.shortcut == "B"


def model_key(cfg, options: dict) -> str:
    """What a table's whole-file calibration holds for: the architecture as the checkpoint built it (`options`: its
    model_options, the data's channels and classes where the config left them to the data) and the search's grid
    (not the weights)."""
    return (
        f"{cfg.model} width={options['width']:g} stem={options['stem']} in={options['in_channels']} "
        f"classes={options['num_classes']} levels={cfg.fit_levels} round_to={cfg.structured_round_to}"
    )


def whole_at_size(ctx, checkpoint: Path, stem: str, variants: tuple[str, ...]) -> dict[str, Path]:
    """A checkpoint's files at the budget's size in fit/ (exported, parity-checked, converted by onnx2tf)."""
    from ..data import preprocess
    from .onnx_to_tflite import tflite_at_size

    size = ctx.cfg.budget_size
    x = preprocess(np.asarray(ctx.data.calibration.images[:4]), ctx.data.norm, size)
    onnx = ctx.layout.path(f"fit/{stem}_{size}px.onnx")
    return tflite_at_size(checkpoint, onnx, variants, ctx.calib_u8[:64], ctx.data.norm, size, x)


@dataclasses.dataclass
class Setup:
    """What every user of the search starts from: the trained checkpoint, its dense model, an example input, the
    channel groups, each group's allowed counts (largest first), the op shapes at the budget's size, the fastest
    plan."""

    best: Path
    parent: dict
    dense: object
    example: object
    groups: list
    grid: dict[str, list[int]]
    shapes: list
    lowest: dict[str, int]
    key: str  # model_key: what the latency table's calibration of this model is filed under


def setup(ctx) -> Setup:
    """The run's Setup (the fit stage, the bundle's latency pack, the tests alike)."""
    import torch

    from quantization.channels import channel_groups, op_shapes

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .fit_search import levels

    cfg = ctx.cfg
    best = ctx.require(ctx.layout.best, "train")
    parent = load_checkpoint(best)
    dense = model_from_checkpoint(parent).eval()
    example = torch.from_numpy(ctx.examples[:1])
    groups = channel_groups(dense, example)
    grid = {g.name: levels(g.channels, cfg.structured_round_to, cfg.fit_levels) for g in groups}
    shapes = op_shapes(dense, cfg.budget_size, parent["model_options"]["in_channels"])
    lowest = {g.name: grid[g.name][-1] for g in groups}
    key = model_key(cfg, parent["model_options"])
    return Setup(best, parent, dense, example, groups, grid, shapes, lowest, key)


def lowest_checkpoint(ctx, s: Setup) -> Path:
    """fit/lowest.pt: the dense model pruned to the fastest plan (every group at its fewest channels)."""
    from quantization.channels import prune_to

    from .checkpoint import derived_checkpoint, save_checkpoint

    cut = prune_to(copy.deepcopy(s.dense), s.example, s.lowest)
    return save_checkpoint(
        derived_checkpoint(s.parent, cut, compression={"plan": s.lowest}), ctx.layout.path("fit/lowest.pt")
    )


def latency_pack(ctx, folder: Path) -> Path:
    """The bundle's latency/ folder (pipeline.engine.device_table.write_pack): every op the search can ask for at the
    budget's size, and the dense and fastest-plan files at that size (fit's own, when it made them from this
    checkpoint and grid), for device_tests/latency_table.py to time on the device."""
    from quantization.channels import plan_shapes

    from .checkpoint import load_checkpoint
    from .device_table import write_pack
    from .fit_search import grid_shapes

    layout, cfg, size = ctx.layout, ctx.cfg, ctx.cfg.budget_size
    s = setup(ctx)
    files = {}
    for stem, plan in (("dense", None), ("lowest", s.lowest)):
        made, ckpt = layout.path(f"fit/{stem}_{size}px_int8.tflite"), layout.path(f"fit/{stem}.pt")
        source = s.best if plan is None else ckpt
        fresh = made.is_file() and source.is_file() and made.stat().st_mtime >= source.stat().st_mtime
        if plan is not None and fresh:  # fit's fastest plan, if it is this grid's
            fresh = load_checkpoint(ckpt).get("compression", {}).get("plan") == plan and (
                ckpt.stat().st_mtime >= s.best.stat().st_mtime
            )
        if not fresh:
            if plan is not None:
                lowest_checkpoint(ctx, s)
            made = whole_at_size(ctx, source, stem, ("int8",))["int8"]
        files[made] = s.shapes if plan is None else plan_shapes(s.shapes, s.groups, plan)
    return write_pack(folder, grid_shapes(s.shapes, s.groups, s.grid), files, s.key, size, cfg.budget_threads)
