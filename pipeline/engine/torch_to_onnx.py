"""torch checkpoint -> ONNX (opset 17, input `input`, output `logits`), BN folded, checked by onnx.checker and
parity-gated against torch before the file is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_write
from ..core.errors import EdgeError
from .checkpoint import load_checkpoint, model_from_checkpoint
from .evaluate import ONNX_PARITY


def export_onnx(checkpoint: Path, out: Path, batch: np.ndarray, dynamic_batch: bool = False, model=None) -> dict:
    """Export `checkpoint`'s model (`model`: that model, already loaded) to `out`, then gate it: onnx.checker, and
    onnxruntime vs torch on `batch` (preprocessed real images). Returns the measured parity. A failed gate leaves no
    file under `out`."""
    import onnx
    import torch

    from .runners import OnnxRunner, TorchRunner

    model = model if model is not None else model_from_checkpoint(load_checkpoint(checkpoint))
    example = torch.from_numpy(batch[:1])
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None

    parity: dict = {"images": len(batch), "threshold": ONNX_PARITY}

    def write(tmp: Path) -> None:
        # TorchScript exporter (dynamo=False): NNCF-compressed and pruned models do not export under dynamo.
        # Eval mode + constant folding folds every BatchNorm into the conv before it.
        torch.onnx.export(
            model,
            example,
            str(tmp),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
            training=torch.onnx.TrainingMode.EVAL,
        )
        proto = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise EdgeError(f"{out}: onnx.checker rejects the export ({str(e).splitlines()[0]})") from e
        parity["batchnorm_nodes"] = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
        diff = float(np.abs(OnnxRunner(tmp)(batch) - TorchRunner.from_model(model)(batch)).max())
        parity["max_abs_diff"] = diff
        if diff > ONNX_PARITY:
            raise EdgeError(
                f"{out}: onnxruntime vs torch max |dlogit| = {diff:.3g} > {ONNX_PARITY:g} "
                f"on {len(batch)} test images; export gate failed"
            )

    atomic_write(out, write)
    return parity
