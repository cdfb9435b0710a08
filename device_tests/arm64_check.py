#!/usr/bin/env python3
"""The device bundle on arm64 before anyone owns a board: a Debian bookworm arm64 root file system run under
qemu-user (binfmt_misc), the bundle's bench_tflite.py on every model under ai-edge-litert and under tflite-runtime,
each compared with the host's top-1 (expected.json) and, image by image, with the same runtime on this x86_64 host.

    sudo python3 device_tests/arm64_check.py runs/default [--cache ~/.cache/resnet-edge/arm64-bookworm]

Needs root and the Debian packages mmdebstrap, qemu-user-static and binfmt-support; pip (for the wheels) and the
network to Debian's mirror and PyPI the first time only. Builds once and caches outside the repo: the root file
system (mmdebstrap, about 2 min and 255 MB), the aarch64 and x86_64 wheels and one venv per runtime inside the root
file system; every piece is built in a temporary folder and renamed when complete, so an interrupted build leaves
nothing half-made. Writes RUN/device/arm64-<runtime>.json (rows the report shows as `arm64 (emulated)`, latency not
representative of real hardware) and RUN/device-arm64/host-<runtime>.json (the same runtime on this host), prints
one table, and exits 1 when a model fails to load or its arm64 top-1 is more than 0.5 point from the host's.
Standard library only (it runs before resnet-edge's venv is needed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from arm64_fit import fit_check  # noqa: E402  (the latency table on the emulated board, a fit against it)
from arm64_rootfs import (  # noqa: E402  (what it builds once and caches)
    RUNTIMES,
    CheckError,
    arm64_venv,
    chroot_command,
    host_venv,
    rootfs,
    wheels,
)

MAX_DIFF_POINTS = 0.5  # int8 kernels differ across architectures; more than this is a broken bundle, not rounding
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def bench_command(python: str, models: list[str], out: str, runs: int, warmup: int, timeout: int) -> list[str]:
    """bench_tflite.py as the bundle README has it, one thread (emulation), every image's prediction kept."""
    return [
        python,
        "bench_tflite.py",
        *models,
        "--eval",
        "eval.npz",
        "--threads",
        "1",
        "--runs",
        str(runs),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--predictions",
        "--out",
        out,
    ]


def check_tools() -> None:
    """Root, mmdebstrap, qemu-user-static and an enabled qemu-aarch64 binfmt_misc entry (mounted and enabled here if
    only that is missing), or a one-line CheckError naming the package or command."""
    if os.geteuid() != 0:
        raise CheckError("needs root (mmdebstrap and chroot): run it as root or with sudo")
    if shutil.which("mmdebstrap") is None:
        raise CheckError("mmdebstrap not found: apt-get install mmdebstrap")
    if not Path(QEMU).is_file():
        raise CheckError(f"{QEMU} not found: apt-get install qemu-user-static")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not (BINFMT / "register").exists():
        raise CheckError(
            f"binfmt_misc is not mounted at {BINFMT} and could not be: mount -t binfmt_misc binfmt_misc "
            f"{BINFMT} (a container may need --privileged)"
        )
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise CheckError(
            "binfmt_misc has no enabled qemu-aarch64 entry: apt-get install binfmt-support "
            "qemu-user-static, then update-binfmts --enable qemu-aarch64"
        )


def in_rootfs(root: Path, bundle: Path, argv: list[str], out: str, timeout: float, what: str) -> dict:
    """Copy the bundle in, run `argv` in it under emulation with /proc only (the host's /sys crashes ai-edge-litert
    under qemu), bring the JSON file `out` back, remove the copy."""
    inside = Path(tempfile.mkdtemp(prefix="bundle-", dir=root / "tmp"))
    proc_dir = root / "proc"
    mounted = subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], capture_output=True).returncode == 0
    try:
        shutil.copytree(bundle, inside, dirs_exist_ok=True)
        cwd = "/" + str(inside.relative_to(root))
        proc = subprocess.run(chroot_command(root, argv, cwd), capture_output=True, text=True, timeout=timeout)
        if not (inside / out).is_file():
            tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-1:] or ["no output"]
            raise CheckError(f"{what} under arm64 wrote no results (exit {proc.returncode}): {tail[0][:300]}")
        return json.loads((inside / out).read_text())
    finally:
        if mounted:
            subprocess.run(["umount", str(proc_dir)], capture_output=True)
        shutil.rmtree(inside, ignore_errors=True)


