"""What fit's files and tables are keyed by, shared by the fit stage, the bundle (its latency pack) and bench/fit.py:
which models the search can prune, the key a table's calibration holds for, a checkpoint's files at the budget's
size, and the pack a device times (pipeline.engine.device_table)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np


def fittable(cfg) -> bool:
    """A model the search can prune: a ResNet with projection shortcuts (its table holds plain convs)."""
    return cfg.model.startswith("resnet") and cfg.shortcut == "B"


def model_key(cfg) -> str:
    """What a table's whole-file calibration holds for: the architecture and the search's grid (not the weights)."""
    return (
        f"{cfg.model} width={cfg.width:g} stem={cfg.stem} in={cfg.in_channels} classes={cfg.num_classes} "
        f"levels={cfg.fit_levels} round_to={cfg.structured_round_to}"
    )


def whole_at_size(ctx, checkpoint: Path, stem: str, variants: tuple[str, ...]) -> dict[str, Path]:
    """A checkpoint's files at the budget's size in fit/ (exported, parity-checked, converted by onnx2tf)."""
    from ..data import preprocess
    from .onnx_to_tflite import tflite_at_size

    size = ctx.cfg.budget_size
    x = preprocess(np.asarray(ctx.data.calibration.images[:4]), ctx.data.norm, size)
    onnx = ctx.layout.path(f"fit/{stem}_{size}px.onnx")
    return tflite_at_size(checkpoint, onnx, variants, ctx.calib_u8[:64], ctx.data.norm, size, x)


def latency_pack(ctx, folder: Path) -> Path:
    """The bundle's latency/ folder (pipeline.engine.device_table.write_pack): every op the search can ask for at the
    budget's size, and the dense and fastest-plan files at that size (fit's own, when it made them from this
    checkpoint and grid), for device_tests/latency_table.py to time on the device."""
    import torch

    from quantization.channels import channel_groups, op_shapes, plan_shapes, prune_to

    from .checkpoint import derived_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
    from .device_table import write_pack
    from .fit_search import grid_shapes, levels

    layout, cfg, size = ctx.layout, ctx.cfg, ctx.cfg.budget_size
    best = ctx.require(layout.best, "train")
    parent = load_checkpoint(best)
    dense = model_from_checkpoint(parent).eval()
    example = torch.from_numpy(ctx.eval_set.x[:1])
    groups = channel_groups(dense, example)
    grid = {g.name: levels(g.channels, cfg.structured_round_to, cfg.fit_levels) for g in groups}
    shapes = op_shapes(dense, size, parent["model_options"]["in_channels"])
    lowest = {g.name: grid[g.name][-1] for g in groups}
    files = {}
    for stem, plan in (("dense", None), ("lowest", lowest)):
        made, ckpt = layout.path(f"fit/{stem}_{size}px_int8.tflite"), layout.path(f"fit/{stem}.pt")
        source = best if plan is None else ckpt
        fresh = made.is_file() and source.is_file() and made.stat().st_mtime >= source.stat().st_mtime
        if plan is not None and fresh:  # fit's fastest plan, if it is this grid's
            fresh = load_checkpoint(ckpt).get("compression", {}).get("plan") == plan and (
                ckpt.stat().st_mtime >= best.stat().st_mtime
            )
        if not fresh:
            if plan is not None:
                cut = prune_to(copy.deepcopy(dense), example, plan)
                save_checkpoint(derived_checkpoint(parent, cut, compression={"plan": plan}), ckpt)
            made = whole_at_size(ctx, source, stem, ("int8",))["int8"]
        files[made] = shapes if plan is None else plan_shapes(shapes, groups, plan)
    return write_pack(folder, grid_shapes(shapes, groups, grid), files, model_key(cfg), size, cfg.budget_threads)
