"""Everything this project does with NNCF: ONNX post-training quantization, torch quantization-aware training, and
magnitude (unstructured) pruning. NNCF 3.x has no filter pruning: structured pruning lives in structured.py.

Algorithms only: functions from a model (torch module or ONNX proto) and calibration data to a model, or to a file
the caller names. No run paths, no stages: this imports models/ and the project's error type, nothing else of ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import EdgeError

PRESETS = ("performance", "mixed")  # (the extension's folder and build time limit: quantization/__init__.py)


def build_extension() -> Path:
    """NNCF's torch CPU extension (its fake-quantize kernels: QAT and magnitude pruning), compiled now if it is not
    yet in torch's extension folder (quantization/__init__.py: the venv's); the path of the library. `make setup`
    calls this, so that neither the demo nor the tests compile it. (nncf.torch.force_build_cpu_extensions() alone
    builds nothing: the extension registers itself only when its module is imported.)"""
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader as Loader

    Loader.load()
    built = sorted(Path(Loader.get_build_dir()).glob(f"{Loader.name()}*.so"))
    if not built:
        raise EdgeError(f"NNCF's torch CPU extension was not built in {Loader.get_build_dir()}")
    return built[0]


def _preset(name: str):
    import nncf

    if name not in PRESETS:
        raise EdgeError(f"quant_preset={name}: choose performance (symmetric) or mixed (asymmetric activations)")
    return nncf.QuantizationPreset.PERFORMANCE if name == "performance" else nncf.QuantizationPreset.MIXED


def _ignored_scope(model, names: list[str]):
    """nncf.IgnoredScope for `names`, after checking each exists in NNCF's graph of `model`."""
    import nncf

    if not names:
        return None
    valid = sorted(node.node_name for node in nncf.build_graph(model).get_all_nodes())
    unknown = [n for n in names if n not in valid]
    if unknown:
        weighted = [n for n in valid if any(k in n for k in ("Conv", "Gemm", "MatMul", "conv", "fc", "linear"))]
        raise EdgeError(
            f"ignored_scope names {unknown} match no node; valid names include: {', '.join(weighted or valid)}"
        )
    return nncf.IgnoredScope(names=names)


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def ptq_onnx(model, calib: np.ndarray, preset: str = "performance", ignored: list[str] | None = None):
    """NNCF PTQ of a float ONNX model (onnx.ModelProto) -> int8 QDQ ModelProto. `calib`: preprocessed real training
    images (NCHW)."""
    import nncf

    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") else 32  # a static batch takes its own size
    name = model.graph.input[0].name
    items = _batches(calib, batch)
    return nncf.quantize(
        model,
        nncf.Dataset(items, lambda a: {name: a}),
        preset=_preset(preset),
        subset_size=len(items),
        ignored_scope=_ignored_scope(model, ignored or []),
    )


def ptq_onnx_with_accuracy_control(
    model,
    calib: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    max_drop: float,
    preset: str = "performance",
    ignored: list[str] | None = None,
    max_float_layers: int = 4,
):
    """NNCF PTQ with accuracy control of a float ONNX model: quantize, rank the quantizer groups by how much
    reverting each to float restores top-1 on the validation images, revert in rank order until the drop is at most
    `max_drop` (a fraction: 0.01 = 1 point) or `max_float_layers` are float. -> int8 QDQ ModelProto (mixed)."""
    import nncf
    import onnxruntime as ort
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") else 32
    name = model.graph.input[0].name
    labelled = list(zip(_batches(val_x, batch), _batches(val_y, batch), strict=True))

    def validate(candidate, items) -> tuple[float, list[float]]:
        session = ort.InferenceSession(candidate.SerializeToString(), providers=["CPUExecutionProvider"])
        per_item = [float((session.run(None, {name: x})[0].argmax(1) == y).mean()) for x, y in items]
        sizes = [len(y) for _, y in items]
        return float(np.average(per_item, weights=sizes)) if per_item else 0.0, per_item

    calib_items = _batches(calib, batch)
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(calib_items, lambda a: {name: a}),
        nncf.Dataset(labelled, lambda item: {name: item[0]}),
        validate,
        max_drop=max_drop,
        preset=_preset(preset),
        subset_size=len(calib_items),
        ignored_scope=_ignored_scope(model, ignored or []),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=max_float_layers),
    )


def float_nodes_onnx(model) -> list[str]:
    """Conv / Gemm / MatMul nodes of a QDQ ONNX model whose weights are not dequantized from int8: float layers."""
    produced_by = {out: n.op_type for n in model.graph.node for out in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul")
        and len(n.input) > 1
        and produced_by.get(n.input[1]) != "DequantizeLinear"
    ]


# --- quantization-aware training (torch) ---------------------------------------------------------------------------


