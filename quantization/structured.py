"""Structured (filter) pruning with torch-pruning's dependency graph: whole channels leave every coupled layer
(conv, BN, the residual add and its shortcut), so MACs, file size and latency really shrink."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from pipeline.core.errors import EdgeError

IMPORTANCE = {"l1": 1, "l2": 2}


def prune_channels(
    model: nn.Module,
    ratio: float,
    example: torch.Tensor,
    importance: str = "l1",
    round_to: int = 1,
    steps: int = 1,
    between: Callable[[int], None] | None = None,
) -> dict:
    """Remove `ratio` of the channels of every prunable layer (the classifier's outputs stay), in place, keeping
    channel counts multiples of `round_to` (int8 kernels favour multiples of 8). With `steps` > 1 the ratio is reached
    in that many equal steps (torch-pruning's iterative_steps), `between(step)` (fine-tuning) running after each.
    Returns the parameter and convolution output-channel counts before and after, and the share of channels kept."""
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise EdgeError(f"structured_ratio={ratio}: must be strictly between 0 and 1")
    if importance not in IMPORTANCE:
        raise EdgeError(f"structured_importance={importance}: choose l1 or l2 (filter weight magnitude)")
    model.eval()
    before = sum(p.numel() for p in model.parameters())
    channels_before = _conv_channels(model)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)]
    magnitude = tp.importance.MagnitudeImportance(p=IMPORTANCE[importance])
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=magnitude,
        pruning_ratio=ratio,
        ignored_layers=classifier,
        round_to=round_to if round_to > 1 else None,
        iterative_steps=steps,
    )
    for step in range(steps):
        model.eval()
        pruner.step()
        if between is not None:
            between(step)
    after = sum(p.numel() for p in model.parameters())
    channels_after = _conv_channels(model)
    print(
        f"  structured pruning {ratio:.0%} ({importance}): params {before:,} -> {after:,}, conv channels "
        f"{channels_before:,} -> {channels_after:,}",
        file=sys.stderr,
    )
    return {
        "params_before": before,
        "params_after": after,
        "channels_before": channels_before,
        "channels_after": channels_after,
        "channels_kept": channels_after / channels_before,
    }


def _conv_channels(model: nn.Module) -> int:
    """Output channels of every convolution: what channel pruning removes (parameters fall roughly as its square)."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
