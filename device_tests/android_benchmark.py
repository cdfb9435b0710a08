#!/usr/bin/env python3
"""Benchmark .tflite files on an Android phone over adb with TensorFlow's `benchmark_model` binary (which you
supply: the prebuilt android_aarch64_benchmark_model, or one built with bazel). Standard library only.

    python android_benchmark.py models/int8.tflite --binary ./android_aarch64_benchmark_model --threads 4

Checks adb and exactly one attached device (or --serial), pushes the binary and the models to --remote-dir, runs each
model with a timeout, parses benchmark_model's timing and memory lines into the rows `resnet-edge report` merges
(device_results_android_<serial>_<time>.json, rewritten after every model). On the phone it touches only what it
brought: it removes the files it pushed (and --remote-dir only if it created it, and only when empty), and on a timeout
it stops the one process it started, by its pid. Precision comes from the .tflite file itself (tflite_precision.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tflite_precision import tflite_precision  # noqa: E402  (the bundle's own copy of the precision rule)

TIMINGS = re.compile(
    r"Inference timings in us: Init: ([\d.e+]+), First inference: ([\d.e+]+), "
    r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)"
)
RUN_STATS = re.compile(
    r"count=(\d+) first=\d+ curr=\d+ min=(\d+) max=(\d+) avg=([\d.e+]+) std=\d+"
    r"(?: p5=\d+ median=(\d+) p95=(\d+))?"
)
# benchmark_model prints max_rss_kb / 1024 and labels it MB: the figures are MiB.
FOOTPRINT = re.compile(
    r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    r"init=([\d.e+]+) overall=([\d.e+]+)"
)
PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.e+]+)")
MODEL_MB = re.compile(r"The input model file size \(MB\): ([\d.e+]+)")
SIGNALS = {134: "Aborted", 137: "Killed", 139: "Segmentation fault"}
PID = re.compile(r"^PID=(\d+)", re.M)


class AdbError(Exception):
    """One line naming the cause and the fix, printed as `error: ...`."""


def adb(args, cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    full = [args.adb] + (["-s", args.serial] if args.serial else []) + cmd
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AdbError(f"`adb {' '.join(cmd[:2])}` timed out after {timeout:.0f} s: check the USB connection") from e
    if check and proc.returncode != 0:
        text = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise AdbError(f"`adb {' '.join(cmd[:2])}` failed: {text}")
    return proc


def pick_device(args) -> str:
    """The one attached, authorised device, or --serial."""
    try:
        listing = subprocess.run([args.adb, "devices"], capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired as e:
        raise AdbError("`adb devices` timed out: restart the server with `adb kill-server`") from e
    devices = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            devices[parts[0]] = parts[1]
    if args.serial:
        if args.serial not in devices:
            raise AdbError(f"--serial {args.serial}: not attached (adb devices lists: {', '.join(devices) or 'none'})")
        serial = args.serial
    else:
        if not devices:
            raise AdbError("no Android device attached: connect one with USB debugging on, then check `adb devices`")
        if len(devices) > 1:
            raise AdbError(f"{len(devices)} devices attached ({', '.join(devices)}): choose one with --serial")
        serial = next(iter(devices))
    state = devices[serial]
    if state == "unauthorized":
        raise AdbError(f"{serial} is unauthorized: accept the USB debugging prompt on the phone")
    if state != "device":
        raise AdbError(f"{serial} is {state}: reconnect it (adb devices must say 'device')")
    return serial


def parse(text: str) -> dict:
    """benchmark_model's output -> figures in ms and MiB; {} when it printed no timings."""
    timings = TIMINGS.search(text)
    if not timings:
        return {}
    init, first, warmup, avg = (float(v) / 1e3 for v in timings.groups())
    out = {"init_ms": init, "first_ms": first, "warmup_ms_avg": warmup, "latency_ms_avg": avg}
    stats = RUN_STATS.findall(text)
    if stats:  # the last count= line is the timed runs (the one before it, the warm-up)
        count, lo, hi, mean, median, p95 = stats[-1]
        out |= {"runs": int(count), "latency_ms_min": int(lo) / 1e3, "latency_ms_max": int(hi) / 1e3}
        if median:
            out |= {"latency_ms_median": int(median) / 1e3, "latency_ms_p95": int(p95) / 1e3}
    footprint = FOOTPRINT.search(text)
    if footprint:
        out |= {"init_rss_mib": float(footprint.group(1)), "overall_rss_mib": float(footprint.group(2))}
    peak = PEAK.search(text)
    if peak:
        out["peak_rss_mib"] = float(peak.group(1))
    elif footprint:
        out["peak_rss_mib"] = out["overall_rss_mib"]
    size = MODEL_MB.search(text)
    if size:
        out["model_file_mb"] = float(size.group(1))
    return out