def qat_model(
    model: nn.Module, calib: np.ndarray, preset: str = "performance", ignored: list[str] | None = None
) -> nn.Module:
    """NNCF-quantize a torch model for QAT: fake quantizers initialised on `calib`, then train as usual."""
    import nncf

    batches = [torch.from_numpy(b) for b in _batches(calib, 32)]
    return nncf.quantize(
        model.eval(),
        nncf.Dataset(batches),
        preset=_preset(preset),
        subset_size=len(batches),
        ignored_scope=_ignored_scope(model, ignored or []) if ignored else None,
    )


def _plain(obj, decode: bool = False):
    """NNCF's config holds QuantizationScheme enums, which torch.load(weights_only=True) refuses: store them as
    tagged strings and turn them back on load."""
    from nncf.common.quantization.structs import QuantizationScheme

    if isinstance(obj, QuantizationScheme):
        return {"__enum__": "QuantizationScheme", "value": obj.value}
    if isinstance(obj, dict):
        if decode and obj.get("__enum__") == "QuantizationScheme":
            return QuantizationScheme(obj["value"])
        return {k: _plain(v, decode) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, decode) for v in obj)
    return obj


def qat_state(qmodel: nn.Module) -> dict:
    """What a QAT checkpoint stores: NNCF's description of the inserted quantizers and all tensors."""
    import nncf.torch

    return {
        "nncf_config": _plain(nncf.torch.get_config(qmodel)),
        "model": {k: v.detach().cpu().clone() for k, v in qmodel.state_dict().items()},
    }


def restore_qat(model: nn.Module, state: dict) -> nn.Module:
    import nncf.torch

    qmodel = nncf.torch.load_from_config(model.eval(), _plain(state["nncf_config"], decode=True))
    qmodel.load_state_dict(state["model"])
    return qmodel.eval()


def float_weights(qmodel: nn.Module, fresh: nn.Module) -> nn.Module:
    """The QAT-adapted float weights in a plain model (quantizers dropped): what onnx2tf calibrates itself."""
    own = fresh.state_dict()
    fresh.load_state_dict({k: v for k, v in qmodel.state_dict().items() if k in own}, strict=True)
    return fresh.eval()


def export_qdq(qmodel: nn.Module, out: Path, example: torch.Tensor) -> Path:
    """The QAT model as int8 QDQ ONNX (QuantizeLinear/DequantizeLinear pairs onnxruntime runs with int8 kernels),
    not NNCF's default FakeQuantize export, which is an OpenVINO op. Writes `out` as given (the caller makes it
    atomic)."""
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    quantizers = [m for m in qmodel.modules() if isinstance(m, BaseQuantizer)]
    if not quantizers:
        raise EdgeError("QAT model has no NNCF quantizers to export")
    for q in quantizers:
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    # NNCF-wrapped models do not export under dynamo: the TorchScript exporter
    torch.onnx.export(
        qmodel.eval(), example, str(out), input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False
    )
    return out


# --- magnitude (unstructured) pruning --------------------------------------------------------------------------------


def magnitude_prune(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    import nncf

    if not 0 < ratio < 1:
        raise EdgeError(f"prune ratio={ratio}: must be strictly between 0 and 1")
    return nncf.prune(model, nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=ratio, examples_inputs=example)


def pruning_schedule(pruned: nn.Module, ratio: float, epochs: int):
    """A multi-step schedule: half the target sparsity for the first epoch, the full target after (one epoch: the
    target at once). Called as before_epoch(epoch) by the fine-tuning loop."""
    import nncf
    from nncf.torch.function_hook.pruning.magnitude.schedulers import MultiStepMagnitudePruningScheduler

    steps = {0: ratio / 2, 1: ratio} if epochs > 1 else {0: ratio}
    scheduler = MultiStepMagnitudePruningScheduler(
        pruned, mode=nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, steps=steps
    )
    return scheduler.step


def adapt_batch_norm(pruned: nn.Module, calib: np.ndarray) -> None:
    """Re-estimate BN statistics after pruning when there is no fine-tuning (epochs=0)."""
    import nncf

    nncf.batch_norm_adaptation(
        pruned, calibration_dataset=nncf.Dataset([torch.from_numpy(b) for b in _batches(calib, 32)])
    )


def strip_pruning(pruned: nn.Module, fresh: nn.Module) -> tuple[nn.Module, dict]:
    """Bake the masks into the weights (nncf.strip IN_PLACE) and return a plain model plus NNCF's statistics."""
    import nncf

    stat = nncf.pruning_statistic(pruned)
    stripped = nncf.strip(pruned, do_copy=False, strip_format=nncf.StripFormat.IN_PLACE)
    plain = float_weights(stripped, fresh)
    for p in plain.parameters():
        p.requires_grad_(True)  # strip freezes them; later fine-tuning needs them back
    stats = {"nncf_sparsity_prunable": float(stat.pruning_ratio), "nncf_sparsity_all": float(stat.global_pruning_ratio)}
    print(
        f"  NNCF magnitude pruning: {stats['nncf_sparsity_prunable']:.3f} of prunable weights zero "
        f"({stats['nncf_sparsity_all']:.3f} of all parameters)",
        file=sys.stderr,
    )
    return plain, stats
