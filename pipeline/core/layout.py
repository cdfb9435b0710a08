"""Every path inside a run directory, in one place: stages ask the layout, never build a run path by hand.

An artifact is named by its path relative to the run (`tflite/int8.tflite`, `quant/qat_int8.onnx`); its result record
is `results/<that path>.json`, so two artifacts can never share a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: pipeline/, device_tests/, bench/
DEVICE_TESTS = REPO / "device_tests"  # the scripts a board runs, copied into the bundle


def tflite_memory():
    """device_tests/tflite_memory.py, the measurement a board runs too (standalone there, so imported by path): its
    Runner and timing loop time every TFLite file on the host, in the benchmark and in fit's latency table."""
    import sys

    if str(DEVICE_TESTS) not in sys.path:
        sys.path.insert(0, str(DEVICE_TESTS))
    import tflite_memory

    return tflite_memory


@dataclass(frozen=True)
class Layout:
    root: Path

    # run-level files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    # train
    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def best(self) -> Path:
        return self.train_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.train_dir / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.train_dir / "metrics.json"

    # models
    @property
    def onnx(self) -> Path:
        return self.root / "onnx" / "model.onnx"

    def quant(self, filename: str) -> Path:
        """quant/<filename>: NNCF and pruning outputs (checkpoints, QDQ ONNX, intermediate ONNX exports)."""
        return self.root / "quant" / filename

    @property
    def tflite_dir(self) -> Path:
        return self.root / "tflite"

    def tflite(self, variant: str) -> Path:
        return self.tflite_dir / f"{variant}.tflite"

    # results, report, device
    @property
    def results(self) -> Path:
        return self.root / "results"

    def record(self, artifact: str | Path) -> Path:
        return self.results / f"{self.rel(artifact)}.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def explanation(self, artifact: str | Path) -> Path:
        """explain/<artifact path>.json: an int8 file's per-layer error (pipeline.stages.explain)."""
        return self.root / "explain" / f"{self.rel(artifact)}.json"

    @property
    def device_dir(self) -> Path:
        """Results measured on devices (bench_tflite.py, android_benchmark.py), copied here by the user."""
        return self.root / "device"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "device_bundle"

    def log(self, stage: str) -> Path:
        """logs/<stage>.log: the tools' own output while the stage ran (pipeline.core.console)."""
        return self.root / "logs" / f"{stage}.log"

    # naming
    def rel(self, path: str | Path) -> str:
        """An artifact's name: its path relative to the run (a path already relative is taken as it is)."""
        path = Path(path)
        if not path.is_absolute() and not path.is_relative_to(self.root):
            return path.as_posix()
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def path(self, rel: str) -> Path:
        return self.root / rel

    def holds(self, path: str | Path) -> bool:
        """Whether `path` lies inside this run directory."""
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def companion(self, kind: str) -> Path:
        """runs/<name>-<kind>/: where a bench script writes what it derives from this run (never into the run)."""
        return self.root.parent / f"{self.root.name}-{kind}"
