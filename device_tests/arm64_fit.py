#!/usr/bin/env python3
"""`make device-check-arm64`, second half: fit's latency table built on the emulated board, a fit on the host against
it, and the returned file checked under emulation. Standard library only; it drives the project's `resnet-edge`.

In RUN-arm64fit, a copy of the run (the check writes nothing into the run but its device/ rows):
1. `resnet-edge bundle` at the run's image size, 1 thread and FIT_LEVELS channel levels: a latency pack small enough
   to time under qemu in minutes (the bundle's default pack, at 224 px, holds about 700 ops);
2. the bundle's latency_table.py under each runtime inside the arm64 root file system;
3. `resnet-edge fit latency_table=<the first runtime's table> budget_ms=...`, the budget 70% of the way from the
   fastest plan to the dense file as that table predicts them;
4. `resnet-edge bundle bundle_models=fit_*` and the same checks as the run's own bundle (top-1 under arm64 against the
   host's), its rows in RUN-arm64fit/device/, so `resnet-edge report RUN-arm64fit` shows predicted against measured.

Emulated latencies are qemu's, not an ARM core's: the table and the measurement are both emulated, so they are
comparable with each other and with nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from arm64_rootfs import CheckError

FIT_LEVELS = 3
SKIP = {"device_bundle", "device", "device-arm64", "fit", "report", "logs", "explain"}


def resnet_edge(words: list[str], what: str, timeout: int = 3600) -> None:
    exe = Path(sys.executable).parent / "resnet-edge"
    found = str(exe) if exe.is_file() else shutil.which("resnet-edge")
    if not found:
        raise CheckError(
            f"{what}: resnet-edge not found beside {sys.executable}; run the check from the project's venv"
        )
    proc = subprocess.run([found, *words], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")] or proc.stderr.splitlines()[-1:]
        raise CheckError(f"{what} failed (exit {proc.returncode}): {(errors or ['no output'])[0][:300]}")


def image_size(run: Path) -> int:
    found = re.search(r"^image_size: (\d+)$", (run / "config.yaml").read_text(), re.M)
    if not found:
        raise CheckError(f"{run}/config.yaml: no image_size")
    return int(found.group(1))


def fit_check(
    run: Path, runtimes: list[str], args, host_cpu: str, check_bundle, in_rootfs, python_for
) -> tuple[list[dict], list[str]]:
    """-> the fit file's rows for the check's table, and the summary lines."""
    start = time.perf_counter()
    work = run.parent / f"{run.name}-arm64fit"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run, work, ignore=lambda d, names: [n for n in names if Path(d) == run and n in SKIP])
    size = image_size(run)
    keys = [f"budget_size={size}", "budget_threads=1", f"fit_levels={FIT_LEVELS}"]
    resnet_edge(["bundle", str(work), *keys, "bundle_models=int8"], "resnet-edge bundle (the latency pack)")
    bundle = work / "device_bundle"
    pack = json.loads((bundle / "latency" / "pack.json").read_text())
    tables, summary = {}, []
    for runtime in runtimes:
        t = time.perf_counter()
        print(
            f"arm64: latency table ({len(pack['entries'])} ops, {size} px) under {runtime}, emulated ...",
            file=sys.stderr,
        )
        argv = [
            python_for(runtime),
            "latency_table.py",
            "--out",
            "table.json",
            "--rounds",
            "1",
            "--runs",
            "3",
            "--warmup",
            "1",
        ]
        table = in_rootfs(bundle, argv, "table.json", args.timeout)
        if set(table["entries"]) != set(pack["entries"]) or table["identity"]["size"] != size:
            raise CheckError(f"latency_table.py under {runtime}: the table does not hold the pack's entries")
        # qemu shows the host's /proc/cpuinfo: the device is named as the check's rows name it (arm64_check.emulated)
        table["identity"] |= {"device": f"qemu-user aarch64 on {host_cpu}", "isa": [], "emulated": "qemu-user"}
        tables[runtime] = work / "device-arm64" / f"latency_table-{runtime}.json"
        tables[runtime].parent.mkdir(exist_ok=True)
        tables[runtime].write_text(json.dumps(table, indent=2))
        dense, lowest = next(iter(table["rest"].values()))["points"]
        summary.append(
            f"arm64 latency table under {runtime} ({table['identity']['runtime']}, {table['identity']['mode']}): "
            f"{len(table['entries'])} ops at {size} px in {time.perf_counter() - t:.0f} s; dense file "
            f"{dense['whole_ms']:.2f} ms, fastest plan {lowest['whole_ms']:.2f} ms (qemu, not an ARM core's)"
        )
    chosen = tables[runtimes[0]]
    dense, lowest = next(iter(json.loads(chosen.read_text())["rest"].values()))["points"]
    budget = round(lowest["whole_ms"] + 0.7 * (dense["whole_ms"] - lowest["whole_ms"]), 3)
    t = time.perf_counter()
    print(f"arm64: fit budget_ms={budget:g} on the {runtimes[0]} table, on the host ...", file=sys.stderr)
    resnet_edge(["fit", str(work), *keys, f"latency_table={chosen}", f"budget_ms={budget:g}"], "resnet-edge fit")
    name = f"fit_{budget:g}ms".replace(".", "p")
    record = json.loads((work / "fit" / f"{name}.json").read_text())
    summary.append(
        f"arm64 fit: budget {budget:g} ms on the emulated {runtimes[0]} table, {len(record['trace'])} steps, "
        f"predicted {record['device']['predicted_ms']:.2f} ms, host fit {time.perf_counter() - t:.0f} s"
    )
    resnet_edge(["bundle", str(work), *keys, f"bundle_models={name}_int8,{name}_nncf_int8"], "resnet-edge bundle")
    rows = check_bundle(work)
    resnet_edge(["report", str(work)], "resnet-edge report")
    for r in rows:
        if r["model"].startswith(f"{name}_int8") and r.get("ms_1"):
            summary.append(
                f"arm64 fit: {r['model']} under {r['runtime']}: {r['ms_1']:.2f} ms emulated (median) against "
                f"{record['device']['predicted_ms']:.2f} ms predicted by the emulated table"
            )
    summary.append(
        f"arm64 fit: {time.perf_counter() - start:.0f} s in all; report: {work}/report/report.md (Fit to a budget)"
    )
    return rows, summary
