"""Channel plans: a model's prunable channel groups and pruning it to a chosen channel count per group.

A group is what torch-pruning's dependency graph says must move together: the channels a residual add couples (one
group per residual stream: the stem's or the projection shortcut's outputs, every block's last conv in that stage and
every conv that reads the stream) or the inner channels of one block (its first conv's outputs, its second conv's
inputs). ResNet-18 has 12: 4 streams and 8 block-internal. A plan is {group name: channels kept}; `prune_to` keeps
each group's channels of largest L1 magnitude, summed over every layer of the group (GroupMagnitudeImportance), so
one plan gives one model. `op_shapes` says which shape every conv, add and pool has under a plan, without pruning
anything: what a latency table is read with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from pipeline.core.errors import EdgeError


@dataclass(frozen=True)
class Group:
    """One prunable group: `name` is its root conv's module name; `outputs` the convs whose output channels it sets,
    `inputs` the convs whose input channels it sets."""

    name: str
    channels: int
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class OpShape:
    """An op as a latency table sees it. `op`: conv (cin -> cout channels), add (a residual add and its ReLU, cout
    channels) or maxpool (cout channels); kernel, stride, padding and the input's size in pixels. `follows`: for an
    add or a pool, the conv whose output channels it carries (a plan changes them with that conv's)."""

    op: str
    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    hw: int
    follows: str = ""


def _graph(model: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    model.eval()
    with torch.enable_grad():  # the graph is traced through autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return graph, list(graph.get_all_groups(ignored_layers=classifier, root_module_types=[nn.Conv2d]))


def channel_groups(model: nn.Module, example: torch.Tensor) -> list[Group]:
    """The model's prunable groups, in the graph's order (streams first, deepest first, then block-internal)."""
    names = {module: name for name, module in model.named_modules()}
    _, found = _graph(model, example)
    groups = []
    for group in found:
        root = group[0].dep.target.module
        outs, ins = [], []
        for dep, _ in group:
            module = dep.target.module
            if isinstance(module, nn.Conv2d):
                kind = getattr(dep.handler, "__name__", "")
                (outs if kind == "prune_out_channels" else ins if kind == "prune_in_channels" else []).append(
                    names[module]
                )
        groups.append(Group(names[root], root.out_channels, tuple(outs), tuple(ins)))
    return groups


def _check_plan(channels: dict[str, int], plan: dict[str, int]) -> None:
    """A plan names known groups ({name: channels}) and keeps 1 to all of each one's channels."""
    for name, keep in plan.items():
        if name not in channels:
            raise EdgeError(f"channel plan: no prunable group {name!r} (groups: {', '.join(channels)})")
        if not 1 <= keep <= channels[name]:
            raise EdgeError(f"channel plan: {name} keeps {keep} of {channels[name]} channels")


def prune_to(model: nn.Module, example: torch.Tensor, plan: dict[str, int]) -> nn.Module:
    """Prune `model` in place so each group of `plan` keeps that many channels (its largest by group L1 magnitude);
    groups the plan leaves out keep all. Returns the model."""
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    graph, found = _graph(model, example)
    roots = {names[g[0].dep.target.module]: g for g in found}
    _check_plan({name: g[0].dep.target.module.out_channels for name, g in roots.items()}, plan)
    magnitude = tp.importance.GroupMagnitudeImportance(p=1)
    drops = []
    for name, group in roots.items():
        root = group[0].dep.target.module
        keep = plan.get(name, root.out_channels)
        if keep < root.out_channels:
            scores = magnitude(group)
            drops.append((root, torch.argsort(scores)[: root.out_channels - keep].tolist()))
    for root, drop in drops:  # the indices were ranked on the unpruned model; groups share no channels
        graph.get_pruning_group(root, tp.prune_conv_out_channels, drop).prune()
    return model


def op_shapes(
    model: nn.Module, size: int, in_channels: int, plan: dict[str, int] | None = None, groups: list[Group] | None = None
) -> list[OpShape]:
    """Every conv, residual add and max-pool of the model at a `size` x `size` input, in execution order; under
    `plan` (with the model's `groups`) the channel counts they would have after prune_to."""
    shapes: list[OpShape] = []
    names = {module: name for name, module in model.named_modules()}
    last_conv = [""]

    def conv(module, inputs, _):
        k, s, p = module.kernel_size[0], module.stride[0], module.padding
        p = p[0] if isinstance(p, tuple) else 0
        if module.groups != 1:
            raise EdgeError(f"{names[module]}: a grouped or depthwise conv; the latency table has plain convs only")
        shapes.append(
            OpShape("conv", names[module], module.in_channels, module.out_channels, k, s, p, inputs[0].shape[-1])
        )
        last_conv[0] = names[module]

    def other(op):
        def hook(module, inputs, output):
            c, hw = output.shape[1], inputs[0].shape[-1]
            k, s, p = (module.kernel_size, module.stride, module.padding) if op == "maxpool" else (1, 1, 0)
            shapes.append(OpShape(op, names[module], c, c, k, s, p, hw, last_conv[0]))

        return hook

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.MaxPool2d):
            handles.append(module.register_forward_hook(other("maxpool")))
        elif hasattr(module, "downsample"):  # a ResNet block: its output is the residual add (and ReLU)
            handles.append(module.register_forward_hook(other("add")))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return plan_shapes(shapes, groups or [], plan) if plan else shapes


def plan_shapes(shapes: list[OpShape], groups: list[Group], plan: dict[str, int]) -> list[OpShape]:
    """The dense model's op shapes as they would be under `plan` (no model needed: what a search asks many times)."""
    outs = {conv: plan[g.name] for g in groups if g.name in plan for conv in g.outputs}
    ins = {conv: plan[g.name] for g in groups if g.name in plan for conv in g.inputs}
    planned = []
    for s in shapes:
        if s.op == "conv":
            planned.append(replace(s, cin=ins.get(s.name, s.cin), cout=outs.get(s.name, s.cout)))
        else:
            c = outs.get(s.follows, s.cout)
            planned.append(replace(s, cin=c, cout=c))
    return planned
