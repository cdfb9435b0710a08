"""Memory of the run's TFLite files under every way of running them, at the run's size and at 224x224: where each MiB
goes (device_tests/tflite_memory.py) and what each option of the runtime costs in load, first-inference and steady
time.

    python bench/memory.py [name=default threads=1 runs=50 warmup=10]

Files: fp32, int8, structured50_int8, pruned50_int8 of runs/<name>/tflite/ and, where bench/latency.py ran, their
224x224 versions in runs/<name>-latency/224px/. Each is copied into runs/<name>-memory/ (the weight cache files are
written there, never into the run) and measured in a fresh process per mode: interpreter (XNNPACK), interpreter_plain
(no XNNPACK), interpreter_bytes (the file read into memory, not mapped), compiled (LiteRT CompiledModel), compiled_cache
cold (writes the weight cache) and warm (maps it), compiled_lean cold and warm (the weight cache and transient
indirection buffers), and interpreter again (the latency of the first and last run of a file bracket the host's drift).
Writes runs/<name>-memory/memory.json and memory.md.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchkit import entry, write_table

from pipeline.config import parse_overrides
from pipeline.core.artifacts import atomic_write_text
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.stages.benchmark import benchmark_one

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "fp32": ("fp32.tflite", "model_fp32.tflite"),
    "int8": ("int8.tflite", "model_int8.tflite"),
    "structured50_int8": ("structured50_int8.tflite", "structured50_int8.tflite"),
    "pruned50_int8": ("pruned50_int8.tflite", "pruned50_int8.tflite"),
}
RUNS = [
    ("interpreter", "interpreter"),
    ("interpreter_plain", "interpreter_plain"),
    ("interpreter_bytes", "interpreter_bytes"),
    ("compiled", "compiled"),
    ("compiled_cache", "compiled_cache cold"),
    ("compiled_cache", "compiled_cache warm"),
    ("compiled_lean", "compiled_lean cold"),
    ("compiled_lean", "compiled_lean warm"),
    ("interpreter", "interpreter again"),
]
COLUMNS = [
    ("model_mib", "model MiB"),
    ("file_mib", "file"),
    ("loaded_mib", "read in"),
    ("cache_mib", "cache"),
    ("packed_mib", "packed+bufs"),
    ("arena_mib", "arena"),
    ("invoke_mib", "scratch"),
    ("other_mib", "other"),
    ("anon_mib", "anon (dirty)"),
    ("floor_mib", "floor"),
    ("indirection_mib", "indirection (est.)"),
    ("vs_floor", "x floor"),
    ("code_mib", "code"),
    ("load_ms", "load ms"),
    ("first_ms", "first ms"),
    ("latency_ms_median", "ms"),
]


def measure(path: Path, mode: str, threads: int, warmup: int, runs: int) -> dict:
    cell = benchmark_one(path, [], [threads], warmup, runs, mode=mode)["threads"][str(threads)]
    return cell.get("memory") or cell


def main(argv: list[str]) -> int:
    opts = parse_overrides(argv)
    name = opts.get("name", "default")
    threads, runs, warmup = int(opts.get("threads", 1)), int(opts.get("runs", 50)), int(opts.get("warmup", 10))
    run = ROOT / "runs" / name
    if not (run / "tflite").is_dir():
        raise EdgeError(f"{run}/tflite: no such run; make one first (resnet-edge run name={name})")
    out = ROOT / "runs" / f"{name}-memory"
    sources = {"run size": run / "tflite", "224x224": ROOT / "runs" / f"{name}-latency" / "224px"}
    table = {"host": host(), "threads": threads, "runs": runs, "warmup": warmup, "rows": []}
    for size, folder in sources.items():
        for label, files in FILES.items():
            source = folder / files[0 if size == "run size" else 1]
            if not source.is_file():
                continue
            copy = out / size.replace(" ", "_") / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
            for mode, run_label in RUNS:
                if run_label.endswith("cold"):
                    Path(f"{copy}.xnnpack_cache").unlink(missing_ok=True)
                row = measure(copy, mode, threads, warmup, runs)
                table["rows"].append({"size": size, "file": label, "run": run_label, **row})
                print(
                    f"  {size} {label} {run_label}: "
                    + (
                        row.get("error")
                        or f"model {row['model_mib']:.1f} MiB ({row['vs_floor']:.2f}x floor), "
                        f"{row['latency_ms_median']:.2f} ms"
                    ),
                    file=sys.stderr,
                )
    if not table["rows"]:
        raise EdgeError(f"{run}/tflite: none of {', '.join(f[0] for f in FILES.values())} found")
    atomic_write_text(out / "memory.md", markdown(table))
    return write_table(out / "memory.json", table)


def markdown(table: dict) -> str:
    h = table["host"]
    out = [
        f"Host: {h['cpu']}, {h['cores']} cores; {table['threads']} thread(s); MiB = 2^20 bytes; model MiB = resident "
        "added less the runtime's code pages; ms = median of the steady runs.",
        "",
        "| size | file | run | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for r in table["rows"]:
        cells = (
            [
                "-" if r.get(k) is None else f"{r[k]:.2f}" if k in ("vs_floor", "latency_ms_median") else f"{r[k]:.1f}"
                for k, _ in COLUMNS
            ]
            if "error" not in r
            else [r["error"]] + [""] * (len(COLUMNS) - 1)
        )
        out.append(f"| {r['size']} | {r['file']} | {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    entry(main)
