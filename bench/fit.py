"""`resnet-edge fit` on a trained run (default: runs/default, the `make demo` ResNet-18, full 10,000-image test split):
each budget by each search (NetAdapt's greedy steps and AIMET-style per-group sensitivity), and beside each budget
one ratio for every layer (the prune_structured stage, the same final fine-tune and distillation) at the ratio whose
predicted latency matches the fit file's, every file timed whole at the budget's size in the same rounds: target,
predicted and measured ms, top-1 and drop on the test split, MiB, search and stage time. Prints one table, writes JSON.
A speedup budget is the first search's: its target in ms is given to the others as budget_ms (the fp32 file's timing
moves with this host's load, and the searches should meet one target).

    python bench/fit.py [name=default budgets=speedup20,speedup10,ms3.4 searches=netadapt,sensitivity ...]

It reads the run and never writes into it: every variant is a run of its own under runs/<name>-fit/<variant>/, seeded
with the run's checkpoint and ONNX model (and the latency table once one variant has built it) and made by the same
stage code as `resnet-edge run`. A variant that fails (an infeasible budget) is a row with its one-line reason.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path

from benchkit import entry, write_table
from compression import _cell, row, seed

from pipeline.chain import context, stages
from pipeline.config import open_run, parse_overrides
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.core.layout import Layout
from pipeline.engine.contract import run_stage
from pipeline.engine.manifest import begin_run

KINDS = {"speedup": "budget_speedup", "ms": "budget_ms", "mib": "budget_mib"}


def budget(text: str) -> tuple[str, float]:
    """speedup20 -> ("budget_speedup", 20.0); ms3.4; mib1.5."""
    m = re.fullmatch(r"(speedup|ms|mib)([0-9.]+)", text)
    if not m:
        raise EdgeError(f"budgets={text}: each like speedup20, ms3.4 or mib1.5")
    return KINDS[m[1]], float(m[2])


def variant(cfg, out: Path, folder: str, stage: str, changes: dict, data, source: Layout, table: Path | None):
    """Run one stage in a run of its own under `out`: (its context, the manifest entry, seconds)."""
    v = dataclasses.replace(cfg, runs_dir=str(out), name=folder, **changes)
    ctx = context(v, data)
    seed(source, ctx.layout)
    if table is not None and table.is_file():  # the table one variant built: a cache, keyed by its own identity
        dst = ctx.layout.path(f"fit/{table.name}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(table, dst)
    begin_run(ctx)
    start = time.perf_counter()
    done = run_stage(stages()[stage], ctx)
    return ctx, done, time.perf_counter() - start


def uniform_ratio(ctx, target_ms: float) -> float:
    """The prune_structured ratio (0.00 to 0.95 by 0.01) whose plan, every group at 1 - ratio of its channels in
    multiples of round_to, the fit run's table predicts closest to `target_ms` (the ops of those plans that the
    search's grid lacks timed first, in one session)."""
    from pipeline.engine.fit_files import setup
    from pipeline.engine.latency_table import LatencyTable
    from quantization.channels import plan_shapes

    cfg = ctx.cfg
    base = setup(ctx)
    groups, shapes = base.groups, base.shapes
    path = ctx.layout.path(f"fit/latency_{cfg.budget_size}px_{cfg.budget_threads}thr.json")
    table, step = LatencyTable(path, cfg.budget_size, cfg.budget_threads), cfg.structured_round_to
    plans = {
        r / 100: {g.name: max(step, round(g.channels * (1 - r / 100) / step) * step) for g in groups} for r in range(96)
    }
    table.measure([s for plan in plans.values() for s in plan_shapes(shapes, groups, plan)])
    table.save()
    return min(plans, key=lambda r: abs(table.predict(base.key, plan_shapes(shapes, groups, plans[r])) - target_ms))


