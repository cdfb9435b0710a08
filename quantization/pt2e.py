"""NNCF post-training quantization of the torch model itself (PT2E: the torch.export graph), annotated by
litert-torch's PT2EQuantizer, so that litert-torch can carry NNCF's int8 scales into a TFLite file unchanged.

Algorithms only: a torch model and calibration images in, a quantized torch.fx graph (and its quantizer, which the
converter needs) out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import EdgeError

# Measured on the validation split (notes in the README): min-max ranges held fp32's accuracy on both the demo
# ResNet-18 and a quarter-width one at the least time; NNCF's fast bias correction cost 0.5 points on the small one.
ALGORITHMS = {
    "minmax": "NNCF min-max ranges, no bias correction",
    "nncf": "NNCF defaults: min-max ranges + fast bias correction",
    "nncf_bias": "NNCF min-max ranges + full bias correction (slow)",
    "observers": "the quantizer's own PT2E observers (histogram activations), no NNCF",
}
CALIBRATION_BATCH = 32  # batches, not single images: the same statistics in a tenth of the time


FOLLOWERS = ("batch_norm", "relu", "hardtanh")  # ops that fuse into the conv before them: float with it


def float_nodes(graph, float_layers: tuple[str, ...]) -> set:
    """The graph nodes of the modules named in `float_layers` ("layer1.0.conv2"), with the batch norm and ReLU that
    fuse into them."""

    def named(node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        return any(path == f or path.startswith(f + ".") for path, _ in stack.values() for f in float_layers)

    found = set()
    for node in graph.nodes:  # topological order: a follower comes after its conv
        if named(node) or any(
            a in found and len(a.users) == 1 and str(node.target).split(".")[-2].startswith(FOLLOWERS)
            for a in node.all_input_nodes
            if node.op == "call_function"
        ):
            found.add(node)
    return found


def quantizer(float_layers: tuple[str, ...] = ()):
    """litert-torch's PT2EQuantizer (symmetric int8, per-channel weights, per-tensor activations: XNNPACK's int8
    kernels), leaving the modules named in `float_layers` in float: their weights, and the activations they read
    and write, so that the converter cannot fold a neighbouring quantize back into them. (The quantizer's own
    set_module_name cannot do this in litert-torch 0.10: it refuses None and misreads torch 2.13's module paths.)"""
    from litert_torch.quantize import pt2e_quantizer as lq

    class FloatLayersQuantizer(lq.PT2EQuantizer):
        def annotate(self, model):
            if not float_layers:
                return super().annotate(model)
            floats = float_nodes(model.graph, float_layers)
            self._annotate_all_static_patterns(model, self.global_config, lambda n: n not in floats)
            lq.propagate_annotation(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None:
                    continue
                if node.users and all(u in floats for u in node.users):  # what only float layers read
                    annotation.output_qspec = None
                for arg in [a for a in annotation.input_qspec_map if a in floats]:  # what float layers write
                    del annotation.input_qspec_map[arg]
            return model

    return FloatLayersQuantizer().set_global(lq.get_symmetric_quantization_config(is_per_channel=True))


def quantize(
    model: nn.Module,
    calib: np.ndarray,
    algorithm: str = "minmax",
    batch_size: int = CALIBRATION_BATCH,
    float_layers: tuple[str, ...] = (),
):
    """(quantized torch.fx GraphModule, its quantizer) for `model` on `calib` (preprocessed NCHW training images).
    fold_quantize=False: the converter does not accept folded weights (litert-torch 0.10)."""
    import nncf
    from nncf.experimental.torch.fx import quantize_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if algorithm not in ALGORITHMS:
        raise EdgeError(f"pt2e_algorithm={algorithm}: choose {', '.join(ALGORITHMS)}")
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.from_numpy(np.ascontiguousarray(calib[:2]))
    graph = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).module()
    annotator = quantizer(tuple(float_layers))
    batches = [
        torch.from_numpy(np.ascontiguousarray(calib[i : i + batch_size])) for i in range(0, len(calib), batch_size)
    ]
    if algorithm == "observers":
        prepared = prepare_pt2e(graph, annotator)
        with torch.no_grad():
            for b in batches:
                prepared(b)
        return convert_pt2e(prepared, fold_quantize=False), annotator
    options = {"minmax": {"fast_bias_correction": None}, "nncf": {}, "nncf_bias": {"fast_bias_correction": False}}
    quantized = quantize_pt2e(
        graph, annotator, nncf.Dataset(batches), subset_size=len(batches), fold_quantize=False, **options[algorithm]
    )
    return quantized, annotator
