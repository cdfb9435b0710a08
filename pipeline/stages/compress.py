"""The quantize and prune stages: the run's trained checkpoint and fp32 ONNX through quantization/'s algorithms to
evaluated, gated artifacts. Every int8 route calibrates on the training split's calibration subset (ctx.calib)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.keys import PRUNE_MAGNITUDE_KEYS, PRUNE_STRUCTURED_KEYS, QUANTIZE_KEYS
from ..core.artifacts import atomic_write
from ..core.names import derived_files, fallback_path, magnitude_name, ptq_files, qat_files, rel, structured_name
from ..engine.checkpoint import derived_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..engine.evaluate import assess
from ..engine.stage import Stage
from ..engine.summary import count_macs
from ..engine.torch_to_onnx import export_onnx
from . import fallback
from .convert import convert_gated
from .litert import deliver_int8
from .train import fine_tune


def _ignored(cfg) -> list[str]:
    return [n.strip() for n in cfg.ignored_scope.split(",") if n.strip()]


def deliver(ctx, checkpoint: Path, name: str, build: dict) -> None:
    """A compressed checkpoint -> quant/<name>.onnx (parity-checked) -> tflite/<name>_{fp32,int8}.tflite (onnx2tf),
    and with run_litert tflite/<name>_nncf_int8.tflite (NNCF PT2E + litert-torch), each evaluated and gated against
    the dense fp32 model."""
    onnx_path = ctx.layout.quant(f"{name}.onnx")
    export_onnx(checkpoint, onnx_path, ctx.eval_set.x[:64])
    convert_gated(ctx, onnx_path, {"fp32": build, "int8": build}, prefix=f"{name}_", compressed=True)
    if ctx.cfg.run_litert:
        deliver_int8(ctx, checkpoint, name, build)


def quantize_stage(ctx) -> None:
    """NNCF PTQ of the fp32 ONNX -> quant/ptq_int8.onnx; with qat=true also QAT (QDQ ONNX + onnx2tf TFLite)."""
    import onnx

    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    fixed = fallback_path(layout.quant("ptq_int8.onnx"))
    quantized = nncf_ops.ptq_onnx(onnx.load(str(layout.onnx)), ctx.calib, cfg.quant_preset, _ignored(cfg))
    out = atomic_write(layout.quant("ptq_int8.onnx"), lambda tmp: onnx.save(quantized, str(tmp)))
    build = {"method": "nncf_ptq", "preset": cfg.quant_preset, "calibration": ctx.calibration,
             "macs": ctx.dense_macs}
    record = assess(ctx, out, parent=layout.onnx, build=build)
    if not fallback.wanted(ctx, record, out, layout.onnx):
        fallback.clear(layout, out)
    else:
        x, labels = ctx.val_set  # NNCF's accuracy-control loop: ranked and stopped on validation images
        repaired = nncf_ops.ptq_onnx_with_accuracy_control(
            onnx.load(str(layout.onnx)), ctx.calib, x, labels, cfg.max_int8_drop / 100, cfg.quant_preset,
            _ignored(cfg), cfg.max_float_layers)
        atomic_write(fixed, lambda tmp: onnx.save(repaired, str(tmp)))
        assess(ctx, fixed, parent=layout.onnx, build={
            **build, "method": "nncf_ptq with accuracy control (nncf.quantize_with_accuracy_control)",
            "repairs": layout.rel(out), "float_layers": nncf_ops.float_nodes_onnx(repaired)})
    if cfg.qat:
        qat(ctx)


def qat(ctx) -> None:
    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    qmodel = nncf_ops.qat_model(model_from_checkpoint(parent), ctx.calib, cfg.quant_preset, _ignored(cfg))
    history = fine_tune(qmodel, cfg, ctx.data, cfg.qat_epochs, cfg.qat_lr, teacher=model_from_checkpoint(parent))
    qmodel.cpu().eval()
    save_checkpoint(derived_checkpoint(parent, model_from_checkpoint(parent), qat=nncf_ops.qat_state(qmodel),
                                       history=history), layout.quant("qat_nncf.pt"))
    example = torch.from_numpy(ctx.calib[:1])
    qdq = atomic_write(layout.quant("qat_int8.onnx"), lambda tmp: nncf_ops.export_qdq(qmodel, tmp, example))
    build = {"method": "nncf_qat", "qat_epochs": cfg.qat_epochs, "calibration": ctx.calibration,
             "macs": ctx.dense_macs}
    assess(ctx, qdq, parent=layout.onnx, compressed=True, build=build)
    plain = nncf_ops.float_weights(qmodel, model_from_checkpoint(parent))
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, history=history), layout.quant("qat.pt"))
    deliver(ctx, ckpt, "qat", {"method": "nncf_qat float weights -> onnx2tf", "qat_epochs": cfg.qat_epochs,
                               "macs": ctx.dense_macs})


def prune_magnitude_stage(ctx) -> None:
    """NNCF global magnitude pruning at prune_ratio (sparsity: a smaller download, not a faster model), fine-tuned
    under a schedule (or batch-norm adaptation only), to fp32 and int8 TFLite."""
    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    example = torch.from_numpy(ctx.eval_set.x[:1])
    pruned = nncf_ops.magnitude_prune(model_from_checkpoint(parent), cfg.prune_ratio, example)
    if cfg.prune_epochs > 0:
        fine_tune(pruned, cfg, ctx.data, cfg.prune_epochs, cfg.prune_lr,
                  before_epoch=nncf_ops.pruning_schedule(pruned, cfg.prune_ratio, cfg.prune_epochs))
    else:
        nncf_ops.adapt_batch_norm(pruned, ctx.calib)
    plain, stats = nncf_ops.strip_pruning(pruned.cpu().eval(), model_from_checkpoint(parent))
    build = {"method": "nncf_magnitude", "ratio": cfg.prune_ratio, "epochs": cfg.prune_epochs, **stats,
             "macs": count_macs(plain, example)}
    name = magnitude_name(cfg)
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, compression=build), layout.quant(f"{name}.pt"))
    deliver(ctx, ckpt, name, build)


def prune_structured_stage(ctx) -> None:
    """torch-pruning channel pruning at structured_ratio (fewer MACs: a faster model), fine-tuned, to fp32 and int8
    TFLite."""
    from quantization.structured import prune_channels

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    model = model_from_checkpoint(parent)
    example = torch.from_numpy(ctx.eval_set.x[:1])
    macs_before = count_macs(model, example)
    teacher = model_from_checkpoint(parent)
    steps = cfg.structured_steps
    epochs = [cfg.structured_epochs // steps + (i >= steps - cfg.structured_epochs % steps) for i in range(steps)]
    # one-shot: prune, then fine-tune all epochs; iterative: each step's share of them after it (same compute)
    stats = prune_channels(model, cfg.structured_ratio, example, cfg.structured_importance, cfg.structured_round_to,
                           steps, lambda step: fine_tune(model, cfg, ctx.data, epochs[step], cfg.structured_lr,
                                                         teacher=teacher, plain=True) if epochs[step] else None)
    plain = model.cpu().eval()
    macs = count_macs(plain, example)
    build = {"method": "torch_pruning", "ratio": cfg.structured_ratio, "importance": cfg.structured_importance,
             "epochs": cfg.structured_epochs, "round_to": cfg.structured_round_to, "steps": steps,
             "kd": {"alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature}, **stats, "macs_before": macs_before,
             "macs": macs, "macs_cut": 1 - macs / macs_before}
    name = structured_name(cfg)
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, compression=build), layout.quant(f"{name}.pt"))
    deliver(ctx, ckpt, name, build)


QUANTIZE = Stage("quantize", quantize_stage, needs=("export",), keys=QUANTIZE_KEYS,
                 inputs=lambda la, c: rel(la, la.onnx, la.best),
                 outputs=lambda la, c: rel(la, *ptq_files(la), *qat_files(la, c), *(
                     [la.quant("qat_nncf.pt"), la.quant("qat.pt"), la.quant("qat.onnx")] if c.qat else [])),
                 records=lambda la, c: rel(la, *ptq_files(la), *qat_files(la, c)))
PRUNE_STRUCTURED = Stage("prune_structured", prune_structured_stage, needs=("export",), keys=PRUNE_STRUCTURED_KEYS,
                         inputs=lambda la, c: rel(la, la.onnx, la.best),
                         outputs=lambda la, c: rel(la, *derived_files(la, structured_name(c), c)),
                         records=lambda la, c: rel(la, *derived_files(la, structured_name(c), c)[2:]))
PRUNE_MAGNITUDE = Stage("prune_magnitude", prune_magnitude_stage, needs=("export",), keys=PRUNE_MAGNITUDE_KEYS,
                        inputs=lambda la, c: rel(la, la.onnx, la.best),
                        outputs=lambda la, c: rel(la, *derived_files(la, magnitude_name(c), c)),
                        records=lambda la, c: rel(la, *derived_files(la, magnitude_name(c), c)[2:]))
