"""The stage contract. A Stage declares, once and beside its code, everything that is the stage's: its name and verb
help, the stages it cannot do without, the config keys its result depends on, the config switch that leaves it out of
`run`, the files it reads and writes (relative to the run) and the artifacts whose records it writes. pipeline.chain
only orders the declarations; the CLI verbs, the Python API, `run`'s switches, the report's rows and the cache keys
are derived from them.

One skip-or-rerun decision (`decide`) and one wrapper (`run_stage`) serve every stage, from `run` or from a single
verb: the wrapper times it, checks every declared output exists and is non-empty, turns a failure into `failed`
records naming the reason, writes one log line, and records outputs (sha256) and owned record sections (digests) in
the manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import console, records
from ..core.artifacts import MIB, file_sha
from ..core.errors import EdgeError
from ..core.layout import Layout
from ..core.records import BUILD_SECTIONS
from .context import Context
from .manifest import read_manifest, update_stage

Spec = Callable[[Context], list[str]]  # what a stage reads, writes or records, as names relative to the run


def _none(ctx: Context) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    name: str  # also its verb: `resnet-edge <name>` and `pipeline.<name>(cfg)`
    function: Callable[[Context], None]  # the stage's work, beside which it is declared
    help: str  # the verb's one-line help
    needs: tuple[str, ...]  # stages it cannot do without: when one of them failed, this one is skipped
    keys: frozenset[str]  # config keys its result depends on (the rest of the cache key is its inputs' content)
    switch: str | None = None  # the bool config key that leaves it out of `run` when false; None: always runs
    # beyond a switch, what else in the config brings it into `run` (fit: a budget); None: nothing else
    wanted: Callable[[object], bool] | None = None
    inputs: Spec = _none  # files read; "<record>#<sections>": those sections of a record
    outputs: Spec = _none  # files written: must exist, non-empty, afterwards
    records: Spec = _none  # artifacts whose record sections it writes; a building stage's are the report's rows
    # the inputs its artifacts are built from (the lineage in their records); None: every input. Not a file it only
    # compares its results with.
    sources: Spec | None = None
    sections: tuple[str, ...] = BUILD_SECTIONS  # the record sections it owns
    uses_data: bool = True  # reads the data set: loaded (and checked against the config) before any stage starts
    needs_run: bool = False  # reads a run it did not make: its verb opens an existing run (RUN_DIR or name=)
    resumable: Callable[[Context], bool] | None = None  # whether an interrupted run of it can continue (resume=true)
    # its refusals at the door, before anything is written (fit: a budget it can work to); raises EdgeError
    check: Callable[[object], None] | None = None
    # its result measures this host (fit's latency budget, timed here): the host's CPU is part of its cache key, and
    # a run folder copied to another machine runs it again there
    on_host: Callable[[object], bool] | None = None
    # a single verb's own check once the stage ran ok, beyond its rows' gates (report: the size gate, stale rows);
    # raises EdgeError
    verdict: Callable[[Context], None] | None = None

    def call(self, ctx: Context) -> None:
        self.function(ctx)

    def builds(self) -> bool:
        """It builds artifacts: its records are rows of the report."""
        return "build" in self.sections

    def runs(self, cfg) -> bool:
        """Whether `run` runs it for cfg (its switch on, or no switch; and wanted, where it says)."""
        return (self.switch is None or bool(getattr(cfg, self.switch))) and (self.wanted is None or self.wanted(cfg))


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
    inputs = {spec: fingerprint(ctx.layout, spec) for spec in stage.inputs(ctx)}
    if stage.uses_data:
        inputs["data"] = ctx.data_identity
    if stage.on_host is not None and stage.on_host(ctx.cfg):
        inputs["host"] = host_identity()
    return hashlib.sha256(json.dumps([stage.name, conf, inputs], sort_keys=True, default=str).encode()).hexdigest()


def host_identity() -> dict:
    """What a latency measured here holds for: the CPU, its architecture and the ISA flags XNNPACK picks kernels by."""
    import platform

    from ..core.host import host
    from .latency_table import isa

    return {"cpu": host()["cpu"], "machine": platform.machine(), "isa": isa()}


def lineage(stage: Stage, ctx: Context) -> dict[str, str]:
    """The files a stage builds from (sha256) and the data (content id): kept in each record it builds, so that a
    row built from an older model or other data is known for it (records.stale)."""
    made_from = (stage.sources or stage.inputs)(ctx)
    out = {spec: fingerprint(ctx.layout, spec) for spec in made_from if "#" not in spec}
    if stage.uses_data and ctx.data_identity:
        out["data"] = ctx.data_identity
    return {k: v for k, v in out.items() if v}


# --- skip or rerun -------------------------------------------------------------------------------------------------


def owned(stage: Stage, ctx: Context) -> dict[str, str]:
    """Digests of the record sections this stage owns, for the artifacts it declares."""
    out = {}
    for rel in stage.records(ctx):
        record = records.read(ctx.layout, rel)
        if any(s in record for s in stage.sections):
            out[rel] = records.digest(record, stage.sections)
    return out


def decide(stage: Stage, ctx: Context, force: bool = False) -> tuple[str, str]:
    """What to do with a stage whose needs are met, and its key: "cached" (key unchanged, it last ended ok, its
    outputs and record sections on disk as the manifest recorded them; never with force), "resume" (interrupted under
    the same key, and the stage says it can continue) or "run"."""
    key = stage_key(stage, ctx)
    done = read_manifest(ctx.layout)["stages"].get(stage.name, {})
    same = done.get("key") == key
    if not force and same and done.get("status") == "ok":
        on_disk = all(fingerprint(ctx.layout, rel) == sha for rel, sha in done.get("outputs", {}).items())
        declared = set(stage.outputs(ctx)) <= set(done.get("outputs", {}))
        if on_disk and declared and owned(stage, ctx) == done.get("records", {}):
            return "cached", key
    if same and done.get("status") == "started" and stage.resumable and stage.resumable(ctx):
        return "resume", key
    return "run", key


# --- the wrapper ---------------------------------------------------------------------------------------------------


def _describe(layout: Layout, rel: str) -> str:
    path = layout.path(rel)
    record = records.read(layout, rel)
    top1 = (record.get("evaluation") or {}).get("top1")
    accuracy = (
        f", top-1 {100 * top1:.2f}%" if top1 is not None and record.get("build", {}).get("status") == "ok" else ""
    )
    return f"{rel} ({path.stat().st_size / MIB:.2f} MiB{accuracy})" if path.is_file() else rel


def _mark(stage: Stage, ctx: Context, rel: str, status: str, reason: str) -> None:
    """A row the stage did not build: its record says why, and holds nothing measured of an older file."""
    build = {"status": status, "stage": stage.name, "error": reason}
    records.write(ctx.layout, rel, build=build, evaluation=None, gates=None, benchmark=None)


def mark_failed(stage: Stage, ctx: Context, reason: str) -> None:
    """Every artifact the stage declares but did not (re)build in this invocation gets a `failed` record."""
    for rel in stage.records(ctx):
        if (records.read(ctx.layout, rel).get("build") or {}).get("invocation") != ctx.invocation:
            _mark(stage, ctx, rel, "failed", reason)


def mark_skipped(stage: Stage, ctx: Context, reason: str) -> dict:
    if stage.builds():
        for rel in stage.records(ctx):
            _mark(stage, ctx, rel, "skipped", reason)
    entry = {"status": "skipped", "error": reason}
    update_stage(ctx.layout, stage.name, entry)
    print(f"{stage.name} skipped ({reason})", file=sys.stderr)
    return entry


def run_stage(stage: Stage, ctx: Context, key: str | None = None) -> dict:
    """Run one stage under the contract; returns its manifest entry (status ok | failed, error, outputs, wall_s)."""
    layout = ctx.layout
    key = key or stage_key(stage, ctx)
    ctx.stage, ctx.invocation = stage.name, f"{stage.name}-{time.time_ns()}"
    ctx.lineage = lineage(stage, ctx)
    update_stage(layout, stage.name, {"key": key, "status": "started"})
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
        bad = [
            rel for rel in stage.outputs(ctx) if not layout.path(rel).is_file() or layout.path(rel).stat().st_size == 0
        ]
        if bad:
            raise EdgeError(f"{stage.name}: declared output(s) {', '.join(bad)} missing or empty after the stage")
    except KeyboardInterrupt:  # Ctrl-C: nothing half-made stays a row; the rerun starts afresh (or resumes)
        if stage.builds():  # its outputs were never checked: none of its rows stands, however far it got
            for rel in stage.records(ctx):
                _mark(stage, ctx, rel, "failed", f"interrupted; `resnet-edge {stage.name}` makes it again")
        if stage.resumable is None:
            update_stage(layout, stage.name, {"key": key, "status": "interrupted", "error": "interrupted"})
        raise
    except Exception as e:  # noqa: BLE001  a tool's own exception (NNCF, onnx2tf, torch) fails the stage, not the run
        ctx.errors[stage.name] = e  # the cause, for --verbose and the verb's `raise ... from`
        status, error = "failed", str(e) if isinstance(e, EdgeError) else f"{type(e).__name__}: {e}".splitlines()[0]
        if log.is_file():
            error += f" (tools' output and traceback: {log})"
        if stage.builds():
            mark_failed(stage, ctx, error)
    wall = time.perf_counter() - start
    outputs = {
        rel: fingerprint(layout, rel) for rel in stage.outputs(ctx) if status == "ok" and layout.path(rel).is_file()
    }  # a failed stage produced nothing to vouch for
    entry = {
        "key": key,
        "status": status,
        "error": error,
        "wall_s": round(wall, 2),
        "outputs": outputs,
        "records": owned(stage, ctx),
    }
    update_stage(layout, stage.name, entry)
    if status == "ok":
        shown = stage.records(ctx) if stage.builds() else list(outputs)
        gates = [
            f"{rel}: {reason}"
            for rel in stage.records(ctx)
            if stage.builds()
            for st, reason in [records.status(records.read(layout, rel))]
            if st == "gate"
        ]
        done = ", ".join(_describe(layout, r) for r in shown) or f"{len(entry['records'])} record(s)"
        print(
            f"{stage.name} ok {wall:.1f} s -> {done}" + ("; GATE FAILED: " + "; ".join(gates) if gates else ""),
            file=sys.stderr,
        )
    return entry  # a failure is printed once, by the caller (run's summary or the verb's error line)


@dataclass
class Outcome:
    """What a verb or `run` reports at the end: failed stages (the causes), skipped ones, and rows that failed."""

    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rows: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"{name}: {error}" for name, error in self.failed.items()] + self.rows
