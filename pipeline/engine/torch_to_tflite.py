"""torch -> TFLite with litert-torch, straight from the torch model (no ONNX): the float model, and NNCF's PT2E int8
(quantization.pt2e) carried into the file with its scales. litert-torch, jax and nncf load when a function runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_write
from ..core.errors import EdgeError


def to_tflite(model, example, out: Path, quant_config=None) -> Path:
    """litert_torch.convert of `model` (a torch module, or a PT2E-quantized graph with its quant_config) at the
    example's shape, written atomically to `out`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import litert_torch
    import torch

    try:
        edge = litert_torch.convert(
            model, (torch.from_numpy(np.ascontiguousarray(example)),), quant_config=quant_config
        )
    except Exception as e:  # noqa: BLE001  the converter's own errors: a failed artifact, with the reason
        raise EdgeError(
            f"{out.name}: litert-torch cannot convert the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    return atomic_write(out, lambda tmp: edge.export(str(tmp)))


def convert_fp32(model, example: np.ndarray, out: Path) -> Path:
    """The float model, batch 1, NCHW float input as in torch."""
    return to_tflite(model, example[:1], out)


def convert_int8(model, calib: np.ndarray, out: Path, algorithm: str, float_layers: tuple[str, ...] = ()) -> Path:
    """NNCF PT2E int8 of `model` calibrated on `calib`, converted with its scales; `float_layers` (module names)
    stay in float."""
    from litert_torch.quantize.quant_config import QuantConfig

    from quantization import pt2e

    quantized, quantizer = pt2e.quantize(model, calib, algorithm, float_layers=float_layers)
    return to_tflite(quantized, calib[:1], out, QuantConfig(pt2e_quantizer=quantizer))
