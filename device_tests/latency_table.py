#!/usr/bin/env python3
"""The latency table `resnet-edge fit` searches on, measured on the board or phone itself. numpy + a TFLite runtime
(ai_edge_litert, tflite_runtime or tensorflow.lite, as bench_tflite.py) on a board; over adb, the standard library and
LiteRT's benchmark_model on the phone.

    python latency_table.py                                   # on the board, in the bundle's folder
    python latency_table.py --adb --binary ./android_aarch64_benchmark_model   # a phone on USB, from a computer

It times the bundle's latency pack (`latency/`, written by `resnet-edge bundle`): every op the search can ask for as a
one-op int8 .tflite (`ops.zip`) and the two whole files the table is calibrated on (the dense model and the search's
fastest plan, at the budget's size), each the fastest of --runs inferences after --warmup, over --rounds passes through
every file. It writes `latency_table_<where>_<time>.json` in the format fit's own table has (entries in ms, the whole
files' points, the device's name, runtime and version, mode, size, threads). Back on the host:

    resnet-edge fit runs/<name> latency_table=latency_table_<where>_<time>.json budget_ms=40

On a board it runs the files as bench_tflite.py runs models (--mode auto: LiteRT's CompiledModel with XNNPACK's
weight cache where the runtime has it; a file it cannot run falls back without the cache, then to the Interpreter,
and the table's mode says which ran). Every problem is one line `error: ...` and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import zipfile
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FORMAT = "resnet-edge latency table 1"  # the host's pipeline/engine/latency_table.py FORMAT
PACK_FORMAT = "resnet-edge latency pack 1"
FALLBACK = {"compiled_cache": "compiled", "compiled": "interpreter"}  # bench_tflite.py's order
ISA_FLAGS = ("asimddp", "i8mm", "sve", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


class TableError(Exception):
    """One line naming the problem and the fix, printed as `error: ...`."""


def read_pack(folder: str) -> dict:
    path = os.path.join(folder, "pack.json")
    try:
        with open(path) as f:
            pack = json.load(f)
    except OSError as e:
        raise TableError(f"{path}: no latency pack ({e.strerror}); make the bundle with `resnet-edge bundle`") from e
    except ValueError as e:
        raise TableError(f"{path}: not JSON ({e}); copy the bundle's latency/ folder again") from e
    if pack.get("format") != PACK_FORMAT:
        raise TableError(f"{path}: format {pack.get('format')!r}, expected {PACK_FORMAT!r}; re-make the bundle")
    for c in pack["calibration"]:
        if not os.path.isfile(os.path.join(folder, c["file"])):
            raise TableError(f"{folder}: {c['file']} is missing; copy the bundle's latency/ folder again")
    return pack


def files_to_time(pack: dict, folder: str, tmp: str) -> dict[str, str]:
    """{name: path}: the ops extracted from ops.zip into tmp, then the whole files, in the pack's order."""
    try:
        with zipfile.ZipFile(os.path.join(folder, "ops.zip")) as z:
            z.extractall(tmp, members=sorted(set(pack["entries"].values())))
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise TableError(f"{folder}/ops.zip: {e}; copy the bundle's latency/ folder again") from e
    paths = {name: os.path.join(tmp, name) for name in sorted(set(pack["entries"].values()))}
    return paths | {c["file"]: os.path.join(folder, c["file"]) for c in pack["calibration"]}


def isa() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for ln in f if ":" in ln for w in ln.split()}
    except OSError:
        return []
    return [f for f in ISA_FLAGS if f in flags]


