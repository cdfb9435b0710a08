"""The stage contract. A Stage declares, once, its name, the stages it cannot do without, the config keys its result
depends on, the files it reads and writes (relative to the run) and the artifacts whose records it writes. One
wrapper, `run_stage`, runs every stage, whether from `run` or from a single verb: it times it, checks every declared
output exists and is non-empty, turns a failure into `failed` records naming the reason, writes one log line and
records outputs (sha256) and owned record sections (digests) in the manifest.

`Context` is what a stage gets: the config, the run's layout, and the data, loaded once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import console, records
from ..core.artifacts import MIB, atomic_write_json, file_sha
from ..config import Config, save_config
from ..core.errors import EdgeError
from ..core.layout import Layout
from ..core.records import BUILD_SECTIONS


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
    """A stage's world: cfg, layout, and data loaded once and shared by every stage of one process."""

    def __init__(self, cfg: Config, data=None) -> None:
        self.cfg = cfg
        self.layout = Layout(cfg.run_dir)
        self._data = data
        self._logits: dict[tuple, np.ndarray] = {}
        self.stage: str | None = None  # set by run_stage
        self.invocation: str | None = None  # marks the records written by this run of the stage
        self.errors: dict[str, BaseException] = {}  # a failed stage's exception, its cause kept
        self.lineage: dict[str, str] | None = None  # what the running stage builds from (set by run_stage)

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
        return (preprocess(np.asarray(self.data.val.images[:n]), self.data.norm, self.cfg.image_size),
                np.asarray(self.data.val.labels[:n]))

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
        return {"split": "train (calibration subset)", "images": int(len(self.calib_u8)),
                "sha256": hashlib.sha256(np.ascontiguousarray(self.calib_u8).tobytes()).hexdigest()}

    @functools.cached_property
    def dense_macs(self) -> int | None:
        """MACs of the trained model: as the export stage counted them, else counted here (None before train)."""
        macs = (records.read(self.layout, self.layout.rel(self.layout.onnx)).get("build") or {}).get("macs")
        if macs is None and self.layout.best.is_file():
            import torch

            from .checkpoint import load_checkpoint, model_from_checkpoint
            from .summary import count_macs

            macs = count_macs(model_from_checkpoint(load_checkpoint(self.layout.best)),
                              torch.from_numpy(self.eval_set.x[:1]))
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


def _none(layout: Layout, cfg: Config) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    name: str
    function: Callable[[Context], None]  # the stage's work, beside which it is declared
    needs: tuple[str, ...]  # stages it cannot do without: when one of them failed, this one is skipped
    keys: frozenset[str]  # config keys its result depends on (the rest of the cache key is its inputs' content)
    inputs: Callable[[Layout, Config], list[str]] = _none  # files read; "<record>#<sections>": those sections
    outputs: Callable[[Layout, Config], list[str]] = _none  # files written: must exist, non-empty, afterwards
    records: Callable[[Layout, Config], list[str]] = _none  # artifacts whose record sections it writes
    sources: Callable[[Layout, Config], list[str]] | None = None  # the inputs its artifacts are built from (the
    # lineage in their records); None: every input. Not a file it only compares its results with.
    sections: tuple[str, ...] = BUILD_SECTIONS  # the record sections it owns
    uses_data: bool = True  # reads the data set: loaded (and checked against the config) before any stage starts

    def call(self, ctx: Context) -> None:
        self.function(ctx)

    def builds(self) -> bool:
        return "build" in self.sections


def fingerprint(layout: Layout, spec: str) -> str | None:
    """sha256 of a file, or the digest of some sections of a record ("results/x.json#build,gates"); None: absent."""
    rel, _, sections = spec.partition("#")
    path = layout.path(rel)
    if not path.is_file():
        return None
    if sections:
        return records.digest(json.loads(path.read_text()), tuple(sections.split(",")))
    return file_sha(path)  # once per file version in a process: the key, the lineage and the checks share it


def stage_key(stage: Stage, ctx: Context) -> str:
    """What the stage's result depends on: its config keys, its inputs' content, and the data's (uses_data)."""
    conf = {k: getattr(ctx.cfg, k) for k in sorted(stage.keys)}
    inputs = {spec: fingerprint(ctx.layout, spec) for spec in stage.inputs(ctx.layout, ctx.cfg)}
    if stage.uses_data:
        inputs["data"] = ctx.data_identity
    return hashlib.sha256(json.dumps([stage.name, conf, inputs], sort_keys=True, default=str).encode()).hexdigest()


