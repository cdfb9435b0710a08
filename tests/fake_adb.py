"""A stand-in `adb` for tests: the one thing here that cannot be real is a phone on USB.

It keeps the phone's files under $FAKE_ADB_ROOT (so pushes and clean-up can be checked), logs each call to
$FAKE_ADB_LOG, and for `shell .../benchmark_model --graph=...` replays real benchmark_model output text from
tests/fixtures/benchmark_model/ (after the pid line the device shell prints for `echo PID=$$; exec ...`). Wholesale
deletes (`rm -rf`) and `pkill` are refused, so a script that would wipe or kill more than its own shows up.
$FAKE_ADB_SCENARIO: ok | nodevice | twodevices | unauthorized | crash (a graph named *crashy* crashes) | cachecrash (a
run with XNNPACK's weight cache crashes) | timeout.
"""

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"
scenario = os.environ.get("FAKE_ADB_SCENARIO", "ok")
root = Path(os.environ["FAKE_ADB_ROOT"])
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
    if (
        scenario == "twodevices"
        and serial not in ("R58M41ABCDE", "emulator-5554")
        or scenario in ("ok", "crash", "cachecrash", "timeout")
        and serial != "R58M41ABCDE"
    ):
        print(f"adb: device '{serial}' not found", file=sys.stderr)
        sys.exit(1)


def on_phone(path: str) -> Path:
    return root / path.lstrip("/")


if args[0] == "devices":
    print("List of devices attached")
    if scenario in ("ok", "crash", "cachecrash", "timeout"):
        print("R58M41ABCDE\tdevice")
    elif scenario == "twodevices":
        print("R58M41ABCDE\tdevice\nemulator-5554\tdevice")
    elif scenario == "unauthorized":
        print("R58M41ABCDE\tunauthorized")
    print()
elif args[0] == "push":
    dst = on_phone(args[2])
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args[1], dst)
    print(f"{args[1]}: 1 file pushed, 0 skipped. 31.4 MB/s ({os.path.getsize(args[1])} bytes in 0.010s)")
elif args[0] == "shell":
    words = shlex.split(" ".join(args[1:]))
    if words[:2] == ["mkdir", "-p"]:
        on_phone(words[2]).mkdir(parents=True, exist_ok=True)
    elif words[:2] == ["ls", "-d"]:
        if not on_phone(words[2]).exists():
            print(f"ls: {words[2]}: No such file or directory")
            sys.exit(1)
        print(words[2])
    elif words[:2] == ["rm", "-f"]:
        on_phone(words[2]).unlink(missing_ok=True)
    elif words[0] == "rmdir":
        try:
            on_phone(words[1]).rmdir()
        except OSError:
            print(f"rmdir: '{words[1]}': Directory not empty")
            sys.exit(1)
    elif words[0] in ("chmod", "kill"):
        pass
    elif words[0] == "getprop":  # what a Pixel 7 answers
        print({"ro.product.model": "Pixel 7", "ro.product.cpu.abi": "arm64-v8a"}.get(words[1], ""))
    elif words[0] in ("rm", "pkill"):  # what a careless script would do: refuse, so a test notices
        print(f"fake adb: refusing `{' '.join(words)}`", file=sys.stderr)
        sys.exit(3)
    else:
        if words[:2] == ["echo", "PID=$$;"] and words[2] == "exec":  # the device shell prints its pid, then execs
            print("PID=4242", flush=True)
            words = words[3:]
        if words[0] == "taskset":
            words = words[2:]
        graph = next(w.split("=", 1)[1] for w in words if w.startswith("--graph="))
        for needed in (words[0], graph):
            if not on_phone(needed).is_file():
                print(f"/system/bin/sh: {needed}: not found")
                sys.exit(127)
        cache = next((w.split("=", 1)[1] for w in words if w.startswith("--xnnpack_weight_cache_file_path=")), None)
        if cache:  # benchmark_model writes XNNPACK's packed weights there on first use
            on_phone(cache).write_bytes(b"packed weights")
        if scenario == "timeout":
            time.sleep(60)
        if scenario == "crash" and "crashy" in graph or scenario == "cachecrash" and cache:
            print((FIXTURES / "pixel4_segfault.txt").read_text(), end="")
            sys.exit(139)
        print((FIXTURES / os.environ.get("FAKE_ADB_OUTPUT", "chromeos_cpu_xnnpack.txt")).read_text(), end="")
else:
    print(f"adb: unknown command {args[0]}", file=sys.stderr)
    sys.exit(1)
