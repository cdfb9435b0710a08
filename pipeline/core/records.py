"""One result record per artifact (`results/<artifact path>.json`) and one Gate type. The report reads only these.

A record has sections, each written by one owner:
  build       the stage that made the artifact: status ok | failed (with the one-line reason) | skipped, format,
              precision, method, compression figures, bytes, gzip size, sha256, calibration data
  evaluation  top-1/top-5 on a named split, with what it was measured on (split, images, data id, config hash) and
              the fp32 reference's top-1 on the same images
  gates       Gate dicts: parity, agreement, int8 drop (the size gate is the report's: it depends on max_size_mib)
  benchmark   latency and memory per thread count, or the error
The manifest keeps a digest of the sections each stage owns, so `run` notices when a section changed on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .artifacts import atomic_write_json, file_sha
from .layout import Layout
from .precision import is_int8_tflite

BUILD_SECTIONS = ("build", "evaluation", "gates")
STATUSES = ("pass", "gate", "failed", "bench failed", "skipped", "unchecked", "stale")
LEGEND = (
    "status: pass = built and passed every gate; gate = built, failed a gate (named); failed = not built "
    "(reason given); bench failed = built and gated, the benchmark failed (reason given); skipped = not built "
    "because a stage it needs failed, or its stage has not run yet (reason given); unchecked = built and "
    "measured, but checked against nothing (no gate applies: not a pass); stale = built from an older model, "
    "file or data than the run's now (what changed is named): its figures describe something else"
)


@dataclass(frozen=True)
class Gate:
    """One check of one figure against one threshold, the same for parity, agreement, int8 drop and size."""

    name: str  # parity | agreement | int8 drop | size
    figure: str  # what was measured, against what, e.g. "max |dlogit| vs onnx/model.onnx"
    value: float
    threshold: float
    passed: bool

    @classmethod
    def at_most(cls, name: str, figure: str, value: float, threshold: float) -> Gate:
        return cls(name, figure, float(value), float(threshold), bool(value <= threshold))

    @classmethod
    def at_least(cls, name: str, figure: str, value: float, threshold: float) -> Gate:
        return cls(name, figure, float(value), float(threshold), bool(value >= threshold))

    def text(self) -> str:
        side = "<=" if "drop" in self.name or "parity" in self.name or self.name == "size" else ">="
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.name} {verdict}: {self.figure} {self.value:.4g} (need {side} {self.threshold:g})"

    def to_dict(self) -> dict:
        return asdict(self)


def _load(layout: Layout, artifact: str) -> tuple[dict, str | None]:
    """(record, why it cannot be read): ({}, None) where there is none yet."""
    path = layout.record(artifact)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, f"{path}: unreadable record ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if not isinstance(record, dict):
        return {}, f"{path}: not a record (a JSON {type(record).__name__})"
    return record, None


def read(layout: Layout, artifact: str) -> dict:
    """The artifact's record; one that cannot be read is a failed build naming why."""
    record, why = _load(layout, artifact)
    return {"build": {"status": "failed", "error": why}} if why else record


def unreadable(layout: Layout, artifact: str) -> str | None:
    """Why the artifact's record cannot be read (a file cut off or edited by hand, no permission), or None."""
    return _load(layout, artifact)[1]


def write(layout: Layout, artifact: str, **sections) -> dict:
    """Replace the given sections of the artifact's record (others kept), atomically."""
    record = read(layout, artifact) | {"artifact": layout.rel(artifact)}
    for name, value in sections.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    atomic_write_json(layout.record(artifact), record)
    return record


def digest(record: dict, sections: tuple[str, ...]) -> str:
    """sha256 of the named sections: what the manifest keeps for the stage that owns them."""
    data = json.dumps({s: record.get(s) for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def gates(record: dict) -> list[Gate]:
    return [Gate(**g) for g in record.get("gates") or []]


def size_gates(record: dict, max_size_mib: float) -> list[Gate]:
    """max_size_mib > 0: an int8 .tflite file (the kind meant to ship) must be at most that large. The report's gate:
    changing the limit re-makes the report, nothing else."""
    build = record.get("build") or {}
    if (
        max_size_mib <= 0
        or build.get("status") != "ok"
        or not is_int8_tflite(build.get("format"), build.get("precision"))
    ):
        return []
    return [Gate.at_most("size", "file size (MiB)", build["size_mib"], max_size_mib)]


def status(record: dict, extra_gates: list[Gate] = ()) -> tuple[str, str | None]:
    """(status, reason) of one record: the only place a row's status is decided."""
    build = record.get("build") or {}
    if not build or build.get("status") == "skipped":
        return "skipped", build.get("error") or "not built yet"
    if build.get("status") != "ok":
        return "failed", build.get("error") or "not built"
    every = [*gates(record), *extra_gates]
    failed = [g for g in every if not g.passed]
    if failed:
        return "gate", "; ".join(g.text() for g in failed)
    if not every:
        return "unchecked", "no gate: checked against nothing (no reference model, no device/host pair)"
    bench = record.get("benchmark") or {}
    errors = [f"{t} thread(s): {cell['error']}" for t, cell in (bench.get("threads") or {}).items() if "error" in cell]
    if bench.get("error") or errors:
        return "bench failed", bench.get("error") or "; ".join(errors)
    return "pass", None


def stale(layout: Layout, artifact: str, _depth: int = 0) -> str | None:
    """Why a built record no longer describes what the run holds, or None: its file changed since it was measured,
    a file it was built from changed (or was itself built from something that changed since: lineage is followed
    through the records), or the run's data is not the data it was built from. A record without lineage (an older
    run) is taken as it stands."""
    build = read(layout, artifact).get("build") or {}
    if build.get("status") != "ok" or _depth > 16:
        return None
    if build.get("sha256") and file_sha(layout.path(artifact)) not in (None, build["sha256"]):
        return f"{artifact} changed on disk since it was built and measured"
    for source, sha in (build.get("lineage") or {}).items():
        if source == "data":
            now = _run_data(layout)
            if now is not None and now != sha:
                return f"built from other data (content id {sha}) than the run's now ({now})"
        elif file_sha(layout.path(source)) != sha:
            return f"built from an older {source} (it changed since)"
        else:
            behind = stale(layout, source, _depth + 1)
            if behind:
                return behind
    return None


def _run_data(layout: Layout) -> str | None:
    try:
        return json.loads(layout.manifest.read_text()).get("data")
    except (OSError, json.JSONDecodeError):
        return None


def row_status(layout: Layout, artifact: str, max_size_mib: float) -> tuple[str, str | None]:
    """A run row's (status, reason): its record's status with the report's size gate, `stale` where its lineage no
    longer holds. What report, bundle and `run`'s verdict all read."""
    record = read(layout, artifact)
    found = status(record, size_gates(record, max_size_mib))
    if found[0] in ("skipped", "failed"):
        return found
    why = stale(layout, artifact)
    if why:
        return "stale", f"{why}; `resnet-edge run name={layout.root.name}` rebuilds it"
    return found


def passed(layout: Layout, artifact: str, max_size_mib: float) -> bool:
    """Built, current and within every gate, the size gate included: what may be shipped."""
    return row_status(layout, artifact, max_size_mib)[0] in ("pass", "bench failed")


def built(layout: Layout, artifact: str) -> bool:
    """The artifact's file exists and its record says it was built (a failed rebuild leaves an old file untrusted)."""
    return layout.path(artifact).is_file() and (read(layout, artifact).get("build") or {}).get("status") == "ok"