def lineage(stage: Stage, ctx: Context) -> dict[str, str]:
    """The files a stage builds from (sha256) and the data (content id): kept in each record it builds, so that a
    row built from an older model or other data is known for it (records.stale)."""
    made_from = (stage.sources or stage.inputs)(ctx.layout, ctx.cfg)
    out = {spec: fingerprint(ctx.layout, spec) for spec in made_from if "#" not in spec}
    if stage.uses_data and ctx.data_identity:
        out["data"] = ctx.data_identity
    return {k: v for k, v in out.items() if v}


# --- the manifest --------------------------------------------------------------------------------------------------

def read_manifest(layout: Layout) -> dict:
    try:
        manifest = json.loads(layout.manifest.read_text())
    except FileNotFoundError:
        manifest = {}
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeError(f"{layout.manifest}: unreadable ({e}); delete it to start the run's bookkeeping afresh") from e
    manifest.setdefault("stages", {})
    manifest.setdefault("artifacts", {})
    return manifest


def begin_run(ctx: Context) -> dict:
    """Save the resolved config and note versions and host in the manifest: what every stage's entry refers to."""
    from ..core.host import host, versions

    save_config(ctx.cfg, ctx.layout.config)
    manifest = read_manifest(ctx.layout)
    manifest.update({"config": ctx.cfg.to_dict(), "versions": versions(), "host": host()})
    if ctx._data is not None:
        manifest["data"] = ctx._data.identity  # what records.stale holds every record's data lineage against
    atomic_write_json(ctx.layout.manifest, manifest)
    return manifest


def stage_table(rows: list[tuple[str, str, float | None]], total_s: float | None = None) -> list[str]:
    """(stage, status, seconds) as a markdown table, with the total wall time of the run when known: printed at the
    end of `run` and kept in the report."""
    out = ["| stage | status | s |", "|---|---|---:|"]
    out += [f"| {name} | {status} | {'-' if s is None else f'{s:.1f}'} |" for name, status, s in rows]
    if total_s is not None:
        out.append(f"| **total wall time** | | **{total_s:.1f}** ({int(total_s // 60)} min {total_s % 60:.0f} s) |")
    return out


def manifest_stage_rows(layout: Layout) -> list[tuple[str, str, float | None]]:
    """Each stage as the manifest last recorded it: status and seconds."""
    return [(name, entry.get("status", "?"), entry.get("wall_s"))
            for name, entry in read_manifest(layout)["stages"].items()]


def _update_manifest(layout: Layout, name: str, entry: dict) -> None:
    manifest = read_manifest(layout)
    manifest["stages"][name] = entry
    for rel, sha in entry.get("outputs", {}).items():
        manifest["artifacts"][rel] = {"bytes": layout.path(rel).stat().st_size, "sha256": sha, "stage": name}
    atomic_write_json(layout.manifest, manifest)  # after every stage: an interruption keeps what is done


def owned(stage: Stage, ctx: Context) -> dict[str, str]:
    """Digests of the record sections this stage owns, for the artifacts it declares."""
    out = {}
    for rel in stage.records(ctx.layout, ctx.cfg):
        record = records.read(ctx.layout, rel)
        if any(s in record for s in stage.sections):
            out[rel] = records.digest(record, stage.sections)
    return out


def unchanged(stage: Stage, ctx: Context, entry: dict) -> bool:
    """The stage's recorded outputs and record sections are on disk as the manifest says."""
    if any(fingerprint(ctx.layout, rel) != sha for rel, sha in entry.get("outputs", {}).items()):
        return False
    declared = set(stage.outputs(ctx.layout, ctx.cfg))
    return declared <= set(entry.get("outputs", {})) and owned(stage, ctx) == entry.get("records", {})


# --- the wrapper ---------------------------------------------------------------------------------------------------

def _describe(layout: Layout, rel: str) -> str:
    path = layout.path(rel)
    record = records.read(layout, rel)
    top1 = (record.get("evaluation") or {}).get("top1")
    accuracy = f", top-1 {100 * top1:.2f}%" if top1 is not None and record.get("build", {}).get("status") == "ok" else ""
    return f"{rel} ({path.stat().st_size / MIB:.2f} MiB{accuracy})" if path.is_file() else rel


