"""Host latency and memory of artifacts: each measured in its own subprocess (so peak RSS belongs to that model),
through the same Runner as evaluation: TFLite via LiteRT (XNNPACK), ONNX via onnxruntime, torch eager.

Per artifact and thread count: latency after warm-up over a fixed number of runs (median, p90, min), peak RSS of the
process and the part of it the model added (RSS after loading and running, less RSS after imports), and the OS threads
the runtime started (the proof that the thread count was honoured: a pool of N threads adds N - 1). A failing artifact
becomes a result with its error, never a crash; in a run it is the row's `bench failed` status.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core import records
from ..core.errors import EdgeError
from ..core.host import host
from ..core.layout import tflite_memory
from ..engine.contract import Stage
from ..engine.memory import memory_figures
from ..engine.runners import python_apart


def measure(path: str, threads: int, warmup: int, runs: int, shape: list[int], mode: str = "interpreter") -> dict:
    """Runs inside the worker process. A TFLite file: device_tests/tflite_memory.py's measurement, the same one a
    board runs, with its memory attribution under `memory`."""
    from ..engine.runners import open_runner

    if path.endswith(".tflite"):
        return measure_tflite(path, threads, warmup, runs, mode)

    tm = tflite_memory()  # its /proc readings and timing loop, for every format
    base, base_threads = tm.proc_status(), tm.os_threads()
    if not base:
        raise EdgeError("no /proc/self/smaps: the host benchmark measures memory on Linux only")
    start = time.perf_counter()
    runner = open_runner(path, threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runner(x)
    init_ms = (time.perf_counter() - start) * 1e3
    runtime_threads = tm.os_threads() - base_threads
    times = tm.timed(runner, x, warmup, runs)
    ran = tm.proc_status()
    return {
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        **tm.latency_figures(times),
        "init_ms": init_ms,
        "peak_rss_mib": ran["VmHWM"],
        "model_rss_mib": ran["VmRSS"] - base["VmRSS"],
        "runtime_threads": runtime_threads,
    }


def measure_tflite(path: str, threads: int, warmup: int, runs: int, mode: str = "interpreter") -> dict:
    """By default LiteRT's Interpreter with XNNPACK, as TFLiteRunner opens it (tflite_memory.MODES lists the other
    ways); the input shape is the file's."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        row, _ = tflite_memory().attribute(path, mode, threads, Interpreter, warmup, runs)
    except (ValueError, RuntimeError) as e:  # the runtimes' words for a file they cannot load or run
        raise EdgeError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from e
    keep = ("latency_ms_median", "latency_ms_p90", "latency_ms_min", "peak_rss_mib", "runtime_threads")
    return {
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        **{k: row.get(k) for k in keep},
        "init_ms": row["load_ms"] + row["first_ms"],
        "model_rss_mib": row.get("rss_added_mib"),
        "memory": row,
    }


def measure_in_process(path: Path, n: int, warmup: int, runs: int, shape: list[int], mode: str, timeout: int) -> dict:
    """measure() in a fresh process of its own: its result, or {"error": ...}."""
    code = (
        "import json, sys; from pipeline.stages.benchmark import measure; "
        f"print('RESULT ' + json.dumps(measure({str(Path(path).resolve())!r}, {n}, {warmup}, {runs}, {shape!r}, "
        f"{mode!r})))"
    )
    try:
        return python_apart(code, [], n, timeout)  # the path is absolute: any cwd of the caller
    except EdgeError as e:
        return {"error": str(e)}


