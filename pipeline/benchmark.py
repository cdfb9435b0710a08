"""Host latency and memory of artifacts: each measured in its own subprocess (so peak RSS belongs to that model),
through the same Runner as evaluation: TFLite via LiteRT (XNNPACK), ONNX via onnxruntime, torch eager.

Per artifact and thread count: latency after warm-up over a fixed number of runs (median, p90, min), peak RSS of the
process and the part of it the model added (RSS after loading and running, less RSS after imports), file and gzip
size. A failing artifact becomes a row with its error, never a crash.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .artifacts import atomic_write_json, file_sizes
from .errors import EdgeError

MIB = 2**20


def host() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version()}


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not getrusage's ru_maxrss: a child inherits its parent's peak
    across fork and exec, which would charge pytest's or the pipeline's memory to the model."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise EdgeError(f"/proc/self/status has no {field}")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def measure(path: str, threads: int, warmup: int, runs: int, shape: list[int]) -> dict:
    """Runs inside the worker process."""
    from .runners import open_runner

    base_rss = _rss_mib()
    start = time.perf_counter()
    runner = open_runner(path, threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runner(x)
    init_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
    peak = _status_mib("VmHWM")
    return {"threads": threads, "runs": runs, "warmup": warmup, "latency_ms_median": float(np.median(times)),
            "latency_ms_p90": float(np.percentile(times, 90)), "latency_ms_min": float(np.min(times)),
            "init_ms": init_ms, "peak_rss_mib": peak, "model_rss_mib": _rss_mib() - base_rss}


def benchmark_one(path: Path, shape: list[int], threads: list[int], warmup: int, runs: int,
                  timeout: int = 600) -> dict:
    row: dict = {"artifact": str(path), **file_sizes(path), "input_shape": shape}
    for n in threads:
        code = ("import json, sys; from pipeline.benchmark import measure; "
                f"print('RESULT ' + json.dumps(measure({str(path)!r}, {n}, {warmup}, {runs}, {shape!r})))")
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=Path(__file__).resolve().parents[1])
        except subprocess.TimeoutExpired:
            row[f"t{n}"] = {"error": f"timed out after {timeout} s"}
            continue
        result = next((ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or result is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row[f"t{n}"] = {"error": tail[:300]}
        else:
            row[f"t{n}"] = json.loads(result)
    return row


def benchmark(artifacts: list[Path], shape: list[int], out_dir: Path | None = None, threads: list[int] | None = None,
              warmup: int = 10, runs: int = 50) -> list[dict]:
    """Latency at 1 thread and at all cores (default), one subprocess per artifact and thread count."""
    threads = threads or sorted({1, os.cpu_count() or 1})
    if runs < 1 or warmup < 0:
        raise EdgeError(f"bench runs={runs} warmup={warmup}: need runs >= 1 and warmup >= 0")
    rows = []
    for path in artifacts:
        if not Path(path).is_file():
            raise EdgeError(f"{path}: artifact not found")
        row = benchmark_one(Path(path), shape, threads, warmup, runs) | {"host": host()}
        rows.append(row)
        if out_dir is not None:
            atomic_write_json(Path(out_dir) / f"{Path(path).stem}.json", row)
        cells = [f"{n} thr {row[f't{n}']['latency_ms_median']:.2f} ms" if "error" not in row[f"t{n}"]
                 else f"{n} thr failed: {row[f't{n}']['error']}" for n in threads]
        print(f"benchmark {Path(path).name}: " + ", ".join(cells), file=sys.stderr)
    return rows
