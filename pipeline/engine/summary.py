"""The architecture table: per stage of the paper's table, output size, filters, blocks, parameters, MACs and
activation memory; then totals and the peak live activation memory of one inference.

MACs come from torch's own FlopCounterMode (conv and linear layers; MACs = FLOPs / 2). Activation memory comes from a
liveness walk over each stage's torch.fx graph: a tensor is live from the op that makes it to its last user; BN, ReLU,
flatten and a residual add whose operand dies there reuse their input's buffer (as a deployed, BN-folded graph does).
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

from models import BasicBlock, Bottleneck, InvertedResidual

MIB = 2**20
BLOCKS = (BasicBlock, Bottleneck, InvertedResidual)
_ALIAS_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.Flatten)
_ALIAS_FUNCTIONS = {F.relu, F.relu6, torch.relu, torch.flatten, operator.add, torch.add}
_ALIAS_METHODS = {"relu", "relu_", "flatten", "view", "reshape", "add", "add_"}


@dataclass
class StageRow:
    stage: str
    output: str  # H x W x C (or C for a vector)
    filters: str  # the convolutions of one block: kernel, output channels ("dw" = depthwise)
    blocks: int
    params: int
    macs: int
    act_mib_fp32: float  # the stage's output tensor
    act_mib_int8: float
    peak_mib_fp32: float  # peak live activations while the stage runs (its input included)


@dataclass
class Summary:
    model: str
    image_size: int
    in_channels: int
    num_classes: int
    rows: list[StageRow]
    params: int
    macs: int
    weights_mib_fp32: float
    weights_mib_int8: float
    peak_act_mib_fp32: float
    peak_act_mib_int8: float

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass of x (conv and linear layers), by torch's FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() // 2


def _shape_text(t: torch.Tensor) -> str:
    if t.dim() == 4:
        return f"{t.shape[2]}x{t.shape[3]}x{t.shape[1]}"
    return "x".join(str(s) for s in t.shape[1:])


def _filters(stage: nn.Module) -> str:
    first = next((m for m in stage.modules() if isinstance(m, BLOCKS)), stage)
    parts = []
    for name, m in first.named_modules():
        if isinstance(m, nn.Conv2d) and "downsample" not in name:
            dw = "dw" if m.groups > 1 and m.groups == m.in_channels else ""
            parts.append(f"{m.kernel_size[0]}x{m.kernel_size[1]}{dw},{m.out_channels}")
        elif isinstance(m, nn.MaxPool2d):
            parts.append(f"{m.kernel_size}x{m.kernel_size} max pool")
        elif isinstance(m, nn.Linear):
            parts.append(f"fc,{m.out_features}")
    return " ".join(parts)


def _aliases(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _ALIAS_MODULES)
    if node.op == "call_function":
        return node.target in _ALIAS_FUNCTIONS
    return node.op == "call_method" and node.target in _ALIAS_METHODS


def peak_live_bytes(module: nn.Module, x: torch.Tensor, bytes_per_element: int) -> int:
    """Peak bytes of live activation tensors over one forward pass of `module` (batch of x), input included."""
    gm = torch.fx.symbolic_trace(module)
    ShapeProp(gm).propagate(x)
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max([position.get(u, len(nodes)) for u in n.users] + [position[n]]) for n in nodes}
    buffer_of: dict[torch.fx.Node, int] = {}
    members: dict[int, list[torch.fx.Node]] = {}
    size: dict[int, int] = {}
    peak = 0
    for i, node in enumerate(nodes):
        meta = node.meta.get("tensor_meta")
        if not hasattr(meta, "shape"):
            continue  # not a tensor (shapes, constants)
        reusable = [
            a for a in node.all_input_nodes if a in buffer_of and all(last_use[m] <= i for m in members[buffer_of[a]])
        ]
        if reusable and _aliases(node, modules):
            buf = buffer_of[reusable[0]]
        else:
            buf = len(size)
            size[buf], members[buf] = 0, []
        buffer_of[node] = buf
        members[buf].append(node)
        size[buf] = max(size[buf], meta.shape.numel() * bytes_per_element)
        peak = max(peak, sum(size.values()))
        for b in [b for b in size if all(last_use[m] <= i for m in members[b])]:
            del size[b]
    return peak


@torch.no_grad()
def summarize(model: nn.Module, name: str, image_size: int = 224, in_channels: int = 3) -> Summary:
    model = model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size)
    rows, peak32, peak8 = [], 0, 0
    for stage_name, stage in model.stages():
        with FlopCounterMode(display=False) as counter:
            y = stage(x)
        p32, p8 = peak_live_bytes(stage, x, 4), peak_live_bytes(stage, x, 1)
        peak32, peak8 = max(peak32, p32), max(peak8, p8)
        blocks = sum(isinstance(m, BLOCKS) for m in stage.children()) or 1
        rows.append(
            StageRow(
                stage=stage_name,
                output=_shape_text(y),
                filters=_filters(stage),
                blocks=blocks,
                params=sum(p.numel() for p in stage.parameters()),
                macs=counter.get_total_flops() // 2,
                act_mib_fp32=y.numel() * 4 / MIB,
                act_mib_int8=y.numel() / MIB,
                peak_mib_fp32=p32 / MIB,
            )
        )
        x = y
    params = sum(p.numel() for p in model.parameters())
    return Summary(
        model=name,
        image_size=image_size,
        in_channels=in_channels,
        num_classes=x.shape[1],
        rows=rows,
        params=params,
        macs=sum(r.macs for r in rows),
        weights_mib_fp32=params * 4 / MIB,
        weights_mib_int8=params / MIB,
        peak_act_mib_fp32=peak32 / MIB,
        peak_act_mib_int8=peak8 / MIB,
    )


def to_markdown(s: Summary) -> str:
    lines = [
        f"## {s.model} at {s.image_size}x{s.image_size}x{s.in_channels}, {s.num_classes} classes (batch 1)",
        "",
        "| stage | output HxWxC | filters (one block) | blocks | params | MMACs | act MiB fp32 | act MiB int8 "
        "| peak live MiB fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s.rows:
        lines.append(
            f"| {r.stage} | {r.output} | {r.filters} | {r.blocks} | {r.params:,} | {r.macs / 1e6:,.1f} "
            f"| {r.act_mib_fp32:.3f} | {r.act_mib_int8:.3f} | {r.peak_mib_fp32:.3f} |"
        )
    lines += [
        "",
        f"- parameters: {s.params:,}",
        f"- compute: {s.macs / 1e9:.2f} GMACs (conv + linear, MAC = FLOPs / 2)",
        f"- weights: {s.weights_mib_fp32:.2f} MiB fp32, {s.weights_mib_int8:.2f} MiB int8",
        f"- peak live activations, one inference: {s.peak_act_mib_fp32:.2f} MiB fp32, "
        f"{s.peak_act_mib_int8:.2f} MiB int8",
        "- act MiB: the stage's output tensor; MiB = 2^20 bytes",
    ]
    return "\n".join(lines)