def bench_in_rootfs(root: Path, bundle: Path, python: str, models: list[str], args) -> dict:
    argv = bench_command(python, models, "arm64.json", args.runs, args.warmup, args.timeout)
    return in_rootfs(root, bundle, argv, "arm64.json", args.timeout * (len(models) + 1), "bench_tflite.py")


def bench_on_host(python: Path, bundle: Path, models: list[str], out: Path, args) -> dict:
    cmd = bench_command(str(python), models, str(out), args.host_runs, 2, args.timeout)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:  # the script writes weight caches beside the models
        copy = Path(shutil.copytree(bundle, Path(tmp) / "bundle"))
        subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=args.timeout * (len(models) + 1))
    if not out.is_file():
        raise CheckError(f"bench_tflite.py on the host under {python} wrote no results")
    return json.loads(out.read_text())


def emulated(result: dict, runtime: str, host_cpu: str) -> dict:
    """The arm64 results as device rows: machine from platform.machine() inside (qemu shows the host's /proc/cpuinfo,
    so the CPU name is the host's and is replaced), source `arm64 (emulated)`, latency flagged."""
    machine = result["host"].get("machine")
    version = result.get("runtime_version")
    source = f"arm64 (emulated, {runtime} {version or ''})".replace(" )", ")")
    where = {
        **result["host"],
        "name": "arm64 (emulated)",
        "cpu": f"qemu-user {machine} on {host_cpu}",
        "emulated": "qemu-user",
    }
    rows = [{**r, "source": source, "emulated": True} for r in result["rows"]]
    return {**result, "host": where, "rows": rows}


def compare_rows(arm: dict, host: dict, expected: dict) -> list[dict]:
    """Per model: arm64 top-1, the host's top-1 (expected.json, the pipeline's runtime), the same runtime's top-1 on
    this host, and how many images' predictions differ between arm64 and the same runtime here."""
    here = {r["artifact"]: r for r in host["rows"]}
    out = []
    for r in arm["rows"]:
        same = here.get(r["artifact"], {})
        a, b = r.get("predictions"), same.get("predictions")
        differ = sum(x != y for x, y in zip(a, b, strict=True)) if a and b and len(a) == len(b) else None
        ref = expected.get(r["artifact"])
        diff = None if ref is None or r.get("top1") is None else abs(100 * (r["top1"] - ref))
        out.append(
            {
                "model": r["artifact"],
                "precision": r.get("precision"),
                "status": r["status"],
                "error": r.get("error"),
                "arm64_top1": r.get("top1"),
                "host_top1": ref,
                "same_runtime_host_top1": same.get("top1"),
                "differ_vs_same_runtime": differ,
                "images": r.get("images"),
                "diff_points": diff,
                "ms_1": r.get("ms_1"),
                "mode": r.get("mode"),
                "fallback": r.get("fallback"),
                "ok": r["status"] == "pass" and diff is not None and diff <= MAX_DIFF_POINTS,
            }
        )
    return out


