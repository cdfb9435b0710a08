"""`resnet-edge run`: every stage of pipeline.chain into <runs_dir>/<name>/, in one process (the data is loaded
once), recorded in manifest.json (resolved config, versions, host, per-stage key, wall time, outputs with sha256).

A stage is skipped when its key (its config keys and its inputs' content) is unchanged, it last ended ok, and its
recorded outputs and record sections are on disk as the manifest says; otherwise it runs again, and so do the stages
that read what it writes (their inputs changed). force=true runs everything. An interrupted run continues from the
stage it was in. A failed stage's dependents are skipped, not failed. Gate failures do not stop the chain: the
report is written, then run exits non-zero naming every failed stage and every row that did not pass.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from .chain import context, stages, stages_for
from .config import Config
from .core import records
from .core.artifacts import atomic_write, atomic_write_json
from .core.errors import EdgeError
from .core.names import fallback_path
from .engine.context import Context
from .engine.contract import Outcome, decide, mark_skipped, run_stage
from .engine.manifest import begin_run, read_manifest, record_run, stage_table


def run(cfg: Config, force: bool = False, ctx: Context | None = None) -> Outcome:
    start = time.perf_counter()
    for stage in stages_for(cfg):  # every stage's refusals before anything is written
        if stage.check is not None:
            stage.check(cfg)
    ctx = ctx or context(cfg)
    ctx.data  # noqa: B018  (at the door: the data loads, and fits the config, before any stage starts)
    begin_run(ctx)
    outcome = Outcome()
    roots: dict[str, list[str]] = {}  # a skipped stage -> the failed stage(s) behind it
    table: list[tuple[str, str, float | None]] = []  # (stage, what happened this time, seconds)
    for stage in stages_for(cfg):
        missing = sorted(
            {r for n in stage.needs if n in outcome.failed or n in outcome.skipped for r in roots.get(n, [n])}
        )
        if missing:
            roots[stage.name] = missing
            outcome.skipped[stage.name] = f"needs {', '.join(missing)}"
            mark_skipped(stage, ctx, outcome.skipped[stage.name])
            table.append((stage.name, "skipped", None))
            continue
        action, key = decide(stage, ctx, force)
        if action == "cached":
            print(f"{stage.name} unchanged, skipped", file=sys.stderr)
            table.append((stage.name, "cached", 0.0))
            continue
        if action == "resume":
            ctx.cfg = cfg = dataclasses.replace(cfg, resume=True)  # an interrupted stage continues (train: last.pt)
        entry = run_stage(stage, ctx, key)
        table.append((stage.name, entry["status"], entry["wall_s"]))
        if entry["status"] != "ok":
            outcome.failed[stage.name] = entry["error"]
            print(f"{stage.name} FAILED after {entry['wall_s']:.1f} s (the reason closes the run)", file=sys.stderr)
    outcome.rows += row_problems(ctx, set(outcome.failed))
    problems = outcome.problems()
    total = time.perf_counter() - start
    record_run(ctx.layout, table, total)
    print("\n".join(stage_table(table, total)), file=sys.stderr)
    print(
        f"run {'FAILED' if problems else 'ok'}: {ctx.layout.root}"
        + (
            f" ({len(outcome.skipped)} stage(s) skipped: "
            + ", ".join(f"{k} ({v})" for k, v in outcome.skipped.items())
            + ")"
            if outcome.skipped
            else ""
        ),
        file=sys.stderr,
    )
    if problems:
        cause = next(iter(ctx.errors.values()), None)
        raise EdgeError("run failed: " + " | ".join(problems)) from cause
    return outcome


def row_problems(ctx: Context, failed_stages: set[str] = frozenset()) -> list[str]:
    """The run's rows that did not pass, each with its reason: a gate (max_size_mib's included), a failed benchmark,
    a failed build (unless its stage's own failure already says so), a record checked against nothing."""
    out = []
    for rel in ctx.rows:
        record = records.read(ctx.layout, rel)
        status, reason = records.row_status(ctx.layout, rel, ctx.cfg.max_size_mib)
        if status in ("gate", "bench failed", "unchecked", "stale") or (
            status == "failed" and record.get("build", {}).get("stage") not in failed_stages
        ):
            out.append(f"{rel}: {status}: {reason}{_repair(ctx.layout, rel)}")
    return out


def run_one(stage_name: str, cfg: Config) -> int:
    """One stage of the chain under the same contract (a single verb); EdgeError naming the failure or each of its
    rows that failed a gate."""
    stage = stages()[stage_name]
    if stage.check is not None:  # its refusals before anything is written
        stage.check(cfg)
    ctx = context(cfg)
    if stage.needs_run:  # it reads the run's records: one that cannot be read is bad input
        bad = [why for rel in ctx.rows for why in [records.unreadable(ctx.layout, rel)] if why]
        if bad:
            raise EdgeError(
                f"{bad[0]}{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; delete it and "
                f"`resnet-edge run name={ctx.layout.root.name}` rebuilds its row"
            )
    if stage.uses_data:
        ctx.data  # noqa: B018  (at the door, as in run)
    saved = ctx.layout.config.read_bytes() if ctx.layout.config.is_file() else None
    begin_run(ctx)
    entry = {"status": "interrupted"}  # Ctrl-C keeps the config: the next `run` continues what was asked
    try:
        entry = run_stage(stage, ctx)
    except Exception:
        entry = {"status": "failed"}
        raise
    finally:
        if saved is not None and entry["status"] == "failed":  # a verb that made nothing leaves the run's config
            restore_config(ctx, saved)  # as it was (the next `run` included)
    if entry["status"] != "ok":
        raise EdgeError(f"{stage_name} failed: {entry['error']}") from ctx.errors.get(stage_name)
    failed = [
        f"{rel}: {reason}{_repair(ctx.layout, rel)}"
        for rel in stage.records(ctx)
        for st, reason in [records.status(records.read(ctx.layout, rel))]
        if st == "gate"
    ]
    if stage.builds() and (ctx.layout.report_dir / "report.md").is_file():  # the report does not show them yet
        print(
            f"{stage_name}: report/ does not show these rows yet; `resnet-edge run {ctx.layout.root}` benchmarks "
            f"them and writes it again (`resnet-edge report {ctx.layout.root}`: the report alone)",
            file=sys.stderr,
        )
    if failed:
        raise EdgeError(f"{stage_name}: gate failed: " + " | ".join(failed))
    if stage.verdict is not None:
        stage.verdict(ctx)
    return 0


def restore_config(ctx: Context, saved: bytes) -> None:
    """config.yaml back to `saved` (its bytes before the verb), and the manifest's copy of it."""
    from .config import load_config

    atomic_write(ctx.layout.config, lambda tmp: tmp.write_bytes(saved))
    manifest = read_manifest(ctx.layout)
    manifest["config"] = load_config(ctx.layout.config).to_dict()
    atomic_write_json(ctx.layout.manifest, manifest)


def _repair(layout, rel: str) -> str:
    """What quant_fallback made of a row that failed its gate, if anything."""
    fixed = layout.rel(fallback_path(layout.path(rel)))
    record = records.read(layout, fixed)
    if not record.get("build"):
        return ""
    return (
        f" (repaired: {fixed} {records.status(record)[0]} with "
        f"{len(record['build'].get('float_layers') or [])} layer(s) in float)"
    )