def main(argv: list[str]) -> int:
    from pipeline.core.names import structured_name
    from pipeline.engine.fit_files import whole_at_size
    from pipeline.stages.fit import fit_json, fit_name

    overrides = parse_overrides(argv)
    budgets = [budget(b.strip()) for b in overrides.pop("budgets", "speedup20,speedup10,ms3.4").split(",") if b.strip()]
    searches = [s.strip() for s in overrides.pop("searches", "netadapt,sensitivity").split(",") if s.strip()]
    cfg = open_run(None, overrides)
    cfg = dataclasses.replace(cfg, **dict.fromkeys(KINDS.values(), 0.0))  # the run's own budget, if any: not ours
    source = Layout(cfg.run_dir)
    for path, stage in ((source.best, "train"), (source.onnx, "export")):
        if not path.is_file():
            raise EdgeError(f"{path}: missing; run `resnet-edge {stage} name={source.root.name}` (or run) first")
    out = source.companion("fit")
    rows, data, table = [], None, None
    for key, value in budgets:
        kind, label = key.removeprefix("budget_"), f"{key.removeprefix('budget_')}={value:g}"
        found = []
        given = {key: value}
        for search in searches:
            folder = f"{kind}{value:g}_{search}".replace(".", "p")
            ctx, done, seconds = variant(cfg, out, folder, "fit", {**given, "fit_search": search}, data, source, table)
            data, table = ctx.data, ctx.layout.path(f"fit/latency_{cfg.budget_size}px_{cfg.budget_threads}thr.json")
            record = json.loads(fit_json(ctx).read_text()) if fit_json(ctx).is_file() else {}
            r = {
                "budget": label,
                "variant": search,
                "stage_s": round(seconds, 1),
                "error": done.get("error"),
                "target": (record.get("budget") or {}).get("target"),
                "fastest": record.get("fastest"),
                "predicted": record.get("predicted"),
                "measured_ms": record.get("measured_ms"),
                "search_s": round(sum(t.get("seconds", 0) for t in record.get("trace", [])), 1),
                "steps": len(record.get("trace", [])),
            }
            int8 = ctx.layout.rel(ctx.layout.tflite(f"{fit_name(ctx.cfg)}_int8"))
            if not done.get("error") and ctx.layout.record(int8).is_file():
                r |= row(ctx.layout, int8, search)
                if record.get("timed"):
                    r["_file"] = ctx.layout.path(record["timed"]["file"])
                found.append((ctx, r))
            rows.append(r)
            if kind == "speedup" and r["target"]:  # the next searches get the same ms (the fp32 file's timing moves)
                given = {"budget_ms": round(r["target"], 4)}
            print(f"fit bench: {label} {search}: {r['error'] or r['measured_ms']} ({seconds:.0f} s)", file=sys.stderr)
        if not found:
            continue
        # one ratio for every layer, at the predicted latency of the budget's most accurate fit file
        fit_ctx, best = max(found, key=lambda f: f[1].get("top1") or 0)
        ratio = uniform_ratio(fit_ctx, best["predicted"])
        folder = f"{kind}{value:g}_uniform".replace(".", "p")
        changes = {"structured_ratio": ratio}
        ctx, done, seconds = variant(cfg, out, folder, "prune_structured", changes, data, source, None)
        name = structured_name(ctx.cfg)
        int8 = ctx.layout.rel(ctx.layout.tflite(f"{name}_int8"))
        r = {"budget": label, "variant": f"uniform {ratio:g}", "stage_s": round(seconds, 1), "error": done.get("error")}
        if not done.get("error") and ctx.layout.record(int8).is_file():
            r |= row(ctx.layout, int8, f"uniform {ratio:g}")
            made = whole_at_size(fit_ctx, ctx.layout.quant(f"{name}.pt"), f"uniform_{name}", ("int8",))
            r["_file"] = made["int8"]
        rows.append(r)
        time_together([r for r in rows if r["budget"] == label], fit_ctx, cfg)
    for r in rows:
        r.pop("_file", None)
    table_lines(rows, cfg, source)
    return write_table(out / "fit_bench.json", {"host": host(), "config": dataclasses.asdict(cfg), "rows": rows})


def time_together(mine: list[dict], fit_ctx, cfg) -> None:
    """The budget's files (each fit file at the budget's size, the uniform file re-made at it) and the dense int8 file
    timed whole in the same rounds: ms_together, dense_ms_together."""
    from pipeline.engine.latency_table import wholes

    dense = fit_ctx.layout.path(f"fit/dense_{cfg.budget_size}px_int8.tflite")
    files = [r["_file"] for r in mine if r.get("_file")]
    timed = wholes([dense, *files], cfg.budget_threads)
    for r in mine:
        if r.get("_file"):
            r["ms_together"], r["dense_ms_together"] = timed[r["_file"]], timed[dense]


def table_lines(rows: list[dict], cfg, source: Layout) -> None:
    print(
        f"fit bench: {cfg.model} of {source.root}, test split, latency at {cfg.budget_size} px, {cfg.budget_threads} "
        f"thread(s), LiteRT + XNNPACK int8, fastest burst; host {host()['cpu']}; MiB = 2^20 bytes"
    )
    print(
        "| budget | search | target ms | predicted ms | measured ms (stage) | ms together | dense ms together | "
        "top-1 % | drop pts | status | MiB | channels kept | steps | search s | stage s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        top1 = 100 * r["top1"] if r.get("top1") is not None else None
        print(
            f"| {r['budget']} | {r['variant']} | {_cell(r.get('target'), '.3f')} | "
            f"{_cell(r.get('predicted'), '.3f')} | "
            f"{_cell(r.get('measured_ms'), '.3f')} | {_cell(r.get('ms_together'), '.3f')} | "
            f"{_cell(r.get('dense_ms_together'), '.3f')} | {_cell(top1, '.2f')} | "
            f"{_cell(r.get('drop_points'), '.2f')} | "
            f"{r.get('status') or (r['error'] or '-')[:90]} | {_cell(r.get('size_mib'), '.2f')} | "
            f"{_cell(r.get('channels_kept'), '.2f')} | {r.get('steps', '-')} | {_cell(r.get('search_s'), '.0f')} | "
            f"{_cell(r.get('stage_s'), '.0f')} |"
        )


if __name__ == "__main__":
    entry(main)