def on_board(paths: dict[str, str], threads: int, args) -> tuple[dict[str, float], dict]:
    """Each file's fastest ms over --rounds passes, in the mode the bundle ships (with bench_tflite.py's fallback,
    decided on the first whole file and kept for every file, so the table is one mode)."""
    import numpy as np
    from bench_rows import host, runtime_version
    from bench_tflite import BenchError, choose_mode, find_runtime
    from tflite_memory import Runner, timed

    try:
        name, interpreter_cls, _ = find_runtime()
        mode = choose_mode(args.mode, None)
    except BenchError as e:
        raise TableError(str(e)) from e
    first, fallback = list(paths.values())[-1], None
    while True:
        try:
            runner = Runner(first, mode, threads, interpreter_cls)
            runner(np.zeros(runner.input["shape"], runner.input["dtype"]))
            break
        except Exception as e:  # noqa: BLE001  the runtime's own error type differs between runtimes
            if args.mode != "auto" or mode not in FALLBACK:
                raise TableError(f"{os.path.basename(first)}: {mode} failed: {str(e).splitlines()[0][:200]}") from e
            why = f"{mode}: {(str(e).splitlines() or [''])[0][:200]}"
            fallback = f"{fallback}; {why}" if fallback else why
            mode = FALLBACK[mode]
    del runner
    best = dict.fromkeys(paths, float("inf"))
    started = time.perf_counter()
    for r in range(args.rounds):
        for i, (key, path) in enumerate(paths.items()):
            runner = Runner(path, mode, threads, interpreter_cls)
            x = np.zeros(runner.input["shape"], runner.input["dtype"])
            best[key] = min(best[key], float(np.min(timed(runner, x, args.warmup, args.runs))))
            del runner
            if (i + 1) % 50 == 0 or i + 1 == len(paths):
                done = r * len(paths) + i + 1
                print(
                    f"  {done}/{args.rounds * len(paths)} timed, {time.perf_counter() - started:.0f} s", file=sys.stderr
                )
    where = host()
    version = runtime_version(name)
    identity = {
        "device": f"{where['cpu']} ({where['machine']})",
        "host_name": where["name"],
        "isa": isa(),
        "runtime": f"{name.split('.')[0].replace('_', '-')} {version or ''}".strip(),
        "mode": mode,
        "fallback": fallback,
    }
    return best, identity


def on_phone(paths: dict[str, str], threads: int, args) -> tuple[dict[str, float], dict]:
    """Each file pushed, timed with benchmark_model (its min over --runs), removed; the binary pushed once and removed
    at the end (android_benchmark.py's adb helpers: one device or --serial, only what it pushed is removed)."""
    import android_benchmark as ab

    found = shutil.which(args.adb or "adb")
    if not found:
        raise TableError(f"{args.adb or 'adb'} not found: install Android platform-tools or pass --adb-path PATH")
    if not args.binary or not os.path.isfile(args.binary):
        raise TableError(f"--binary {args.binary}: benchmark_model for the phone not found (android_aarch64 build)")
    a = SimpleNamespace(
        adb=found,
        serial=args.serial,
        threads=threads,
        runs=args.runs,
        warmup=args.warmup,
        use_xnnpack=True,
        use_gpu=False,
        use_nnapi=False,
        weight_cache=None,
        op_profiling=False,
        cpu_mask=args.cpu_mask,
        remote_dir=args.remote_dir,
        timeout=args.timeout,
    )
    pushed, created = [], None
    try:
        a.serial = ab.pick_device(a)
        names = list(paths)
        created = ab.prepare_remote(a, ["benchmark_model", *names, *(f"{n}.xnnpack_cache" for n in names)])
        binary = f"{a.remote_dir}/benchmark_model"
        pushed.append(binary)
        ab.adb(a, ["push", args.binary, binary], timeout=600)
        ab.adb(a, ["shell", f"chmod 755 {shlex.quote(binary)}"])
        best = {}
        for i, (key, path) in enumerate(paths.items()):
            row = ab.run_model(a, path, pushed)
            for remote in pushed[1:]:  # each file off the phone once timed: only the binary stays until the end
                ab.adb(a, ["shell", f"rm -f {shlex.quote(remote)}"], check=False)
            del pushed[1:]
            if row["status"] != "pass":
                raise TableError(f"{key}: {row['error']}")
            figures = row["benchmark_model"]
            best[key] = figures.get("latency_ms_min", figures["latency_ms_avg"])
            if (i + 1) % 50 == 0 or i + 1 == len(paths):
                print(f"  {i + 1}/{len(paths)} timed on {a.serial}", file=sys.stderr)
        model = ab.adb(a, ["shell", "getprop ro.product.model"], check=False).stdout.strip() or "android"
        abi = ab.adb(a, ["shell", "getprop ro.product.cpu.abi"], check=False).stdout.strip() or "?"
    except ab.AdbError as e:
        raise TableError(str(e)) from e
    finally:
        if created is not None:
            ab.clean_up(a, pushed, created)
    identity = {
        "device": f"{model} ({abi})",
        "host_name": f"android:{a.serial}",
        "isa": [],
        "runtime": "benchmark_model",
        "mode": "benchmark_model xnnpack" + (" weight cache" if not row.get("fallback") else ""),
        "fallback": row.get("fallback"),
    }
    return best, identity


