"""Accuracy of any artifact on the test split: top-1, top-5, agreement with the fp32 reference, per-class accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_json
from .runners import Runner, open_runner

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None


def predict(runner: Runner, x: np.ndarray, batch: int = 256, desc: str | None = None) -> np.ndarray:
    """Logits for all of x (NCHW float32), a batch at a time, with a progress bar on a terminal."""
    starts = range(0, len(x), batch)
    if tqdm and sys.stderr.isatty():
        starts = tqdm(starts, desc=desc or runner.path.name, leave=False, unit="batch", file=sys.stderr)
    return np.concatenate([runner(x[i: i + batch]) for i in starts])


def score(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
          classes: list[str] | None = None) -> dict:
    top1 = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    classes = classes or [str(c) for c in range(logits.shape[1])]
    per_class = {name: float((top1[labels == c] == c).mean()) if (labels == c).any() else None
                 for c, name in enumerate(classes)}
    return {
        "images": int(len(labels)),
        "top1": float((top1 == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(1).mean()),
        "agreement": float((top1 == reference.argmax(1)).mean()) if reference is not None else None,
        "max_abs_diff": float(np.abs(logits - reference).max()) if reference is not None else None,
        "per_class_top1": per_class,
    }


def evaluate(artifacts: list[Path], x: np.ndarray, labels: np.ndarray, out_dir: Path | None = None,
             reference: Path | None = None, classes: list[str] | None = None, threads: int | None = None
             ) -> list[dict]:
    """Score each artifact on (x, labels); agreement is against `reference` (the fp32 ONNX or checkpoint)."""
    ref_logits = predict(open_runner(reference, threads), x, desc="reference") if reference else None
    results = []
    for path in artifacts:
        runner = open_runner(path, threads)
        row = {"artifact": str(path), "format": runner.format, "precision": runner.precision,
               "reference": str(reference) if reference else None,
               **score(predict(runner, x), labels, ref_logits, classes)}
        results.append(row)
        if out_dir is not None:
            atomic_write_json(Path(out_dir) / f"{Path(path).stem}.json", row)
        agree = f", agreement {row['agreement']:.4f}" if row["agreement"] is not None else ""
        print(f"evaluate {path}: top-1 {row['top1']:.4f}, top-5 {row['top5']:.4f}{agree} "
              f"({row['images']} images)", file=sys.stderr)
    return results
