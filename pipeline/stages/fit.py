"""The fit stage: give a budget, get the file. `resnet-edge fit budget_ms=2` (ms per image at budget_size px on
budget_threads threads, LiteRT + XNNPACK int8, measured on this host), `budget_speedup=10` (times faster than the
run's own fp32 TFLite file, both measured here at that size and thread count) or `budget_mib=3` (file size) -> the most
accurate int8 file within it that the search finds, tflite/fit_<budget>_int8.tflite (and NNCF's PT2E route), gated
as every compressed row.

1. A latency table (pipeline.engine.latency_table) of every op shape the search can ask for, at the budget's size and
   thread count, built once and cached in fit/ (reused while this host, runtime, size and threads are the same).
2. The dense model's int8 file at the budget's size, timed whole: the table's per-MiB calibration (and, for a speedup,
   the fp32 file beside it: the reference).
3. The search over the channel groups (pipeline.engine.fit_search), on the validation split: NetAdapt's greedy steps
   (fit_search=netadapt) or each group's sensitivity and one accuracy level (fit_search=sensitivity).
4. The final distilled fine-tune (structured_epochs at structured_lr), then the file at the budget's size timed whole:
   over the budget, the search takes one more step. The report shows the prediction beside the measured figure.

latency_table=<file> (budget_ms only): the table a device measured (device_tests/latency_table.py on the bundle's
latency pack, pipeline.engine.device_table) replaces steps 1-2; nothing is timed here, and the file at the budget's
size is left in fit/ for the device to time (its device/*.json then shows in the report beside the prediction).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..config.keys import BUDGET_KEYS, FINETUNE_KEYS, GATED_KEYS
from ..core import console
from ..core.artifacts import MIB, atomic_write_json
from ..core.errors import EdgeError
from ..core.names import derived_files
from ..engine.checkpoint import derived_checkpoint, model_from_checkpoint, save_checkpoint
from ..engine.contract import Stage
from ..engine.fit_files import fittable, lowest_checkpoint, setup, whole_at_size
from ..engine.gated import deliver
from ..engine.summary import count_macs
from .train import fine_tune

UNITS = {key.removeprefix("budget_"): unit for key, unit in zip(BUDGET_KEYS, ("ms", "x", "mib"), strict=True)}
METHODS = {"netadapt": "NetAdapt greedy channel search", "sensitivity": "per-group sensitivity, one accuracy level"}
EXTRA_STEPS = 2  # when the whole file misses the budget the table predicted it meets: at most this many more steps


def budget_of(cfg) -> tuple[str, float] | None:
    """The one budget the config gives, as (kind, value), or None."""
    given = [(kind, float(getattr(cfg, f"budget_{kind}"))) for kind in UNITS if getattr(cfg, f"budget_{kind}")]
    if len(given) > 1:
        raise EdgeError(
            " ".join(f"budget_{k}={v:g}" for k, v in given)
            + ": give one budget (budget_ms, budget_speedup or budget_mib)"
        )
    return given[0] if given else None


def fit_name(cfg) -> str:
    """fit_2ms, fit_10x, fit_2p5mib: the rows' name, from the budget."""
    budget = budget_of(cfg)
    if budget is None:
        return "fit"
    return f"fit_{budget[1]:g}{UNITS[budget[0]]}".replace(".", "p")


def fit_json(ctx) -> Path:
    return ctx.layout.path(f"fit/{fit_name(ctx.cfg)}.json")


def _check(cfg) -> tuple[str, float]:
    budget = budget_of(cfg)
    if budget is None:
        raise EdgeError(
            "fit: give a budget: budget_ms=2 (ms per image), budget_speedup=10 (x the fp32 file) or budget_mib=3"
        )
    if not fittable(cfg):
        raise EdgeError(
            f"fit: model={cfg.model} shortcut={cfg.shortcut}: the search prunes ResNets with projection shortcuts "
            "(shortcut=B), whose latency table holds plain convs"
        )
    return budget


def tidy(ctx) -> list[Path]:
    """fit/ once the answer is delivered (keep_fit_files=false): the files made at the budget's size go; the tables
    and records stay, and the dense and fastest-plan int8 files with the fastest plan's checkpoint (the next fit and
    the bundle's latency pack reuse them), and each file a device's table left for the device to time."""
    folder, size = ctx.layout.path("fit"), ctx.cfg.budget_size
    keep = {f"dense_{size}px_int8.tflite", f"lowest_{size}px_int8.tflite", "lowest.pt"}
    for record in folder.glob("*.json"):
        try:
            left = (json.loads(record.read_text()).get("device") or {}).get("file")
        except (OSError, ValueError, AttributeError):
            left = None
        keep |= {Path(left).name} if left else set()
    gone = [p for p in folder.iterdir() if p.is_file() and p.suffix != ".json" and p.name not in keep]
    for path in gone:
        path.unlink()
    return gone


