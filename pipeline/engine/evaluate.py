"""Accuracy of any artifact and its gates, written to its record: top-1, top-5, per-class accuracy on the test split,
agreement with the dense fp32 model on the same images, and the comparison with the model it was made from.

Gates (one Gate type, pipeline.core.records.Gate):
  parity      an fp32 file against its parent: an ONNX file max |dlogit| <= 1e-4, a TFLite file <= 1e-3
  agreement   an fp16 file's top-1 agreement with its parent >= 99.5%
  top-1 drop  an int8 / dynamic-range / mixed file, or any compressed (pruned, QAT) model: the dense fp32 model's
              top-1 minus its own, on the same images, <= max_int8_drop points
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import console, records
from ..core.artifacts import file_facts
from ..core.precision import QUANTIZED, format_of, precision_of
from ..core.records import Gate
from .runners import Runner

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None

ONNX_PARITY = 1e-4  # max |logit difference|, onnxruntime vs torch
TFLITE_PARITY = 1e-3  # max |logit difference|, TFLite fp32 vs its parent (ONNX for onnx2tf, torch for litert-torch)
FP16_AGREEMENT = 0.995  # top-1 agreement of an fp16 file with its parent


def predict(runner: Runner, x: np.ndarray, batch: int = 256, desc: str | None = None) -> np.ndarray:
    """Logits for all of x (NCHW float32), a batch at a time, with a progress bar on a terminal."""
    starts = range(0, len(x), batch)
    if tqdm and console.err().isatty():
        starts = tqdm(starts, desc=desc or runner.path.name, leave=False, unit="batch", file=console.err())
    return np.concatenate([runner(x[i : i + batch]) for i in starts])


def score(logits: np.ndarray, labels: np.ndarray, classes: list[str] | None = None) -> dict:
    top1 = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    classes = classes or [str(c) for c in range(logits.shape[1])]
    per_class = {
        name: float((top1[labels == c] == c).mean()) if (labels == c).any() else None for c, name in enumerate(classes)
    }
    return {
        "images": int(len(labels)),
        "top1": float((top1 == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(1).mean()),
        "per_class_top1": per_class,
    }


def compare(logits: np.ndarray, other: np.ndarray) -> dict:
    return {
        "agreement": float((logits.argmax(1) == other.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(logits - other).max()),
    }


def drop_points(reference_top1: float, top1: float) -> float:
    """Top-1 drop in points, rounded to 1e-6: top-1s are image counts over the same n, so a drop of exactly the gate
    (0.849 - 0.839 = 0.010000000000000009) must not fail it by a float rounding."""
    return round(100 * (reference_top1 - top1), 6)


def delta_points(reference_top1: float | None, top1: float | None) -> float | None:
    """The report's Δ top-1 vs fp32 in points: minus the gate's drop, rounded the same way, so the column and the
    gate agree at the threshold."""
    return None if reference_top1 is None or top1 is None else 0.0 - drop_points(reference_top1, top1)  # no -0.0


def gates_for(
    artifact: Path, precision: str, compressed: bool, parent: Path | None, ev: dict, max_int8_drop: float
) -> list[Gate]:
    gates = []
    if parent is not None and precision == "fp32":
        threshold = TFLITE_PARITY if format_of(artifact) == "tflite" else ONNX_PARITY
        gates.append(Gate.at_most("parity", f"max |dlogit| vs {ev['parent']}", ev["parent_max_abs_diff"], threshold))
    if parent is not None and precision == "fp16":
        gates.append(
            Gate.at_least("agreement", f"top-1 agreement with {ev['parent']}", ev["parent_agreement"], FP16_AGREEMENT)
        )
    if (precision in QUANTIZED or compressed) and ev.get("reference_top1") is None:
        gates.append(
            Gate(
                "top-1 drop",
                "top-1 drop vs the fp32 model: onnx/model.onnx missing, run export",
                float("nan"),
                max_int8_drop,
                False,
            )
        )  # an unmeasured drop is no pass
    elif precision in QUANTIZED or compressed:
        drop = drop_points(ev["reference_top1"], ev["top1"])
        gates.append(Gate.at_most("top-1 drop", f"top-1 drop vs {ev['reference']} (points)", drop, max_int8_drop))
    return gates


def assess(
    ctx,
    artifact: Path,
    parent: Path | None = None,
    compressed: bool = False,
    build: dict | None = None,
    gates: list[Gate] = (),
) -> dict:
    """Evaluate `artifact` on the run's test images, compare it with its parent and the dense fp32 model (the run's
    ONNX) on the same images, gate it, and write its record (build, evaluation, gates)."""
    layout, cfg, ev_set = ctx.layout, ctx.cfg, ctx.eval_set
    logits = ctx.logits(artifact)
    evaluation = {**ev_set.describe(), "config_sha": ctx.config_sha, **score(logits, ev_set.labels, ctx.data.classes)}
    reference = layout.onnx
    if reference.is_file():
        ref_logits = ctx.logits(reference)
        evaluation |= {
            "reference": layout.rel(reference),
            "reference_top1": float((ref_logits.argmax(1) == ev_set.labels).mean()),
            "agreement": compare(logits, ref_logits)["agreement"],
        }
    if parent is not None:
        figures = compare(logits, ctx.logits(parent))
        evaluation |= {
            "parent": layout.rel(parent) if layout.holds(parent) else str(parent),
            "parent_agreement": figures["agreement"],
            "parent_max_abs_diff": figures["max_abs_diff"],
        }
    precision = precision_of(artifact)
    all_gates = [*gates, *gates_for(artifact, precision, compressed, parent, evaluation, cfg.max_int8_drop)]
    built = {
        **(build or {}),
        "status": "ok",
        "stage": ctx.stage,
        "invocation": ctx.invocation,
        "format": format_of(artifact),
        "precision": precision,
        "compressed": compressed,
        **file_facts(artifact),
    }
    built.pop("error", None)
    name = layout.rel(artifact) if layout.holds(artifact) else external(artifact)
    before = records.read(layout, name).get("build") or {}
    stale = before.get("sha256") != built["sha256"]
    if ctx.lineage is not None:  # built by a stage: what it built from
        built["lineage"] = ctx.lineage
    elif not stale and before.get("lineage"):  # the same file measured again by a side command: its lineage stays
        built["lineage"] = before["lineage"]
    return records.write(
        layout,
        name,
        build=built,
        evaluation=evaluation,
        gates=[g.to_dict() for g in all_gates],
        **({"benchmark": None} if stale else {}),
    )  # a new file's old latency is no figure of it


def external(artifact: Path) -> str:
    """The record name of an artifact that lives outside the run it was evaluated for: its file name under a digest
    of its full path, so two files of one name from two places never share a record."""
    import hashlib

    where = hashlib.sha256(str(Path(artifact).resolve()).encode()).hexdigest()[:8]
    return f"external/{where}/{Path(artifact).name}"
