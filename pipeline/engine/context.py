"""What a stage gets: `Context`, the config, the run's layout, the chain's rows, and the data, loaded once per
process and shared by every stage of it."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..core import records
from ..core.errors import EdgeError
from ..core.layout import Layout
from .manifest import read_manifest


@dataclass(frozen=True)
class EvalSet:
    """The images every evaluation and gate of a run uses, and what they are."""

    x: np.ndarray  # preprocessed NCHW float32
    labels: np.ndarray
    split: str
    data_id: str  # sha256 (16 hex) of the preprocessed images and labels: equal ids mean the same measurement set

    def describe(self) -> dict:
        return {"split": self.split, "images": int(len(self.labels)), "data_id": self.data_id}


def _short_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class Context:
    """A stage's world: cfg, layout, the chain, and data loaded once and shared by every stage of one process."""

    def __init__(self, cfg: Config, data=None, chain: Sequence | None = None) -> None:
        self.cfg = cfg
        self.layout = Layout(cfg.run_dir)
        self.chain = chain  # pipeline.chain's stages (engine.contract.Stage): what the rows are (ctx.rows)
        self._data = data
        self._logits: dict[tuple, np.ndarray] = {}
        self.stage: str | None = None  # set by run_stage
        self.invocation: str | None = None  # marks the records written by this run of the stage
        self.errors: dict[str, BaseException] = {}  # a failed stage's exception, its cause kept
        self.lineage: dict[str, str] | None = None  # what the running stage builds from (set by run_stage)

    def names(self, *paths: Path) -> list[str]:
        """The artifacts' names: their paths relative to the run."""
        return [self.layout.rel(p) for p in paths]

    @property
    def rows(self) -> list[str]:
        """The run's rows: the artifacts that the chain's building stages (those `run` runs for this config) record,
        in the chain's order. Exactly the report's rows; benchmark, explain and bundle read them."""
        if self.chain is None:
            raise EdgeError("this Context was made without the chain: make it with pipeline.chain.context(cfg)")
        return [rel for s in self.chain if s.builds() and s.runs(self.cfg) for rel in s.records(self)]

    @property
    def data(self):
        if self._data is None:
            from ..data import load_data_for

            self._data = load_data_for(self.cfg)
        return self._data

    @property
    def data_identity(self) -> str | None:
        """The data's content id: of the data loaded in this process, else as the run last loaded it (manifest)."""
        if self._data is not None:
            return self._data.identity
        return read_manifest(self.layout).get("data")

    @functools.cached_property
    def eval_set(self) -> EvalSet:
        from ..data import eval_arrays

        x, labels = eval_arrays(self.data, self.cfg.image_size, self.cfg.eval_subset)
        return EvalSet(x, labels, "test", _short_hash(x, labels))

    @functools.cached_property
    def val_set(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the validation split (at most eval_subset, else 2,000): for choices made during a
        stage, which must not look at the test split that judges the result."""
        from ..data import preprocess

        n = min(len(self.data.val), self.cfg.eval_subset or 2000)
        if n == 0:
            raise EdgeError("val_size=0: this step needs a validation split; set val_size > 0")
        return (
            preprocess(np.asarray(self.data.val.images[:n]), self.data.norm, self.cfg.image_size),
            np.asarray(self.data.val.labels[:n]),
        )

    @functools.cached_property
    def examples(self) -> np.ndarray:
        """64 training images, preprocessed: what a conversion's parity check and an example input run on (any real
        images do; the test split only judges, so nothing that chooses or checks on the way reads it)."""
        from ..data import preprocess

        return preprocess(np.asarray(self.data.train.images[:64]), self.data.norm, self.cfg.image_size)

    @functools.cached_property
    def calib_u8(self) -> np.ndarray:
        """The training split's calibration subset (uint8 NHWC): every int8 route calibrates on exactly these, checked
        first (pipeline.data.check_calibration)."""
        from ..data import check_calibration

        images = np.asarray(self.data.calibration.images[: len(self.data.calibration)])
        check_calibration(images, self.data.norm, self.cfg.image_size)
        return images

    @functools.cached_property
    def calib(self) -> np.ndarray:
        from ..data import preprocess

        return preprocess(self.calib_u8, self.data.norm, self.cfg.image_size)

    @functools.cached_property
    def calibration(self) -> dict:
        """What a quantized artifact's record says it was calibrated on."""
        return {
            "split": "train (calibration subset)",
            "images": int(len(self.calib_u8)),
            "sha256": hashlib.sha256(np.ascontiguousarray(self.calib_u8).tobytes()).hexdigest(),
        }

    @functools.cached_property
    def dense_macs(self) -> int | None:
        """MACs of the trained model: as the export stage counted them, else counted here (None before train)."""
        macs = (records.read(self.layout, self.layout.rel(self.layout.onnx)).get("build") or {}).get("macs")
        if macs is None and self.layout.best.is_file():
            import torch

            from .checkpoint import load_checkpoint, model_from_checkpoint
            from .summary import count_macs

            macs = count_macs(
                model_from_checkpoint(load_checkpoint(self.layout.best)), torch.from_numpy(self.examples[:1])
            )
        return macs

    @property
    def config_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def logits(self, path: Path) -> np.ndarray:
        """A model's logits on the eval set, computed once per file version in this process."""
        from .evaluate import predict
        from .runners import open_runner

        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, self.eval_set.data_id)
        if key not in self._logits:
            self._logits[key] = predict(open_runner(path, self.cfg.threads or None), self.eval_set.x)
        return self._logits[key]

    def require(self, path: Path, stage: str) -> Path:
        if not Path(path).is_file():
            raise EdgeError(f"{path}: missing; run `resnet-edge {stage} name={self.cfg.name}` first")
        return path
