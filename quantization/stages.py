"""The quantize and prune stages: from the run's trained checkpoint and fp32 ONNX to verified int8 artifacts.

Every int8 artifact is evaluated on the test split and gated: its top-1 drop against the dense fp32 ONNX model must
stay within cfg.max_int8_drop points, or the stage fails naming the artifact and the figure (after writing them all).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import file_sizes
from pipeline.checkpoint import (atomic_write_json, derived_checkpoint, load_checkpoint, model_from_checkpoint,
                                 save_checkpoint)
from pipeline.config import Config
from pipeline.convert import convert_tflite
from pipeline.data import DataSplits, eval_arrays, load_data_for, preprocess
from pipeline.errors import EdgeError
from pipeline.evaluate import evaluate
from pipeline.export import export_onnx
from pipeline.runners import tflite_weight_sparsity
from pipeline.summary import count_macs
from pipeline.train import fine_tune

from . import nncf_ops
from .structured import prune_channels


class Context:
    """What every compression stage of a run needs: its data, test arrays, calibration batch and fp32 reference."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run = cfg.run_dir
        self.checkpoint = self.run / "train" / "best.pt"
        self.onnx = self.run / "onnx" / "model.onnx"
        for path, stage in ((self.checkpoint, "train"), (self.onnx, "export")):
            if not path.is_file():
                raise EdgeError(f"{path}: missing; run `resnet-edge {stage} name={cfg.name}` first")
        self.data: DataSplits = load_data_for(cfg)  # raises when fewer than calib_size images are available
        self.calib_u8 = np.asarray(self.data.calibration.images[: len(self.data.calibration)])
        self.calib = preprocess(self.calib_u8, self.data.norm, cfg.image_size)
        self.x, self.labels = eval_arrays(self.data, cfg.image_size, cfg.eval_subset)
        self.reference = self._reference_row()

    def _reference_row(self) -> dict:
        path = self.run / "eval" / "model.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row.get("images") == len(self.labels):
                return row
        return self.evaluate([self.onnx])[0]

    def evaluate(self, artifacts: list[Path]) -> list[dict]:
        return evaluate(artifacts, self.x, self.labels, self.run / "eval", reference=self.onnx,
                        classes=self.data.classes, threads=self.cfg.threads or None)

    def gate(self, rows: list[dict], extra: dict | None = None) -> list[dict]:
        """Attach drop-vs-fp32 figures and gate results to rows; records them in quant/summary.json."""
        for row in rows:
            row["drop_points"] = 100 * (self.reference["top1"] - row["top1"])
            row["gate"] = "pass" if row["drop_points"] <= self.cfg.max_int8_drop else "fail"
            row.update(extra or {})
            row.update(file_sizes(Path(row["artifact"])))
            print(f"gate {row['gate']}: {Path(row['artifact']).name}: top-1 {row['top1']:.4f}, drop vs fp32 "
                  f"{row['drop_points']:.2f} points (max {self.cfg.max_int8_drop:g})", file=sys.stderr)
        summary_path = self.run / "quant" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary.update({Path(r["artifact"]).name: {k: v for k, v in r.items() if k != "per_class_top1"}
                        for r in rows})
        atomic_write_json(summary_path, summary)
        return rows

    def deliver(self, ckpt_path: Path, name: str, extra: dict) -> list[dict]:
        """A compressed checkpoint through export, onnx2tf (fp32 and int8) and evaluation, gated."""
        onnx_path = self.run / "quant" / f"{name}.onnx"
        export_onnx(ckpt_path, onnx_path, self.x[:64])
        paths = convert_tflite(onnx_path, self.run / "tflite", self.calib_u8, self.data.norm, self.cfg.image_size,
                               ("fp32", "int8"), prefix=f"{name}_")
        extra = extra | {"sparsity_tflite_int8": tflite_weight_sparsity(paths["int8"])["zero_share"]}
        return self.gate(self.evaluate([paths["fp32"], paths["int8"]]), extra)


def _fail_on_gates(rows: list[dict], cfg: Config) -> None:
    failed = [r for r in rows if r["gate"] == "fail" and r["precision"] in ("int8", "dynamic_range")]
    if failed:
        raise EdgeError("int8 gate failed: " + "; ".join(
            f"{Path(r['artifact']).name}: top-1 drop {r['drop_points']:.2f} points > {cfg.max_int8_drop:g}"
            for r in failed))