def fit_stage(ctx) -> None:
    """Search channel counts per group on a measured latency table until the budget holds; fine-tune; deliver."""
    from quantization.channels import plan_shapes

    from ..data import preprocess
    from ..engine.device_table import load as load_device_table
    from ..engine.device_table import who
    from ..engine.fit_search import Space, grid_shapes, search, sensitivity, top1, uniform
    from ..engine.latency_table import LatencyTable, entry_key, weight_mib, wholes

    layout, cfg = ctx.layout, ctx.cfg
    kind, value = _check(cfg)
    say = lambda line: print(line, file=console.err())  # noqa: E731
    started = time.perf_counter()
    s = setup(ctx)
    best, parent, dense, example, groups, grid, shapes = (
        s.best,
        s.parent,
        s.dense,
        s.example,
        s.groups,
        s.grid,
        s.shapes,
    )
    size, threads = cfg.budget_size, cfg.budget_threads

    # 1-2. the table (this host's, or the device's: latency_table=), and the dense files at the budget's size timed
    key = s.key
    on_device = bool(cfg.latency_table)
    if on_device:
        table = load_device_table(Path(cfg.latency_table), size, threads, key)
        say(f"  fit: the latency table measured on {who(table.identity)} ({cfg.latency_table})")
        dense_files = {}
    else:
        table = LatencyTable(layout.path(f"fit/latency_{size}px_{threads}thr.json"), size, threads)
        dense_files = whole_at_size(ctx, best, "dense", ("int8", "fp32") if kind == "speedup" else ("int8",))
    calibration, reference = None, {}
    if on_device:  # the device's own entries and whole files: nothing is timed here
        table.measure(grid_shapes(shapes, groups, grid))
        calibration = table.rest[key]
        reference = {"dense_int8_ms": calibration["whole_ms"]}
    elif kind != "mib":  # a size budget needs no timing
        need = grid_shapes(shapes, groups, grid)
        todo = len({entry_key(s) for s in need} - set(table.entries))
        if todo:  # one session in a fresh process: no bar of its rounds to show, so one line before it
            say(f"  fit: timing {todo} latency-table entries at {size} px, {threads} thread(s) (rounds until stable)")
        table.measure(need)
        if key not in table.rest or table.measured:  # the line through the two ends: the dense file, the fastest plan
            fastest_file = whole_at_size(ctx, lowest_checkpoint(ctx, s), "lowest", ("int8",))["int8"]
            table.calibrate(key, {dense_files["int8"]: shapes, fastest_file: plan_shapes(shapes, groups, s.lowest)})
        table.save()
        calibration = table.rest[key]
        reference = {"dense_int8_ms": calibration["whole_ms"]}
    if kind == "speedup":  # the fp32 file and the dense int8 file timed together; fp32 at the calibration's speed
        timed = wholes([dense_files["int8"], dense_files["fp32"]], threads)
        reference = {
            "dense_int8_ms": calibration["whole_ms"],
            "fp32_ms": timed[dense_files["fp32"]] * calibration["whole_ms"] / timed[dense_files["int8"]],
            "timed": {"dense_int8_ms": timed[dense_files["int8"]], "fp32_ms": timed[dense_files["fp32"]]},
        }
    target = {"ms": value, "speedup": reference.get("fp32_ms", 0) / value, "mib": value}[kind]

    if kind == "mib":  # the file: the dense file's bytes less the weights a plan removes
        dense_file = dense_files["int8"].stat().st_size / MIB
        dense_w = weight_mib(shapes)

        def cost(plan: dict[str, int]) -> float:
            return dense_file - dense_w + weight_mib(plan_shapes(shapes, groups, plan))

    else:

        def cost(plan: dict[str, int]) -> float:
            return table.predict(key, plan_shapes(shapes, groups, plan))

    # 3. the search, on the validation split
    val = ctx.val_set
    bn_images = preprocess(np.asarray(ctx.data.train.images[:512]), ctx.data.norm, cfg.image_size)
    space = Space(groups, grid, cost, example, bn_images, val)
    teacher = model_from_checkpoint(parent).eval()
    tune_cfg = dataclasses.replace(cfg, finetune_subset=cfg.fit_step_images)

    def tune(model) -> None:
        if cfg.fit_step_images:
            fine_tune(model, tune_cfg, ctx.data, 1, cfg.structured_lr, teacher=teacher, plain=True)
        model.cpu().eval()

    unit = "MiB" if kind == "mib" else "ms"
    say(
        f"  fit: budget {value:g} {UNITS[kind]} -> target {target:.3f} {unit}; "
        f"dense int8 predicted {cost({}):.3f} {unit}"
    )
    if cfg.fit_search == "sensitivity":
        result = sensitivity(copy.deepcopy(dense), space, target, log=say)
    else:
        result = search(copy.deepcopy(dense), space, target, tune, cfg.fit_steps, log=say)
    record = {
        "search": cfg.fit_search,
        "budget": {"kind": kind, "value": value, "size": size, "threads": threads, "target": target, "unit": unit},
        "reference": reference,
        "table": (
            {
                "path": str(table.path) if on_device else layout.rel(table.path),
                "identity": table.identity,
                "entries": len(table.entries),
                "source": table.source,
            }
            if calibration
            else None
        ),
        "calibration": calibration,
        "fastest": result.fastest,
        "dense_val_top1": top1(dense, *val),
        "uniform": uniform(dense, space),
    }
    if not result.feasible:
        atomic_write_json(fit_json(ctx), {**record, "feasible": False, "trace": result.trace})
        raise EdgeError(
            f"fit {fit_name(cfg)}: no plan reaches {target:.3f} {unit}; the fastest reachable is {result.fastest:.3f} "
            f"{unit} (every group at its fewest channels{', ' + str(size) + ' px' if unit == 'ms' else ''}); "
            f"the search trace is in {layout.rel(fit_json(ctx))}"
        )

    # 4. final fine-tune, then the whole file measured; one more step while it misses the budget
    name = fit_name(cfg)
    pruned, trace = bool(result.trace), list(result.trace)
    if not pruned:
        say(f"  fit: the dense int8 file meets the budget ({result.cost:.3f} {unit} predicted): no pruning")
    for extra in range(EXTRA_STEPS + 1):
        if pruned:  # after one more step, a shorter fine-tune: the model was fine-tuned already
            epochs = cfg.structured_epochs if not extra else max(1, cfg.structured_epochs // 3)
            fine_tune(result.model, cfg, ctx.data, epochs, cfg.structured_lr, teacher=teacher, plain=True)
        model = result.model.cpu().eval()
        build = {
            "method": f"fit: {METHODS[cfg.fit_search]} on a measured latency table" if pruned else "fit: dense",
            "plan": result.plan,
            "channels_kept": sum(result.plan.values()) / sum(g.channels for g in groups),
            "predicted": result.cost,
            "macs": count_macs(model, example),
            "epochs": cfg.structured_epochs if pruned else 0,
            "kd": {"alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature},
        }
        ckpt = save_checkpoint(derived_checkpoint(parent, model, compression=build), layout.quant(f"{name}.pt"))
        measured = None
        if on_device:  # the file at the budget's size, for the device to time (it cannot be timed here)
            at_size = whole_at_size(ctx, ckpt, name, ("int8",))["int8"]
            record["device"] = {"file": layout.rel(at_size), "predicted_ms": result.cost, "on": who(table.identity)}
        elif unit == "ms":  # timed in the same rounds as the dense file
            at_size = whole_at_size(ctx, ckpt, name, ("int8",))["int8"]
            now = wholes([dense_files["int8"], at_size], threads)
            dense_now = dense_files["int8"]
            if now[at_size] / now[dense_now] * calibration["whole_ms"] > target:  # a second opinion before cutting
                again = wholes([dense_now, at_size], threads)
                now = again if again[at_size] / again[dense_now] < now[at_size] / now[dense_now] else now
            # the file's ms at the host's speed of the calibration: its ratio to the dense file timed in the same
            # rounds, times the dense file's calibrated ms (a VM's slow spell outlasts whole timings: raw ms of 6.4
            # for a 4.4 ms file were seen; the ratio held)
            drift = now[dense_files["int8"]] / calibration["whole_ms"]
            measured = now[at_size] / drift
            record["timed"] = {
                "file": layout.rel(at_size),
                "ms": measured,
                "raw_ms": now[at_size],
                "dense_int8_ms": now[dense_files["int8"]],
                "drift": drift,
                "error": measured / result.cost - 1,
            }
        if measured is None or measured <= target or not pruned or extra == EXTRA_STEPS:
            break
        say(
            f"  fit: measured {measured:.3f} ms over the target {target:.3f} ms (predicted {result.cost:.3f}): "
            "one more step"
        )
        # one more of the search's own steps (or as far as the file missed by, if that is less), never past the fastest
        step = (calibration["whole_ms"] - target) / cfg.fit_steps
        step_target = max(result.fastest, result.cost * target / measured, result.cost - step)
        result = search(result.model, space, step_target, tune, 1, plan=result.plan, log=say)
        trace += [{**t, "iteration": len(trace) + i, "after_measuring": True} for i, t in enumerate(result.trace, 1)]
    if measured is not None and measured > target:
        atomic_write_json(fit_json(ctx), {**record, "feasible": True, "plan": result.plan, "trace": trace})
        raise EdgeError(
            f"fit {name}: the file measures {measured:.3f} ms at {size} px, over the {target:.3f} ms target after "
            f"{EXTRA_STEPS} more steps (predicted {result.cost:.3f} ms); not returned. "
            f"Trace: {layout.rel(fit_json(ctx))}"
        )
    record |= {
        "feasible": True,
        "pruned": pruned,
        "plan": result.plan,
        "predicted": result.cost,
        "measured_ms": measured,
        "trace": trace,
        "val_top1": top1(model, *val),
        "seconds": time.perf_counter() - started,
    }
    fit_build = {k: record[k] for k in ("budget", "predicted", "measured_ms", "fastest")}
    if on_device:  # the row carries the device's predicted latency, and whose table it is
        fit_build["predicted_on"] = record["device"]["on"]
    deliver(ctx, ckpt, name, {**build, "fit": fit_build})
    if unit == "MiB":
        record["measured_mib"] = layout.tflite(f"{name}_int8").stat().st_size / MIB
    record["files_kept"] = cfg.keep_fit_files
    atomic_write_json(fit_json(ctx), record)
    if not cfg.keep_fit_files:
        tidy(ctx)
    if on_device:
        say(
            f"  fit {name}: {len(record['trace'])} steps, predicted {result.cost:.3f} ms on {record['device']['on']}, "
            f"{record['seconds']:.0f} s; time {record['device']['file']} there (bench_tflite.py --threads {threads}) "
            "and copy its JSON into device/: the report shows it measured beside the prediction"
        )
        return
    say(
        f"  fit {name}: {len(record['trace'])} steps, predicted {result.cost:.3f} {unit}, measured "
        f"{(measured if unit == 'ms' else record['measured_mib']):.3f} {unit}"
        + (
            f" (at the calibration's speed: {record['timed']['raw_ms']:.3f} ms raw beside the dense int8 file's "
            f"{record['timed']['dense_int8_ms']:.3f}, {calibration['whole_ms']:.3f} ms at calibration; prediction "
            f"{100 * record['timed']['error']:+.1f}% off)"
            if unit == "ms"
            else ""
        )
        + f", {record['seconds']:.0f} s"
    )


STAGE = Stage(
    "fit",
    fit_stage,
    "the most accurate int8 file within a budget (budget_ms=, budget_speedup= or budget_mib=): a per-layer channel "
    "search on a measured latency table",
    needs=("export",),
    wanted=lambda cfg: budget_of(cfg) is not None,
    check=_check,
    on_host=lambda cfg: not cfg.latency_table and not cfg.budget_mib,
    keys=GATED_KEYS
    | FINETUNE_KEYS
    | {
        *BUDGET_KEYS,
        "budget_size",
        "budget_threads",
        "latency_table",
        "fit_steps",
        "fit_levels",
        "fit_step_images",
        "fit_search",
        "keep_fit_files",
        "structured_round_to",
        "structured_epochs",
        "structured_lr",
        "model",
        "shortcut",
        "pt2e_algorithm",
        "run_litert",
    },
    inputs=lambda ctx: (
        ctx.names(ctx.layout.onnx, ctx.layout.best)
        + ([str(Path(ctx.cfg.latency_table).resolve())] if Path(ctx.cfg.latency_table or "/-").is_file() else [])
    ),
    sources=lambda ctx: ctx.names(ctx.layout.onnx, ctx.layout.best),  # a device's table: in the fit record, not a row
    outputs=lambda ctx: ctx.names(*derived_files(ctx.layout, fit_name(ctx.cfg), ctx.cfg), fit_json(ctx)),
    records=lambda ctx: ctx.names(*derived_files(ctx.layout, fit_name(ctx.cfg), ctx.cfg)[2:]),
)