def table(pack: dict, timed: dict[str, float], identity: dict, threads: int, args) -> dict:
    """fit's table: each entry's ms, and the model's whole files as points (whole ms, the sum of their entries), from
    which the host draws its calibration line (pipeline/engine/latency_table.line)."""
    entries = {key: timed[name] for key, name in pack["entries"].items()}
    points = [
        {"file": c["file"], "whole_ms": timed[c["file"]], "ops_ms": sum(entries[k] for k in c["keys"])}
        for c in pack["calibration"]
    ]
    return {
        "format": FORMAT,
        "identity": {**identity, "size": pack["size"], "threads": threads, "measured_on": "device"},
        "entries": dict(sorted(entries.items())),
        "rest": {pack["model_key"]: {"points": points, "whole_ms": points[0]["whole_ms"]}},
        "timing": {
            "warmup": args.warmup,
            "runs": args.runs,
            "rounds": args.rounds,
            "statistic": "fastest inference over every round",
            "machine": platform.machine(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", default=os.path.join(here, "latency"), help="the bundle's latency/ folder")
    p.add_argument("--threads", type=int, help="default: the pack's (the budget's budget_threads)")
    p.add_argument("--runs", type=int, default=5, help="timed inferences per file and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="passes through every file (board; the phone: 1)")
    p.add_argument("--mode", default="auto", help="as bench_tflite.py: auto, interpreter, compiled, compiled_cache")
    p.add_argument("--out", help="JSON file (default: latency_table_<where>_<YYYYmmdd-HHMMSS>.json)")
    p.add_argument("--adb", action="store_true", help="time on an Android phone over adb with benchmark_model")
    p.add_argument("--binary", help="with --adb: benchmark_model built for the phone")
    p.add_argument("--serial", help="with --adb: the phone when several are attached")
    p.add_argument("--adb-path", dest="adb_path", help="with --adb: the adb executable (default: on PATH)")
    p.add_argument("--cpu-mask", help="with --adb: taskset mask, e.g. f0 for the big cores")
    p.add_argument("--remote-dir", default="/data/local/tmp/resnet-edge-table")
    p.add_argument("--timeout", type=int, default=300, help="with --adb: seconds per file")
    args = p.parse_args(argv)
    args.adb_flag, args.adb = args.adb, args.adb_path
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        for name, low in (("runs", 1), ("warmup", 0), ("rounds", 1), ("timeout", 1)):
            if getattr(args, name) < low:
                raise TableError(f"--{name} {getattr(args, name)}: expected an integer >= {low}")
        pack = read_pack(args.pack)
        threads = args.threads or pack["threads"]
        with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
            paths = files_to_time(pack, args.pack, tmp)
            print(
                f"latency table: {len(pack['entries'])} ops and {len(pack['calibration'])} whole files at "
                f"{pack['size']} px, {threads} thread(s)",
                file=sys.stderr,
            )
            timed, identity = (on_phone if args.adb_flag else on_board)(paths, threads, args)
        data = table(pack, timed, identity, threads, args)
        where = identity["host_name"].replace(":", "_").replace("/", "_")
        out = args.out or f"latency_table_{where}_{time.strftime('%Y%m%d-%H%M%S')}.json"
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(f"{out}.tmp", "w") as f:
            json.dump(data, f, indent=2)
        os.replace(f"{out}.tmp", out)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  anything else: one line, not a traceback
        print(f"error: latency table: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}", file=sys.stderr)
        return 2
    dense = data["rest"][pack["model_key"]]["points"][0]
    print(
        f"wrote {out}: {identity['device']}, {identity['runtime']} ({identity['mode']}); dense model "
        f"{dense['whole_ms']:.2f} ms whole, {dense['ops_ms']:.2f} ms in its ops. On the host: resnet-edge fit "
        f"runs/<name> latency_table={os.path.basename(out)} budget_ms=...",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