def _ignored(cfg: Config) -> list[str]:
    return [n.strip() for n in cfg.ignored_scope.split(",") if n.strip()]


def quantize_stage(cfg: Config) -> list[dict]:
    """NNCF PTQ of the fp32 ONNX -> quant/ptq_int8.onnx; with qat=true also QAT (QDQ ONNX + int8 TFLite)."""
    ctx = Context(cfg)
    out = ctx.run / "quant" / "ptq_int8.onnx"
    nncf_ops.ptq_onnx(ctx.onnx, out, ctx.calib, cfg.quant_preset, _ignored(cfg))
    rows = ctx.gate(ctx.evaluate([out]), {"method": "nncf_ptq", "preset": cfg.quant_preset})
    if cfg.qat:
        rows += qat_stage(ctx)
    _fail_on_gates(rows, cfg)
    return rows


def qat_stage(ctx: Context) -> list[dict]:
    cfg = ctx.cfg
    parent = load_checkpoint(ctx.checkpoint)
    qmodel = nncf_ops.qat_model(model_from_checkpoint(parent), ctx.calib, cfg.quant_preset, _ignored(cfg))
    history = fine_tune(qmodel, cfg, ctx.data, cfg.qat_epochs, cfg.qat_lr)
    qmodel.cpu().eval()
    example = torch.from_numpy(ctx.calib[:1])
    save_checkpoint(derived_checkpoint(parent, model_from_checkpoint(parent), qat=nncf_ops.qat_state(qmodel),
                                       history=history), ctx.run / "quant" / "qat_nncf.pt")
    qdq = nncf_ops.export_qdq(qmodel, ctx.run / "quant" / "qat_int8.onnx", example)
    rows = ctx.gate(ctx.evaluate([qdq]), {"method": "nncf_qat", "qat_epochs": cfg.qat_epochs})
    plain = nncf_ops.float_weights(qmodel, model_from_checkpoint(parent))
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, history=history), ctx.run / "quant" / "qat.pt")
    return rows + ctx.deliver(ckpt, "qat", {"method": "nncf_qat_float_weights"})


def prune_stage(cfg: Config, method: str = "magnitude") -> list[dict]:
    """NNCF magnitude pruning (sparsity) or torch-pruning structured pruning (fewer channels) at the configured
    ratio, fine-tuned, then fp32 and int8 TFLite, gated. Writes quant/<name>.pt and tflite/<name>_int8.tflite."""
    ctx = Context(cfg)
    parent = load_checkpoint(ctx.checkpoint)
    model = model_from_checkpoint(parent)
    example = torch.from_numpy(ctx.x[:1])
    if method == "magnitude":
        name = f"pruned{round(cfg.prune_ratio * 100)}"
        pruned = nncf_ops.magnitude_prune(model, cfg.prune_ratio, example)
        if cfg.prune_epochs > 0:
            fine_tune(pruned, cfg, ctx.data, cfg.prune_epochs, cfg.prune_lr,
                      before_epoch=nncf_ops.pruning_schedule(pruned, cfg.prune_ratio, cfg.prune_epochs))
        else:
            nncf_ops.adapt_batch_norm(pruned, ctx.calib)
        plain, stats = nncf_ops.strip_pruning(pruned.cpu().eval(), model_from_checkpoint(parent))
        extra = {"method": "nncf_magnitude", "ratio": cfg.prune_ratio, "epochs": cfg.prune_epochs, **stats}
    elif method == "structured":
        name = f"structured{round(cfg.structured_ratio * 100)}"
        stats = prune_channels(model, cfg.structured_ratio, example, cfg.structured_importance)
        fine_tune(model, cfg, ctx.data, cfg.structured_epochs, cfg.structured_lr)
        plain = model.cpu().eval()
        extra = {"method": "torch_pruning", "ratio": cfg.structured_ratio, "importance": cfg.structured_importance,
                 "epochs": cfg.structured_epochs, **stats}
    else:
        raise EdgeError(f"prune method={method}: choose magnitude (NNCF, sparsity) or structured (fewer channels)")
    extra["macs"] = count_macs(plain, example)
    ckpt = save_checkpoint(derived_checkpoint(parent, plain, compression=extra), ctx.run / "quant" / f"{name}.pt")
    rows = ctx.deliver(ckpt, name, extra)
    _fail_on_gates(rows, cfg)
    return rows
