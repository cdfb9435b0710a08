#!/usr/bin/env python3
"""Benchmark and validate .tflite files on the board itself: latency (min, median, p90), init time, memory (where
each MiB goes: tflite_memory.py) and top-1 on the bundle's eval.npz. Needs numpy and one TFLite runtime, tried in
order: ai_edge_litert, tflite_runtime, tensorflow.lite. Imports nothing from resnet-edge.

    python bench_tflite.py models/int8.tflite models/fp32.tflite --eval eval.npz --threads 1,4

--mode (default auto): how the model runs. auto is compiled_cache where the runtime has LiteRT's CompiledModel
(ai-edge-litert >= 2) and no --delegate is given: XNNPACK's packed weights go to a cache file beside the model
(<model>.xnnpack_cache, written on the first run, mapped after), which takes the int8 ResNet-18 at 224x224 from 29.4 to
20.6 MiB at the same latency; elsewhere the Interpreter. A model auto's CompiledModel cannot load or run (all, with
ai-edge-litert 2.3.0 under qemu on arm64) runs again without the cache, then with the Interpreter; the row's `mode`
and `fallback` say which ran and why. --mode interpreter turns the cache off; --mode compiled_lean also rebuilds
convolutions' indirection buffers at each inference (18.3 MiB, 10-20% slower; see tflite_memory.py).

Each model and thread count runs in its own process, so peak RSS belongs to that model and a crashing model cannot
take the others down. Rows are printed as a table and written as JSON (device_results_<host>_<time>.json) in the schema
`resnet-edge report` merges; the file is rewritten after every model, so a failure keeps what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rows import host, make_row, table, write_json  # noqa: E402  (the rows it writes)
from tflite_memory import MODES, SHIPPED_MODE, attribute  # noqa: E402  (where the memory goes, measured)
from tflite_precision import tflite_precision  # noqa: E402  (the bundle's own copy of the precision rule)

RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
INSTALL_HINT = (
    "pip install numpy ai-edge-litert (or, where it has no wheel: pip install 'numpy<2' tflite-runtime; "
    "tflite-runtime 2.14 needs numpy<2 and glibc>=2.34 on aarch64)"
)


class BenchError(Exception):
    """A problem with the input or the machine: one line, printed as `error: ...`."""


def find_runtime():
    """(module name, Interpreter class, load_delegate function) of the first runtime that imports."""
    import importlib

    for name in RUNTIMES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "tensorflow.lite":
            return name, module.Interpreter, module.experimental.load_delegate
        return name, module.Interpreter, module.load_delegate
    raise BenchError(f"no TFLite runtime found (tried {', '.join(RUNTIMES)}): {INSTALL_HINT}")


def _status_mib(field: str) -> float | None:
    """VmHWM (peak) or VmRSS of this process from /proc (Linux, Android); None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mib() -> float | None:
    peak = _status_mib("VmHWM")
    if peak is None:
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS reports bytes
        except (ImportError, OSError):
            pass
    return peak


def unreadable(path: str) -> str | None:
    """Why a model file cannot be run, read before any runtime opens it; None when it reads as a TFLite file."""
    if not os.path.isfile(path):
        return f"{path}: file not found"
    try:
        tflite_precision(path)
    except (OSError, ValueError) as e:
        return str(e).splitlines()[0][:300]
    return None


def choose_mode(mode: str, delegate: str | None) -> str:
    """auto: SHIPPED_MODE where LiteRT's CompiledModel is there and no delegate is asked for, else interpreter."""
    if mode != "auto":
        if delegate and not mode.startswith("interpreter"):
            raise BenchError(
                f"--mode {mode} runs LiteRT's CompiledModel, which takes no --delegate: use --mode interpreter"
            )
        return mode
    if delegate or find_runtime()[0] != "ai_edge_litert.interpreter":
        return "interpreter"
    try:
        import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError:
        return "interpreter"
    return SHIPPED_MODE


class Model:
    """A loaded runner (tflite_memory.Runner) fed float images: NCHW/NHWC and int8 input/output handled by the
    tensors' own scale and zero point (read from the file's Interpreter details: CompiledModel reports none)."""

    def __init__(self, runner, path: str, interpreter_cls) -> None:
        import numpy as np

        self.np, self.runner = np, runner
        details = runner.interpreter if hasattr(runner, "interpreter") else interpreter_cls(model_path=path)
        self.input, self.output = details.get_input_details()[0], details.get_output_details()[0]

    def __call__(self, x):
        np = self.np
        if x.ndim == 4 and list(self.input["shape"][1:]) != list(x.shape[1:]):
            x = x.transpose(0, 3, 1, 2)  # a model that takes NCHW
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        y = self.runner(np.ascontiguousarray(x.astype(dtype)))
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