def measure_shipped(path: Path, threads: int, warmup: int, runs: int, timeout: int) -> dict:
    """A TFLite file run as the device bundle ships it (tflite_memory.SHIPPED_MODE: CompiledModel with XNNPACK's
    weight cache), at `threads`: a copy in a temporary folder (the cache is written beside it, never into the run), one
    process that writes the cache, then the measured one that maps it, as every launch after the first does."""
    mode = tflite_memory().SHIPPED_MODE
    with tempfile.TemporaryDirectory(prefix="shipped-") as tmp:
        copy = Path(tmp) / Path(path).name
        shutil.copyfile(path, copy)
        cold = measure_in_process(copy, threads, 0, 1, [], mode, timeout)
        cell = cold if "error" in cold else measure_in_process(copy, threads, warmup, runs, [], mode, timeout)
    return {"mode": mode, "threads": {str(threads): cell}}


def benchmark_one(
    path: Path,
    shape: list[int],
    threads: list[int],
    warmup: int,
    runs: int,
    timeout: int = 600,
    mode: str = "interpreter",
    shipped: bool = False,
) -> dict:
    """One artifact at each thread count, each in a fresh process: {"threads": {"1": {...} or {"error": ...}}}.
    mode: how a TFLite file is run (device_tests/tflite_memory.py's MODES). shipped: a TFLite file is also measured
    as the device bundle runs it, at the largest thread count (`shipped`: measure_shipped)."""
    cells = {str(n): measure_in_process(path, n, warmup, runs, shape, mode, timeout) for n in threads}
    result = {"input_shape": shape, "runs": runs, "warmup": warmup, "host": host(), "threads": cells}
    if shipped and str(path).endswith(".tflite"):
        result["shipped"] = measure_shipped(path, max(threads), warmup, runs, timeout)
    return result


def benchmark(artifacts: list[Path], shape: list[int], threads: list[int], warmup: int, runs: int) -> list[dict]:
    """Latency and memory of each artifact at each thread count, one subprocess each; a TFLite file's memory also as
    the device bundle ships it."""
    if runs < 1 or warmup < 0 or not threads or min(threads) < 1:
        raise EdgeError(
            f"bench_runs={runs} bench_warmup={warmup} bench_threads={threads}: need runs >= 1, "
            f"warmup >= 0 and thread counts >= 1"
        )
    results = []
    for path in artifacts:
        if not Path(path).is_file():
            raise EdgeError(f"{path}: artifact not found")
        result = benchmark_one(Path(path), shape, threads, warmup, runs, shipped=True)
        results.append(result)
        cells = [
            f"{n} thr {c['latency_ms_median']:.2f} ms" if "error" not in c else f"{n} thr failed: {c['error']}"
            for n, c in result["threads"].items()
        ]
        shipped = memory_figures(result)
        if shipped["memory_mode"] not in (None, "interpreter"):
            cells.append(
                f"{shipped['model_mib']:.1f} MiB as shipped ({shipped['memory_mode']}), "
                f"{shipped['interpreter_model_mib']:.1f} MiB with the Interpreter"
            )
        print(f"  benchmark {Path(path).name}: " + ", ".join(cells), file=sys.stderr)
    return results


def benchmark_stage(ctx) -> None:
    """Every artifact of the run that was built, at cfg's thread counts: the `benchmark` section of its record."""
    from ..data import input_shape  # torch: here, not in the TFLite workers that import this module

    layout, cfg = ctx.layout, ctx.cfg
    built = [rel for rel in ctx.rows if records.built(layout, rel)]
    results = benchmark(
        [layout.path(rel) for rel in built], input_shape(cfg), cfg.thread_counts, cfg.bench_warmup, cfg.bench_runs
    )
    for rel, result in zip(built, results, strict=True):
        records.write(layout, rel, benchmark=result)


STAGE = Stage(
    "benchmark",
    benchmark_stage,
    "host latency (median/p90, 1 thread and all cores) and peak RSS of every row, and "
    "its memory as shipped (CompiledModel + weight cache)",
    needs=("export",),
    keys=frozenset({"bench_runs", "bench_warmup", "bench_threads", "image_size", "in_channels", "data_source"}),
    inputs=lambda ctx: ctx.rows,
    records=lambda ctx: ctx.rows,
    needs_run=True,
    sections=("benchmark",),
    uses_data=False,
)