def cache_path(args, remote_model: str) -> str | None:
    """XNNPACK's weight cache beside the model on the phone (packed weights mapped from a file instead of a private
    copy: bench_tflite.py's default too), or None when it does not apply. --weight-cache unset means on."""
    uses_xnnpack = args.use_xnnpack and not (args.use_gpu or args.use_nnapi)
    return f"{remote_model}.xnnpack_cache" if args.weight_cache is not False and uses_xnnpack else None


def benchmark_command(args, remote_model: str, cache: bool = True) -> str:
    """benchmark_model's command line on the phone; cache=False leaves the weight cache out."""
    flags = [
        f"--graph={remote_model}",
        f"--num_threads={args.threads}",
        f"--num_runs={args.runs}",
        f"--warmup_runs={args.warmup}",
        f"--use_xnnpack={str(args.use_xnnpack).lower()}",
        f"--use_gpu={str(args.use_gpu).lower()}",
        f"--use_nnapi={str(args.use_nnapi).lower()}",
        "--report_peak_memory_footprint=true",
    ]
    cache = cache_path(args, remote_model) if cache else None
    if cache:
        flags.append(f"--xnnpack_weight_cache_file_path={cache}")
    if args.op_profiling:
        flags.append("--enable_op_profiling=true")
    binary = f"{args.remote_dir}/benchmark_model"
    pin = f"taskset {args.cpu_mask} " if args.cpu_mask else ""
    # The phone's shell prints its pid, then exec keeps that pid for benchmark_model: the one process to stop.
    return "echo PID=$$; exec " + pin + " ".join(shlex.quote(p) for p in [binary, *flags])


def run_model(args, model: str, pushed: list[str]) -> dict:
    name = os.path.basename(model)
    try:
        precision = tflite_precision(model)
    except (OSError, ValueError) as e:
        raise AdbError(f"{model}: {e}") from e
    row = {
        "artifact": name,
        "format": "tflite",
        "precision": precision,
        "status": "failed",
        "error": None,
        "size_mib": os.path.getsize(model) / 2**20,
        "top1": None,
        "ms_1": None,
        "ms_n": None,
        "threads_n": args.threads,
        "peak_rss_mib": None,
        "source": f"android:{args.serial}",
        "delegate": "gpu" if args.use_gpu else "nnapi" if args.use_nnapi else "xnnpack" if args.use_xnnpack else "cpu",
    }
    remote = f"{args.remote_dir}/{name}"
    pushed.append(remote)
    row["weight_cache"] = cache_path(args, remote) is not None
    if row["weight_cache"]:
        pushed.append(cache_path(args, remote))  # benchmark_model writes it: removed with what was pushed
    adb(args, ["push", model, remote], timeout=600)
    run_benchmark(args, name, benchmark_command(args, remote), row)
    if (
        row["status"] != "pass"
        and row["weight_cache"]
        and args.weight_cache is None
        and "timed out" not in row["error"]
    ):
        # the default's cache could not be made or read (or the binary predates it): the same run without it
        row |= {"fallback": f"with XNNPACK's weight cache: {row['error']}", "weight_cache": False, "error": None}
        row.pop("log_tail", None)
        run_benchmark(args, name, benchmark_command(args, remote, cache=False), row)
    return row


def run_benchmark(args, name: str, command: str, row: dict) -> None:
    """benchmark_model once on the phone: its figures into `row` (status pass), or the reason it failed."""
    try:
        proc = subprocess.run(
            [args.adb, "-s", args.serial, "shell", command], capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pid = PID.search(output)
        if pid:  # only the process this script started
            adb(args, ["shell", f"kill {pid.group(1)}"], check=False)
        row["error"] = (
            f"{name}: benchmark_model timed out after {args.timeout} s: raise --timeout or lower --runs "
            f"(a delegate that falls back to the CPU is slow)"
        )
        return
    text = proc.stdout + proc.stderr
    figures = parse(text)
    if proc.returncode != 0 or not figures:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        why = SIGNALS.get(proc.returncode, f"exit {proc.returncode}")
        row["error"] = (
            f"{name}: benchmark_model crashed ({why}): last line {last!r}; try without the delegate "
            f"flags, --no-weight-cache (a benchmark_model older than the flag), or a benchmark_model built "
            f"for this phone's ABI"
        )
        row["log_tail"] = lines[-20:]
        return
    median = figures.get("latency_ms_median", figures["latency_ms_avg"])
    row |= {
        "status": "pass",
        "ms_1" if args.threads == 1 else "ms_n": median,
        "peak_rss_mib": figures.get("peak_rss_mib"),
        "benchmark_model": figures,
        "command": command,
    }


def write_json(path: str, rows: list[dict], serial: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"host": {"name": f"android:{serial}"}, "runtime": "benchmark_model", "rows": rows}, f, indent=2)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--binary", required=True, help="benchmark_model built for the phone (e.g. android_aarch64)")
    p.add_argument("--serial", help="device serial when several are attached (adb devices)")
    p.add_argument("--adb", default=None, help="adb executable (default: the one on PATH)")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--use-xnnpack", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--weight-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XNNPACK's weight cache file beside the model (--xnnpack_weight_cache_file_path): packed "
        "weights mapped from a file, not a second private copy. Default: on, and a model that "
        "fails with it runs again without it (the row's `fallback` says why); --weight-cache: on, "
        "no second run",
    )
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--use-nnapi", action="store_true")
    p.add_argument("--op-profiling", action="store_true", help="per-op timings in the log (--enable_op_profiling)")
    p.add_argument("--cpu-mask", help="taskset mask in hex, e.g. f0 for the big cores of many phones")
    p.add_argument("--timeout", type=int, default=300, help="seconds per model")
    p.add_argument("--remote-dir", default="/data/local/tmp/resnet-edge")
    p.add_argument("--out", help="JSON file (default: device_results_android_<serial>_<YYYYmmdd-HHMMSS>.json)")
    return p.parse_args(argv)