def measure(
    path: str,
    threads: int,
    warmup: int,
    runs: int,
    eval_path: str | None,
    delegate: str | None,
    keep_predictions: bool = False,
    mode: str = "interpreter",
) -> dict:
    """Inside the worker process: load, time and read the memory (tflite_memory.attribute), then score on
    eval.npz."""
    import numpy as np

    _, interpreter_cls, load_delegate = find_runtime()
    try:
        delegates = [load_delegate(delegate)] if delegate else None
    except Exception as e:  # missing file, wrong ABI, a library that is no delegate
        raise BenchError(
            f"{delegate}: cannot load the delegate ({str(e).splitlines()[0][:200]}); check the path "
            f"and that it is built for this board and runtime version"
        ) from e
    try:
        memory, runner = attribute(path, mode, threads, interpreter_cls, warmup, runs, delegates)
    except Exception as e:  # the runtimes raise ValueError or RuntimeError, worded differently
        raise BenchError(f"{path}: the runtime cannot load it ({str(e).splitlines()[0][:200]})") from e
    model = Model(runner, path, interpreter_cls)
    keep = ("latency_ms_min", "latency_ms_median", "latency_ms_p90", "peak_rss_mib")
    row = {
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "mode": mode,
        "init_ms": memory["load_ms"] + memory["first_ms"],
        **{k: memory.get(k) for k in keep},
        "input_dtype": np.dtype(model.input["dtype"]).name,
        "input_shape": [int(d) for d in model.input["shape"]],
        "memory": memory,
    }
    if row["peak_rss_mib"] is None:
        row["peak_rss_mib"] = _peak_rss_mib()
    if eval_path:  # after the memory is read: the images are not the model's memory
        data = np.load(eval_path)
        images, labels = data["x"], data["labels"]
        n = int(model.input["shape"][0]) or 1
        pred = np.concatenate([model(images[i : i + n]).argmax(-1) for i in range(0, len(images), n)])
        row |= {"top1": float((pred == labels).mean()), "images": int(len(labels))}
        if keep_predictions:
            row["predictions"] = [int(p) for p in pred]
    return row


# auto's ways down when a mode cannot load or run a model: without the weight cache, then the Interpreter
FALLBACK = {"compiled_cache": "compiled", "compiled_lean": "compiled", "compiled": "interpreter"}


def run_cell(path: str, threads: int, args, mode: str) -> dict:
    """One model at one thread count in `mode`; under --mode auto, a failure other than a timeout tries the next mode
    of FALLBACK, and the cell says which mode ran (`mode`) and what failed before it (`fallback`)."""
    cell, failed = run_worker(path, threads, args, mode), []
    while "error" in cell and args.auto and mode in FALLBACK and not cell.get("timed_out"):
        failed.append(f"{mode}: {cell['error']}")
        mode = FALLBACK[mode]
        cell = run_worker(path, threads, args, mode)
    if failed and "error" not in cell:
        cell["fallback"] = "; ".join(failed)
    return cell


