"""NNCF post-training quantization of the torch model itself (PT2E: the torch.export graph), annotated by
litert-torch's PT2EQuantizer, so that litert-torch can carry NNCF's int8 scales into a TFLite file unchanged.

Algorithms only: a torch model and calibration images in, a quantized torch.fx graph (and its quantizer, which the
converter needs) out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.errors import EdgeError

# Measured on the validation split (notes in the README): min-max ranges held fp32's accuracy on both the demo
# ResNet-18 and a quarter-width one at the least time; NNCF's fast bias correction cost 0.5 points on the small one.
ALGORITHMS = {
    "minmax": "NNCF min-max ranges, no bias correction",
    "nncf": "NNCF defaults: min-max ranges + fast bias correction",
    "nncf_bias": "NNCF min-max ranges + full bias correction (slow)",
    "observers": "the quantizer's own PT2E observers (histogram activations), no NNCF",
}
CALIBRATION_BATCH = 32  # batches, not single images: the same statistics in a tenth of the time


def quantize(model: nn.Module, calib: np.ndarray, algorithm: str = "minmax", batch_size: int = CALIBRATION_BATCH):
    """(quantized torch.fx GraphModule, PT2EQuantizer) for `model` on `calib` (preprocessed NCHW training images).
    Symmetric int8, per-channel weights, per-tensor activations: XNNPACK's int8 kernels. fold_quantize=False: the
    converter does not accept folded weights (litert-torch 0.10)."""
    import nncf
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from nncf.experimental.torch.fx import quantize_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if algorithm not in ALGORITHMS:
        raise EdgeError(f"pt2e_algorithm={algorithm}: choose {', '.join(ALGORITHMS)}")
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.from_numpy(np.ascontiguousarray(calib[:2]))
    graph = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    batches = [torch.from_numpy(np.ascontiguousarray(calib[i: i + batch_size]))
               for i in range(0, len(calib), batch_size)]
    if algorithm == "observers":
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for b in batches:
                prepared(b)
        return convert_pt2e(prepared, fold_quantize=False), quantizer
    options = {"minmax": {"fast_bias_correction": None}, "nncf": {}, "nncf_bias": {"fast_bias_correction": False}}
    quantized = quantize_pt2e(graph, quantizer, nncf.Dataset(batches), subset_size=len(calib), fold_quantize=False,
                              **options[algorithm])
    return quantized, quantizer