def _exists(args, remote: str) -> bool:
    return adb(args, ["shell", f"ls -d {shlex.quote(remote)}"], check=False).returncode == 0


def prepare_remote(args, names: list[str]) -> bool:
    """Make --remote-dir if it is not there; True when this script created it (and so may remove it). In a folder
    that was there already, a file of the same name as one it would push is someone else's: refuse."""
    if not _exists(args, args.remote_dir):
        adb(args, ["shell", f"mkdir -p {shlex.quote(args.remote_dir)}"])
        return True
    taken = [n for n in names if _exists(args, f"{args.remote_dir}/{n}")]
    if taken:
        raise AdbError(
            f"--remote-dir {args.remote_dir} already holds {', '.join(taken)}, which this script would "
            f"overwrite and then delete: choose another --remote-dir"
        )
    return False


def clean_up(args, pushed: list[str], created: bool) -> None:
    """Remove exactly the files pushed, then the folder if this script made it (rmdir: only when empty)."""
    for remote in pushed:
        adb(args, ["shell", f"rm -f {shlex.quote(remote)}"], check=False)
    if created:
        adb(args, ["shell", f"rmdir {shlex.quote(args.remote_dir)}"], check=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, pushed, created = [], [], None
    try:
        for name, low in (("threads", 1), ("runs", 1), ("warmup", 0), ("timeout", 1)):
            if getattr(args, name) < low:
                raise AdbError(f"--{name} {getattr(args, name)}: expected an integer >= {low}")
        found = shutil.which(args.adb or "adb")
        if not found:
            raise AdbError(
                f"{args.adb or 'adb'} not found: install Android platform-tools and put adb on PATH, or pass --adb PATH"
            )
        args.adb = found
        for path in [args.binary, *args.models]:
            if not os.path.isfile(path):
                raise AdbError(f"{path}: file not found")
        args.serial = pick_device(args)
        out = args.out or f"device_results_android_{args.serial}_{time.strftime('%Y%m%d-%H%M%S')}.json"
        names = [os.path.basename(m) for m in args.models]
        created = prepare_remote(args, ["benchmark_model", *names, *(f"{n}.xnnpack_cache" for n in names)])
        binary = f"{args.remote_dir}/benchmark_model"
        pushed.append(binary)
        adb(args, ["push", args.binary, binary], timeout=600)
        adb(args, ["shell", f"chmod 755 {shlex.quote(binary)}"])
        for model in args.models:
            row = run_model(args, model, pushed)
            rows.append(row)
            write_json(out, rows, args.serial)
            if row.get("fallback") and row["status"] == "pass":
                print(f"note: {row['artifact']}: ran without the weight cache ({row['fallback']})", file=sys.stderr)
            if row["status"] == "pass":
                ms = row["ms_1"] if row["ms_1"] is not None else row["ms_n"]
                print(
                    f"{row['artifact']}: {ms:.2f} ms ({args.threads} threads, {row['delegate']}), "
                    f"peak {row['peak_rss_mib'] or 0:.1f} MiB",
                    file=sys.stderr,
                )
            else:
                print(f"error: {row['error']}", file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
    except AdbError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  anything else: one line, not a traceback
        print(
            f"error: android benchmark: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}", file=sys.stderr
        )
        return 2
    finally:
        if created is not None:
            try:
                clean_up(args, pushed, created)
            except AdbError:
                pass
    return 1 if any(r["status"] != "pass" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
