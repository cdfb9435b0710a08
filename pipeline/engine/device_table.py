"""The latency table measured on the device: the pack the bundle carries to it, and the table that comes back.

`write_pack` puts into the bundle's `latency/` folder every op the search can ask for as a one-op int8 .tflite
(`ops.zip`: the host table's own entries, latency_table.op_tflite, with a repeated weight block that deflates 100x:
tflite-runtime has no TFLite schema module to build them on the device, and the files timed there are then the files
the host times), the two whole files the table is calibrated on (the dense model and the fastest plan at the budget's
size, as onnx2tf wrote them) and `pack.json` naming each whole file's entries. device_tests/latency_table.py times it
on the board or over adb and writes the host table's format; `load` reads it back for `fit latency_table=...`.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from ..core.artifacts import atomic_write_json
from ..core.errors import EdgeError
from .latency_table import FORMAT, LatencyTable, entry_key, line, op_tflite

PACK_FORMAT = "resnet-edge latency pack 1"


def write_pack(folder: Path, shapes, calibration: dict[Path, list], model_key: str, size: int, threads: int) -> Path:
    """`folder`/pack.json, ops.zip and the whole files: what device_tests/latency_table.py times."""
    folder.mkdir(parents=True, exist_ok=True)
    by_key = {entry_key(s): s for s in shapes}
    for whole in calibration.values():
        by_key |= {entry_key(s): s for s in whole}
    names = {key: f"op{i:04d}.tflite" for i, key in enumerate(sorted(by_key))}
    tmp = folder / ".ops.zip.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for key, name in names.items():
            z.writestr(name, op_tflite(by_key[key], pattern=True))
    os.replace(tmp, folder / "ops.zip")
    for path in calibration:
        shutil.copyfile(path, folder / path.name)
    pack = {
        "format": PACK_FORMAT,
        "size": size,
        "threads": threads,
        "model_key": model_key,
        "entries": names,
        "calibration": [{"file": p.name, "keys": [entry_key(s) for s in whole]} for p, whole in calibration.items()],
    }
    return atomic_write_json(folder / "pack.json", pack)


def load(path: Path, size: int, threads: int, model_key: str) -> LatencyTable:
    """A device's table for the search at `size` px and `threads` threads; anything else is refused in one line."""
    path = Path(path)
    rebuild = "time the bundle's latency pack on the device again (device_tests/latency_table.py)"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise EdgeError(f"latency_table={path}: {e.strerror}") from e
    except ValueError as e:
        raise EdgeError(f"latency_table={path}: not JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EdgeError(f"latency_table={path}: not a latency table (format {FORMAT!r}); {rebuild}")
    identity = data.get("identity", {})
    at, n = identity.get("size"), identity.get("threads")
    if (at, n) != (size, threads):
        raise EdgeError(
            f"latency_table={path}: measured at {at} px, {n} thread(s); the budget is at "
            f"{size} px, {threads} thread(s): give budget_size={at} budget_threads={n}, "
            f"or make the bundle at the budget's (resnet-edge bundle RUN budget_size={size} budget_threads={threads}) "
            f"and {rebuild}"
        )
    rest = data.get("rest", {}).get(model_key)
    if not rest or not rest.get("points"):
        raise EdgeError(
            f"latency_table={path}: not calibrated for this run's model ({model_key}; it holds "
            f"{', '.join(data.get('rest', {})) or 'none'}): make this run's bundle and {rebuild}"
        )
    table = LatencyTable(path, size, threads)
    table.identity, table.entries, table.reused, table.source = identity, data["entries"], True, "device"
    table.rest = {model_key: line(rest["points"])}
    return table


def who(identity: dict) -> str:
    """`Raspberry Pi 5 (aarch64), ai-edge-litert 2.3.0, compiled_cache`: whose table, in one phrase."""
    return f"{identity.get('device')}, {identity.get('runtime')}, {identity.get('mode')}"