def mark_failed(stage: Stage, ctx: Context, reason: str) -> None:
    """Every artifact the stage declares but did not (re)build in this invocation gets a `failed` record."""
    for rel in stage.records(ctx.layout, ctx.cfg):
        build = records.read(ctx.layout, rel).get("build") or {}
        if build.get("invocation") != ctx.invocation:
            records.write(ctx.layout, rel, build={"status": "failed", "stage": stage.name, "error": reason},
                          evaluation=None, gates=None, benchmark=None)


def mark_skipped(stage: Stage, ctx: Context, reason: str) -> dict:
    if stage.builds():
        for rel in stage.records(ctx.layout, ctx.cfg):
            records.write(ctx.layout, rel, build={"status": "skipped", "stage": stage.name, "error": reason},
                          evaluation=None, gates=None, benchmark=None)
    entry = {"status": "skipped", "error": reason}
    _update_manifest(ctx.layout, stage.name, entry)
    print(f"{stage.name} skipped ({reason})", file=sys.stderr)
    return entry


def run_stage(stage: Stage, ctx: Context, key: str | None = None) -> dict:
    """Run one stage under the contract; returns its manifest entry (status ok | failed, error, outputs, wall_s)."""
    layout = ctx.layout
    key = key or stage_key(stage, ctx)
    ctx.stage, ctx.invocation = stage.name, f"{stage.name}-{time.time_ns()}"
    ctx.lineage = lineage(stage, ctx)
    _update_manifest(layout, stage.name, {"key": key, "status": "started"})
    start = time.perf_counter()
    status, error = "ok", None
    log = layout.log(stage.name)
    try:
        with console.tool_output_to(log) as captured:
            if captured:
                print(f"=== {stage.name} {time.strftime('%Y-%m-%d %H:%M:%S')} ===", flush=True)
            try:
                stage.call(ctx)
            except Exception as e:
                traceback.print_exception(e)  # the whole story in the log (or on the console with --verbose)
                raise
        bad = [rel for rel in stage.outputs(layout, ctx.cfg)
               if not layout.path(rel).is_file() or layout.path(rel).stat().st_size == 0]
        if bad:
            raise EdgeError(f"{stage.name}: declared output(s) {', '.join(bad)} missing or empty after the stage")
    except Exception as e:  # noqa: BLE001  a tool's own exception (NNCF, onnx2tf, torch) fails the stage, not the run
        ctx.errors[stage.name] = e  # the cause, for --verbose and the verb's `raise ... from`
        status, error = "failed", str(e) if isinstance(e, EdgeError) else f"{type(e).__name__}: {e}".splitlines()[0]
        if log.is_file():
            error += f" (tools' output and traceback: {log})"
        if stage.builds():
            mark_failed(stage, ctx, error)
    wall = time.perf_counter() - start
    outputs = {rel: fingerprint(layout, rel) for rel in stage.outputs(layout, ctx.cfg)
               if status == "ok" and layout.path(rel).is_file()}  # a failed stage produced nothing to vouch for
    entry = {"key": key, "status": status, "error": error, "wall_s": round(wall, 2), "outputs": outputs,
             "records": owned(stage, ctx)}
    _update_manifest(layout, stage.name, entry)
    if status == "ok":
        shown = stage.records(layout, ctx.cfg) if stage.builds() else list(outputs)
        gates = [f"{rel}: {reason}" for rel in stage.records(layout, ctx.cfg) if stage.builds()
                 for st, reason in [records.status(records.read(layout, rel))] if st == "gate"]
        done = ", ".join(_describe(layout, r) for r in shown) or f"{len(entry['records'])} record(s)"
        print(f"{stage.name} ok {wall:.1f} s -> {done}"
              + ("; GATE FAILED: " + "; ".join(gates) if gates else ""), file=sys.stderr)
    return entry  # a failure is printed once, by the caller (run's summary or the verb's error line)


@dataclass
class Outcome:
    """What a verb or `run` reports at the end: failed stages (the causes), skipped ones, and rows that failed."""

    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rows: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"{name}: {error}" for name, error in self.failed.items()] + self.rows
