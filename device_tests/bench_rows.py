"""The rows bench_tflite.py writes, in the schema `resnet-edge report` merges (device_results_<host>_<time>.json), and
the table it prints: one row per model, its thread counts' cells folded in, and the host it ran on. Part of the device
bundle; imports nothing from resnet-edge."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tflite_precision import tflite_precision  # noqa: E402  (the bundle's own copy of the precision rule)

DISTRIBUTIONS = {
    "ai_edge_litert.interpreter": "ai-edge-litert",
    "tflite_runtime.interpreter": "tflite-runtime",
    "tensorflow.lite": "tensorflow",
}


def runtime_version(name: str) -> str | None:
    """The installed version of the runtime's package, e.g. 2.3.0 for ai_edge_litert.interpreter."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:
        return None
    try:
        return version(DISTRIBUTIONS[name])
    except (PackageNotFoundError, KeyError):
        return None


def precision(path: str) -> str | None:
    """From the file's tensor types (tflite_precision.py, the bundle's copy of the pipeline's rule)."""
    try:
        return tflite_precision(path)
    except (OSError, ValueError):
        return None


def host() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "name": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
    }


def make_row(path: str, cells: dict[int, dict], expected: dict, runtime: str, where: dict) -> dict:
    ok = {n: c for n, c in cells.items() if "error" not in c}
    name = os.path.basename(path)
    threads = sorted(cells)
    fallback = next((c["fallback"] for c in ok.values() if c.get("fallback")), None)
    row = {
        "artifact": name,
        "format": "tflite",
        "precision": precision(path),
        "status": "pass" if len(ok) == len(cells) else "failed",
        "error": next((c["error"] for c in cells.values() if "error" in c), None),
        "size_mib": os.path.getsize(path) / 2**20 if os.path.isfile(path) else None,
        "top1": next((c["top1"] for c in ok.values() if "top1" in c), None),
        "images": next((c["images"] for c in ok.values() if "images" in c), None),
        "predictions": next((c["predictions"] for c in ok.values() if "predictions" in c), None),
        "ms_1": ok.get(1, {}).get("latency_ms_median"),
        "ms_n": ok.get(threads[-1], {}).get("latency_ms_median"),
        "threads_n": threads[-1],
        "peak_rss_mib": max((c["peak_rss_mib"] or 0 for c in ok.values()), default=None),
        **memory_figures(ok.values()),
        "fallback": fallback,
        "source": f"device:{where['name']}",
        "runtime": runtime,
        "per_thread": {f"t{n}": {k: v for k, v in c.items() if k != "predictions"} for n, c in cells.items()},
    }
    host_top1 = expected.get(name)
    if host_top1 is not None and row["top1"] is not None:
        row["host_top1"] = host_top1
        row["matches_host"] = abs(row["top1"] - host_top1) < 1e-9
    return row


def memory_figures(cells) -> dict:
    """The row's memory: the thread count's cell that used most (model MiB, floor, anonymous MiB, mode)."""
    memory = [c["memory"] for c in cells if (c.get("memory") or {}).get("model_mib") is not None]
    top = max(memory, key=lambda m: m["model_mib"], default={})
    return {
        "mode": next((c.get("mode") for c in cells), None),
        "model_mib": top.get("model_mib"),
        "floor_mib": top.get("floor_mib"),
        "anon_mib": top.get("anon_mib"),
    }


def write_json(path: str, rows: list[dict], where: dict, runtime: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(
            {"host": where, "runtime": runtime, "runtime_version": runtime_version(runtime), "rows": rows}, f, indent=2
        )
    os.replace(tmp, path)


def table(rows: list[dict]) -> str:
    head = [
        "model",
        "precision",
        "status",
        "mode",
        "MiB",
        "top-1",
        "host top-1",
        "ms @1",
        "ms @N",
        "N",
        "peak RSS MiB",
        "model MiB",
        "floor MiB",
    ]
    out = [" | ".join(head)]
    for r in rows:

        def f(v, d=2):
            return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

        out.append(
            " | ".join(
                [
                    r["artifact"],
                    f(r["precision"]),
                    r["status"],
                    f(r.get("mode")),
                    f(r["size_mib"]),
                    f(r["top1"], 4),
                    f(r.get("host_top1"), 4),
                    f(r["ms_1"]),
                    f(r["ms_n"]),
                    f(r["threads_n"]),
                    f(r["peak_rss_mib"], 0),
                    f(r.get("model_mib"), 1),
                    f(r.get("floor_mib"), 1),
                ]
            )
        )
    return "\n".join(out)