def run_worker(path: str, threads: int, args, mode: str | None = None) -> dict:
    """One model at one thread count in a fresh process of this script."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        path,
        "--threads",
        str(threads),
        "--warmup",
        str(args.warmup),
        "--runs",
        str(args.runs),
        "--mode",
        mode or args.mode,
    ]
    if args.eval and threads == args.thread_list[0]:
        cmd += ["--eval", args.eval]
    if args.delegate:
        cmd += ["--delegate", args.delegate]
    if args.predictions:
        cmd += ["--predictions"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s: raise --timeout or lower --runs", "timed_out": True}
    line = next((ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode == 0 and line:
        return json.loads(line)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    reason = next((ln[7:] for ln in reversed(lines) if ln.startswith("error: ")), None)
    if reason is None:
        reason = (lines[-1][:300] if lines else "no output") + (
            f" (exit {proc.returncode}{', killed by signal ' + str(-proc.returncode) if proc.returncode < 0 else ''})"
        )
    return {"error": reason}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=".tflite files")
    p.add_argument("--eval", help="the bundle's eval.npz (x: float32 NHWC, labels); omit for latency only")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--delegate", help="path of a delegate library (.so) to load, e.g. an NPU's")
    p.add_argument("--timeout", type=int, default=900, help="seconds per model and thread count")
    p.add_argument("--out", help="JSON file (default: device_results_<hostname>_<YYYYmmdd-HHMMSS>.json)")
    p.add_argument(
        "--mode",
        default="auto",
        choices=("auto", *MODES),
        help="how models run (default auto: compiled_cache where the runtime has it, else interpreter)",
    )
    p.add_argument(
        "--predictions",
        action="store_true",
        help="keep every image's predicted class in the JSON (to compare two runtimes image by image)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.thread_list = sorted({int(t) for t in (args.threads or f"1,{os.cpu_count() or 1}").split(",") if t})
    except ValueError as e:
        raise BenchError(f"--threads {args.threads}: expected comma-separated integers, e.g. 1,4") from e
    if not args.thread_list or args.thread_list[0] < 1 or args.runs < 1 or args.warmup < 0:
        raise BenchError("need --threads >= 1, --runs >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        if args.worker:
            result = measure(
                args.worker,
                args.thread_list[0],
                args.warmup,
                args.runs,
                args.eval,
                args.delegate,
                args.predictions,
                args.mode,
            )
            print("RESULT " + json.dumps(result))
            return 0
        runtime = find_runtime()[0]
        args.auto = args.mode == "auto"
        args.mode = choose_mode(args.mode, args.delegate)
        import numpy as np

        if not args.models:
            raise BenchError("name at least one .tflite file")
        expected = {}
        if args.eval:
            if not os.path.isfile(args.eval):
                raise BenchError(f"{args.eval}: eval file not found (the bundle's eval.npz)")
            try:
                with np.load(args.eval) as data:
                    missing = {"x", "labels"} - set(data.files)
                    n = len(data["labels"]) if not missing else 0
            except (OSError, ValueError) as e:
                raise BenchError(f"{args.eval}: not a readable .npz ({e})") from e
            if missing:
                raise BenchError(f"{args.eval}: missing arrays {sorted(missing)}; use the bundle's eval.npz")
            side = os.path.join(os.path.dirname(os.path.abspath(args.eval)), "expected.json")
            if os.path.isfile(side):
                with open(side) as f:
                    expected = json.load(f).get("top1", {})
            print(f"eval: {n} images from {args.eval}", file=sys.stderr)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  anything else: one line, not a traceback
        print(f"error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}", file=sys.stderr)
        return 2
    where = host()
    out = args.out or f"device_results_{where['name']}_{time.strftime('%Y%m%d-%H%M%S')}.json"  # a rerun adds a file
    try:  # the results' folder, made before anything is measured: no figure is lost at the end
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    except OSError as e:
        print(f"error: --out {out}: cannot make its folder ({e.strerror})", file=sys.stderr)
        return 2
    print(
        f"runtime: {runtime} ({args.mode}); host: {where['cpu']}, {where['cores']} cores; threads {args.thread_list}",
        file=sys.stderr,
    )
    rows, failed = [], []
    for path in args.models:
        first, *more = args.thread_list
        problem = unreadable(path)  # a missing, cut-off or corrupt file is its row's error, not the worker's crash
        cells = {first: run_cell(path, first, args, args.mode) if problem is None else {"error": problem}}
        for n in more:  # what would not load will not load at another count either; the mode that ran runs on
            cells[n] = cells[first] if "error" in cells[first] else run_cell(path, n, args, cells[first]["mode"])
        row = make_row(path, cells, expected, runtime, where)
        rows.append(row)
        write_json(out, rows, where, runtime)
        if row["status"] != "pass":
            failed.append(row)
            print(f"error: {row['error']}", file=sys.stderr)
        elif row["fallback"]:
            print(f"note: {row['artifact']}: ran with {row['mode']} ({row['fallback']})", file=sys.stderr)
        if row["status"] == "pass" and row.get("matches_host") is False:
            print(
                f"warning: {row['artifact']}: top-1 {row['top1']:.4f} here, {row['host_top1']:.4f} on the host",
                file=sys.stderr,
            )
    print(table(rows))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
