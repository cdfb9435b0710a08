"""The search behind `resnet-edge fit`: NetAdapt's greedy loop (Yang et al., 2018) on a measured latency table.

Each iteration lowers the target by one step and asks every channel group for the smallest cut (one of its channel
levels) whose predicted cost meets it; every such proposal is pruned from the current model, its batch-norm statistics
re-estimated on training images (adaptive BN: EagleEye, Li et al., 2020, showed that it ranks pruned candidates as
fine-tuning would, at a fraction of the cost) and scored on the validation split (never the test split); the best is
kept and fine-tuned briefly with distillation from the dense model before the next iteration. The loop stops when
the predicted cost meets the budget.

`cost(plan)` is the caller's: a latency table's prediction (ms) or the predicted file size (MiB).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from quantization.channels import Group, prune_to

from .latency_table import entry_key


def levels(channels: int, round_to: int, count: int) -> list[int]:
    """A group's channel counts a plan may give it, largest first: `count` even steps of its channels, each a multiple
    of round_to (at least round_to)."""
    step = max(1, round_to)
    found = {max(step, round(channels * i / count / step) * step) for i in range(1, count + 1)}
    return sorted({min(c, channels) for c in found} | {channels}, reverse=True)


def adapt_bn(model: nn.Module, images: np.ndarray, batch: int = 128) -> nn.Module:
    """Batch-norm running statistics re-estimated on `images` (a cumulative average), the weights untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(torch.from_numpy(images[i : i + batch]))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def top1(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 (%) of a torch model on preprocessed images."""
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            right += int((model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy() == y[i : i + batch]).sum())
    return 100.0 * right / len(x)


@dataclass
class Result:
    model: nn.Module
    plan: dict[str, int]
    cost: float
    trace: list[dict] = field(default_factory=list)
    feasible: bool = True
    fastest: float | None = None  # the cost of every group at its lowest level: what the search could reach at best


@dataclass
class Space:
    """What every search reads: the channel groups, each group's allowed counts (`grid`, largest first), a plan's
    cost, an example input (to trace the pruning), images to re-estimate batch norm on, the validation split."""

    groups: list[Group]
    grid: dict[str, list[int]]
    cost: Callable[[dict[str, int]], float]
    example: torch.Tensor
    bn_images: np.ndarray
    val: tuple[np.ndarray, np.ndarray]

    def score(self, model: nn.Module, plan: dict[str, int]) -> tuple[nn.Module, float]:
        """`model` pruned to `plan` in place, batch norm re-estimated: (it, its val top-1)."""
        pruned = adapt_bn(prune_to(model, self.example, plan), self.bn_images)
        return pruned, top1(pruned, *self.val)


def search(
    model: nn.Module,
    space: Space,
    target: float,
    tune: Callable[[nn.Module], None] | None = None,
    steps: int = 6,
    plan: dict[str, int] | None = None,
    log=print,
) -> Result:
    """Greedy NetAdapt from `model` (pruned to `plan` already, if given) until cost(plan) <= target, in about
    `steps` iterations; `tune(model)`: the short fine-tune after each iteration. An infeasible target (even every
    group at its lowest level costs more) returns at once with feasible=False and the fastest reachable cost."""
    groups, grid, cost = space.groups, space.grid, space.cost
    plan = dict(plan or {g.name: g.channels for g in groups})
    lowest = {g.name: grid[g.name][-1] for g in groups}
    fastest = cost(lowest)
    current = cost(plan)
    result = Result(model, plan, current, fastest=fastest)
    if current <= target:
        return result
    if fastest > target:
        result.feasible = False
        return result
    step = (current - target) / max(1, steps)
    while current > target:
        started = time.perf_counter()
        want = max(current - step, target)
        proposals = []
        for group in groups:
            cuts = [(c, cost({**plan, group.name: c})) for c in grid[group.name] if c < plan[group.name]]
            # its smallest cut that meets the step; else its deepest, if that saves at all
            reach = next((cut for cut in cuts if cut[1] <= want), cuts[-1] if cuts else None)
            if reach is not None and reach[1] < current:
                proposals.append((group.name, *reach))
        if not proposals:  # cannot happen while fastest <= target < current; kept as a stop
            break
        meets = [p for p in proposals if p[2] <= want]
        scored, chosen = [], None
        for name, keep, predicted in meets or proposals:
            candidate, acc = space.score(copy.deepcopy(model), {name: keep})
            scored.append((acc, -predicted, name, keep, predicted))
            if max(scored) is scored[-1]:  # the best so far: the only candidate kept in memory
                chosen = candidate
        acc, _, name, keep, predicted = max(scored)
        model = chosen
        plan[name], current = keep, predicted
        if tune is not None:
            tune(model)
            acc_tuned = top1(model, *space.val)
        else:
            acc_tuned = acc
        entry = {
            "iteration": len(result.trace) + 1,
            "group": name,
            "channels": keep,
            "predicted": current,
            "val_top1": acc,
            "val_top1_tuned": acc_tuned,
            "proposals": [{"group": s[2], "channels": s[3], "predicted": s[4], "val_top1": s[0]} for s in scored],
            "plan": dict(plan),
            "seconds": time.perf_counter() - started,
        }
        result.trace.append(entry)
        log(
            f"  fit step {entry['iteration']}: {name} -> {keep} channels, predicted {current:.3f}, "
            f"val top-1 {acc:.2f}% ({acc_tuned:.2f}% tuned), {len(scored)} proposals, {entry['seconds']:.0f} s"
        )
    result.model, result.plan, result.cost = model, plan, current
    return result


def sensitivity(model: nn.Module, space: Space, target: float, log=print) -> Result:
    """AIMET-style: every cut of every group scored alone on the dense model once (adaptive BN, val top-1), then one
    accuracy level for all: each group takes its fewest channels that lose at most `drop` points alone, and `drop` is
    the smallest (bisected over the scored drops) whose plan's cost meets `target`. No fine-tune between: the caller's
    final fine-tune is the only one. Same Result as `search` (one trace entry; its proposals are the scored cuts)."""
    started, groups, grid, cost = time.perf_counter(), space.groups, space.grid, space.cost
    plan = {g.name: g.channels for g in groups}
    lowest = {g.name: grid[g.name][-1] for g in groups}
    fastest, current = cost(lowest), cost(plan)
    if current <= target or fastest > target:
        return Result(model, plan, current, feasible=fastest <= target or current <= target, fastest=fastest)
    base = top1(model, *space.val)
    scored = [
        {
            "group": g.name,
            "channels": c,
            "predicted": cost({**plan, g.name: c}),
            "val_top1": space.score(copy.deepcopy(model), {g.name: c})[1],
        }
        for g in groups
        for c in grid[g.name][1:]
    ]

    def at(drop: float) -> dict[str, int]:  # each group's fewest channels losing at most `drop` points alone
        return {
            g.name: min(
                (s["channels"] for s in scored if s["group"] == g.name and base - s["val_top1"] <= drop),
                default=g.channels,
            )
            for g in groups
        }

    drops = sorted({max(0.0, base - s["val_top1"]) for s in scored})
    lo, hi = 0, len(drops) - 1  # at(drops[-1]) is every group at its lowest: meets target (fastest <= target)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if cost(at(drops[mid])) <= target else (mid + 1, hi)
    plan = at(drops[lo])
    model, acc = space.score(model, plan)
    predicted = cost(plan)
    entry = {
        "iteration": 1,
        "group": f"every group <= {drops[lo]:.2f} points alone",
        "drop": drops[lo],
        "channels": sum(plan.values()),
        "predicted": predicted,
        "val_top1": acc,
        "val_top1_tuned": acc,
        "proposals": scored,
        "plan": dict(plan),
        "seconds": time.perf_counter() - started,
    }
    log(
        f"  fit sensitivity: {len(scored)} cuts scored, every group at <= {drops[lo]:.2f} points alone -> "
        f"predicted {predicted:.3f}, val top-1 {acc:.2f}%, {entry['seconds']:.0f} s"
    )
    return Result(model, plan, predicted, [entry], fastest=fastest)


def uniform(model: nn.Module, space: Space) -> list[dict]:
    """One ratio for every group, at each level of the grid: predicted cost and val top-1 after adaptive BN (no
    fine-tune), the baseline the search's candidates are plotted against."""
    points, grid, groups = [], space.grid, space.groups
    for i in range(1, max(len(v) for v in grid.values())):
        plan = {g.name: grid[g.name][min(i, len(grid[g.name]) - 1)] for g in groups}
        kept = sum(plan.values()) / sum(g.channels for g in groups)
        acc = space.score(copy.deepcopy(model), plan)[1]
        points.append({"channels_kept": kept, "predicted": space.cost(plan), "val_top1": acc, "plan": plan})
    return points


def grid_shapes(shapes, groups: list[Group], grid: dict[str, list[int]]) -> list:
    """Every op shape any plan on `grid` can give: what a latency table for the search must hold."""
    out_of = {conv: g.name for g in groups for conv in g.outputs}
    in_of = {conv: g.name for g in groups for conv in g.inputs}
    found = []
    for s in shapes:
        if s.op == "conv":
            ins, outs = grid.get(in_of.get(s.name, ""), [s.cin]), grid.get(out_of.get(s.name, ""), [s.cout])
            found += [replace(s, cin=cin, cout=cout) for cin in ins for cout in outs]
        else:
            found += [replace(s, cin=c, cout=c) for c in grid.get(out_of.get(s.follows, ""), [s.cout])]
    return list({entry_key(shape): shape for shape in found}.values())  # one per table entry
