"""The quantize stage: NNCF post-training quantization of the fp32 ONNX (quant/ptq_int8.onnx, with NNCF's
accuracy-controlled repair when it fails its gate), and with qat=true quantization-aware training, its QDQ ONNX and
its float weights through onnx2tf and litert-torch. Every int8 route calibrates on the training split's calibration
subset (ctx.calib)."""

from __future__ import annotations

import torch

from ..config.keys import FINETUNE_KEYS, GATED_KEYS
from ..core.artifacts import atomic_write
from ..core.names import fallback_path, ptq_files, qat_files
from ..engine import fallback
from ..engine.checkpoint import derived_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..engine.contract import Stage
from ..engine.evaluate import assess
from ..engine.gated import deliver
from .train import fine_tune


def _ignored(cfg) -> list[str]:
    return [n.strip() for n in cfg.ignored_scope.split(",") if n.strip()]


def quantize_stage(ctx) -> None:
    """NNCF PTQ of the fp32 ONNX -> quant/ptq_int8.onnx; with qat=true also QAT (QDQ ONNX + onnx2tf TFLite)."""
    import onnx

    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    ctx.require(layout.onnx, "export")
    fixed = fallback_path(layout.quant("ptq_int8.onnx"))
    quantized = nncf_ops.ptq_onnx(onnx.load(str(layout.onnx)), ctx.calib, cfg.quant_preset, _ignored(cfg))
    out = atomic_write(layout.quant("ptq_int8.onnx"), lambda tmp: onnx.save(quantized, str(tmp)))
    build = {"method": "nncf_ptq", "preset": cfg.quant_preset, "calibration": ctx.calibration, "macs": ctx.dense_macs}
    record = assess(ctx, out, parent=layout.onnx, build=build)
    if not fallback.wanted(ctx, record, out, layout.onnx):
        fallback.clear(layout, out)
    else:
        x, labels = ctx.val_set  # NNCF's accuracy-control loop: ranked and stopped on validation images
        repaired = nncf_ops.ptq_onnx_with_accuracy_control(
            onnx.load(str(layout.onnx)),
            ctx.calib,
            x,
            labels,
            cfg.max_int8_drop / 100,
            cfg.quant_preset,
            _ignored(cfg),
            cfg.max_float_layers,
        )
        atomic_write(fixed, lambda tmp: onnx.save(repaired, str(tmp)))
        assess(
            ctx,
            fixed,
            parent=layout.onnx,
            build={
                **build,
                "method": "nncf_ptq with accuracy control (nncf.quantize_with_accuracy_control)",
                "repairs": layout.rel(out),
                "float_layers": nncf_ops.float_nodes_onnx(repaired),
            },
        )
    if cfg.qat:
        qat(ctx)


def qat(ctx) -> None:
    from quantization import nncf_ops

    layout, cfg = ctx.layout, ctx.cfg
    parent = load_checkpoint(ctx.require(layout.best, "train"))
    qmodel = nncf_ops.qat_model(model_from_checkpoint(parent), ctx.calib, cfg.quant_preset, _ignored(cfg))
    history = fine_tune(qmodel, cfg, ctx.data, cfg.qat_epochs, cfg.qat_lr, teacher=model_from_checkpoint(parent))
    qmodel.cpu().eval()
    save_checkpoint(
        derived_checkpoint(parent, model_from_checkpoint(parent), qat=nncf_ops.qat_state(qmodel), history=history),
        layout.quant("qat_nncf.pt"),
    )
    example = torch.from_numpy(ctx.calib[:1])
    qdq = atomic_write(layout.quant("qat_int8.onnx"), lambda tmp: nncf_ops.export_qdq(qmodel, tmp, example))
    build = {"method": "nncf_qat", "qat_epochs": cfg.qat_epochs, "calibration": ctx.calibration, "macs": ctx.dense_macs}
    assess(ctx, qdq, parent=layout.onnx, compressed=True, build=build)
    plain = nncf_ops.float_weights(qmodel, model_from_checkpoint(parent))
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, history=history), layout.quant("qat.pt"))
    deliver(
        ctx,
        ckpt,
        "qat",
        {"method": "nncf_qat float weights -> onnx2tf", "qat_epochs": cfg.qat_epochs, "macs": ctx.dense_macs},
    )


def _outputs(ctx) -> list[str]:
    la, cfg = ctx.layout, ctx.cfg
    qat_intermediates = [la.quant("qat_nncf.pt"), la.quant("qat.pt"), la.quant("qat.onnx")] if cfg.qat else []
    return ctx.names(*ptq_files(la), *qat_files(la, cfg), *qat_intermediates)


STAGE = Stage(
    "quantize",
    quantize_stage,
    "NNCF int8 PTQ of the fp32 ONNX; qat=true adds quantization-aware training",
    needs=("export",),
    keys=GATED_KEYS
    | FINETUNE_KEYS
    | {"quant_preset", "ignored_scope", "qat", "qat_epochs", "qat_lr", "pt2e_algorithm", "run_litert"},
    inputs=lambda ctx: ctx.names(ctx.layout.onnx, ctx.layout.best),
    outputs=_outputs,
    records=lambda ctx: ctx.names(*ptq_files(ctx.layout), *qat_files(ctx.layout, ctx.cfg)),
)