def table(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    lines = [
        "| model | runtime | mode | arm64 top-1 % | host top-1 % (expected.json) | same runtime on host % | images "
        "differing from the same runtime on host | \\|diff\\| pts | ms @1 (qemu, not representative) | ok |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mode = (r.get("mode") or "-") + (" (fallback)" if r.get("fallback") else "")
        lines.append(
            f"| {r['model']} | {r['runtime']} | {mode} | {pct(r['arm64_top1'])} | {pct(r['host_top1'])} | "
            f"{pct(r['same_runtime_host_top1'])} | "
            f"{'-' if r['differ_vs_same_runtime'] is None else r['differ_vs_same_runtime']} / {r['images']} | "
            f"{'-' if r['diff_points'] is None else format(r['diff_points'], '.2f')} | "
            f"{'-' if r['ms_1'] is None else format(r['ms_1'], '.1f')} | "
            f"{'yes' if r['ok'] else 'NO: ' + (r['error'] or 'top-1 differs')} |"
        )
    return "\n".join(lines)


def check_bundle(root: Path, cache: Path, run: Path, runtimes: list[str], args, host_cpu: str) -> list[dict]:
    """Every model of RUN/device_bundle under each runtime, emulated and on this host; RUN/device/arm64-<runtime>.json
    written (the report's rows). -> the table's rows."""
    bundle = run / "device_bundle"
    expected = json.loads((bundle / "expected.json").read_text()).get("top1", {})
    models = sorted(f"models/{p.name}" for p in (bundle / "models").glob("*.tflite"))
    rows = []
    (run / "device").mkdir(exist_ok=True)
    (run / "device-arm64").mkdir(exist_ok=True)
    for runtime in runtimes:
        python = arm64_venv(root, runtime, wheels(cache, runtime, "aarch64"))
        t = time.perf_counter()
        print(f"arm64: {len(models)} model(s) of {run.name} under {runtime}, emulated ...", file=sys.stderr)
        arm = emulated(bench_in_rootfs(root, bundle, python, models, args), runtime, host_cpu)
        print(f"arm64: {runtime} done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        host = bench_on_host(
            host_venv(cache, runtime),
            bundle,
            models,
            (run / "device-arm64" / f"host-{runtime}.json").resolve(),
            args,
        )
        for r in compare_rows(arm, host, expected):
            rows.append({**r, "runtime": f"{runtime} {arm.get('runtime_version') or ''}".strip()})
        tmp = run / "device" / f".arm64-{runtime}.json.tmp"
        tmp.write_text(json.dumps(arm, indent=2))
        os.replace(tmp, run / "device" / f"arm64-{runtime}.json")
    return rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory with a device_bundle/ (after make demo: runs/default)")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/resnet-edge/arm64-bookworm"))
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--runs", type=int, default=3, help="timed runs per model under emulation")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--host-runs", type=int, default=10, help="timed runs per model on the host")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    p.add_argument(
        "--fit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build fit's latency table on the emulated board (each runtime), fit on the host against it and "
        "check the returned file under emulation, in RUN-arm64fit (a copy of the run)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run, cache = Path(args.run), Path(args.cache)
    bundle = run / "device_bundle"
    try:
        runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
        unknown = sorted(set(runtimes) - set(RUNTIMES))
        if unknown:
            raise CheckError(f"--runtimes {','.join(unknown)}: choose from {', '.join(RUNTIMES)}")
        if not runtimes:
            raise CheckError(f"--runtimes {args.runtimes!r}: name at least one of {', '.join(RUNTIMES)}")
        if not (bundle / "expected.json").is_file():
            raise CheckError(f"{bundle}: no device bundle; run `make demo` (or resnet-edge bundle {run}) first")
        if "--predictions" not in (bundle / "bench_tflite.py").read_text():
            raise CheckError(
                f"{bundle}/bench_tflite.py is older than this check (no --predictions): re-make the "
                f"bundle with `resnet-edge bundle {run}`"
            )
        if not any((bundle / "models").glob("*.tflite")):
            raise CheckError(
                f"{bundle}/models: no .tflite file to check; re-make the bundle (resnet-edge bundle {run})"
            )
        check_tools()
        start = time.perf_counter()
        root = rootfs(cache)
        host_cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor() or platform.machine(),
        )
        rows = check_bundle(root, cache, run, runtimes, args, host_cpu)
        fitted = []
        if args.fit:
            fitted, summary = fit_check(
                run,
                runtimes,
                args,
                host_cpu,
                lambda folder: check_bundle(root, cache, folder, runtimes, args, host_cpu),
                lambda bundle, argv, out, timeout: in_rootfs(root, bundle, argv, out, timeout, "latency_table.py"),
                lambda runtime: arm64_venv(root, runtime, wheels(cache, runtime, "aarch64")),
            )
            rows += fitted
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as e:
        print(
            f"error: {' '.join(map(str, e.cmd))[:200]} timed out after {e.timeout:.0f} s: raise --timeout",
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # noqa: BLE001  anything else: one line, not a traceback
        print(f"error: arm64 check: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.fit:
        print("\n".join(summary), file=sys.stderr)
    bad = [r for r in rows if not r["ok"]]
    print(
        f"arm64 check: {len(rows) - len(bad)}/{len(rows)} ok in {time.perf_counter() - start:.0f} s; wrote "
        f"{', '.join(str(run / 'device' / f'arm64-{r}.json') for r in runtimes)}; report: resnet-edge report {run}",
        file=sys.stderr,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
