"""`resnet-edge bundle RUN_DIR`: one folder to copy to a phone or board. The chosen .tflite files (those of the run
that match bundle_models and passed their gates), eval.npz (test images exactly as the host feeds them, with their
labels and the preprocessing constants), the host's accuracy on those same images (expected.json), the device_tests
scripts and a README with the commands."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config.keys import EVAL_KEYS
from ..core import console, records
from ..core.errors import EdgeError
from ..core.layout import DEVICE_TESTS
from ..engine.contract import Stage
from ..engine.evaluate import predict, score
from ..engine.fit_files import fittable, latency_pack
from ..engine.runners import open_runner

SCRIPTS = DEVICE_TESTS
SCRIPT_NAMES = (
    "bench_tflite.py",
    "bench_rows.py",
    "android_benchmark.py",
    "tflite_precision.py",
    "tflite_memory.py",
    "latency_table.py",
)
PACK_FILES = ("pack.json", "ops.zip")


def packs(cfg) -> bool:
    """Whether the bundle carries fit's latency pack (latency/): bundle_table and a model fit can prune."""
    return cfg.bundle_table and fittable(cfg)


def write_eval_npz(path: Path, x_nchw: np.ndarray, labels: np.ndarray, data, image_size: int) -> None:
    """float32 NHWC (the layout onnx2tf's files take), so the device needs no torch to preprocess."""
    np.savez(
        path,
        x=np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1), np.float32),
        labels=labels.astype(np.int64),
        mean=np.asarray(data.norm.mean, np.float32),
        std=np.asarray(data.norm.std, np.float32),
        image_size=np.int64(image_size),
        classes=np.asarray(data.classes),
        layout=np.asarray("NHWC"),
        dataset=np.asarray(data.name),
    )


def _readme(models: list[Path], n: int, image_size: int, dataset: str, runs: int, warmup: int) -> str:
    names = " ".join(f"models/{m.name}" for m in models)
    first = f"models/{models[-1].name}"
    return f"""# resnet-edge device bundle

{len(models)} TFLite model(s) and {n} {dataset} test images at {image_size}x{image_size}, preprocessed exactly as on the
host (`eval.npz`: float32 NHWC `x`, `labels`, the normalisation `mean`/`std`). `expected.json` holds the host's top-1
of each model on these same images; `bench_tflite.py` reports whether the device agrees.

## Raspberry Pi OS 64-bit, Jetson, any Linux board (Python 3.9+)

```sh
python3 -m venv ~/edge && ~/edge/bin/pip install numpy ai-edge-litert
~/edge/bin/python bench_tflite.py {names} --eval eval.npz --threads 1,4 --runs {runs} --warmup {warmup}
```

It writes `device_results_<hostname>_<time>.json` (a new file each run). Copy that file into the run's `device/` folder
on the host (`runs/<name>/device/`) and run `resnet-edge report runs/<name>`: the device rows join the report table.

Runtime order: `ai_edge_litert`, then `tflite_runtime`, then `tensorflow.lite`. Where ai-edge-litert has no wheel,
`pip install "numpy<2" tflite-runtime` works instead: the tflite-runtime 2.14 wheels are built against numpy 1.x and
need glibc >= 2.34 on aarch64 (Raspberry Pi OS bookworm, Ubuntu 22.04 or newer). A delegate (e.g. an NPU's
`libvx_delegate.so`): `--delegate /path/to/lib.so`.

## Android phone over adb (from a computer with platform-tools)

Get TensorFlow's prebuilt `benchmark_model` for the phone's ABI (android_aarch64_benchmark_model from
https://www.tensorflow.org/lite/performance/measurement), then:

```sh
python3 android_benchmark.py {first} --binary ./android_aarch64_benchmark_model --threads 4 \\
    --runs {runs} --warmup {warmup}
python3 android_benchmark.py {names} --binary ./android_aarch64_benchmark_model --use-gpu   # GPU delegate
python3 android_benchmark.py {first} --binary ./android_aarch64_benchmark_model --cpu-mask f0 --threads 4  # big cores
```

`--serial SERIAL` picks one of several phones; `--use-nnapi`, `--op-profiling` and `--timeout` as named. It pushes to
/data/local/tmp/resnet-edge (`--remote-dir`), removes only the files it pushed (and the folder only if it made it),
stops only the process it started, and writes `device_results_android_<serial>_<time>.json`.
In Termux on the phone itself, the board commands above work where a TFLite runtime wheel installs.

## Memory

`bench_tflite.py` reports each model's memory split by where it sits (`model MiB`: file pages, XNNPACK's packed weights
and buffers, activations; `floor MiB`: weights + activations) and, with ai-edge-litert 2 or newer, runs the models with
XNNPACK's weight cache by default: the packed weights are written once to `<model>.xnnpack_cache` beside the model and
mapped from it afterwards, so they cost file-backed pages the OS can drop instead of a second private copy of every
weight (`--mode interpreter` turns it off; the folder must be writable). Where CompiledModel cannot load or run a model
(ai-edge-litert 2.3.0 under qemu on arm64 could not), the default runs it again without the cache, then with the
Interpreter, and the row's `mode` and `fallback` say which ran and why; `android_benchmark.py` likewise runs a model
again without the cache when benchmark_model fails with it. The same in an app: LiteRT's `CompiledModel` with the CPU
option `xnnpack_weight_cache_path` set to a file path (a folder path does nothing), or the XNNPACK delegate's
`weight_cache_file_path` option (C/C++); `benchmark_model --xnnpack_weight_cache_file_path=` measures it on a phone. The
delegate flag `TFLITE_XNNPACK_DELEGATE_FLAG_TRANSIENT_INDIRECTION_BUFFER` (0x20, with the default 0x3; `--mode
compiled_lean` here) saves the convolutions' pointer tables (5.8 MiB for ResNet-18 at 224x224) for 10-20% more latency.
"""


def _table_readme(cfg) -> str:
    return f"""
## The latency table for `resnet-edge fit` (latency/)

`latency/` holds every op the budget search can ask for, as one-op int8 .tflite files (`ops.zip`), and the model at
its two ends (dense and fastest plan) at {cfg.budget_size}x{cfg.budget_size}. Time them on the device itself, then
search on the host against what this device measured:

```sh
~/edge/bin/python latency_table.py                      # on the board: writes latency_table_<hostname>_<time>.json
python3 latency_table.py --adb --binary ./android_aarch64_benchmark_model   # a phone on USB, from a computer
resnet-edge fit runs/<name> latency_table=latency_table_<where>_<time>.json budget_ms=40   # back on the host
```

The table is for {cfg.budget_threads} thread(s) at {cfg.budget_size} px (`--threads` times another count; fit refuses
a table whose size or thread count is not the budget's). fit writes `fit/fit_<budget>_{cfg.budget_size}px_int8.tflite`:
time it here with `bench_tflite.py` and copy the JSON into the run's `device/` folder, and the report shows the
device's latency beside the prediction.
"""


def bundle_stage(ctx) -> None:
    """<run>/device_bundle/, built in a temporary folder (whose files therefore need no atomic writes of their own)
    and swapped in whole."""
    layout, cfg = ctx.layout, ctx.cfg
    models = [layout.path(rel) for rel in chosen(ctx)]
    left_out = [rel for rel in candidates(ctx) if layout.path(rel) not in models]
    if not models:
        have = ", ".join(Path(r).stem for r in ctx.rows if r.endswith(".tflite")) or "none"
        raise EdgeError(
            f"bundle_models={cfg.bundle_models}: no built .tflite file that passed its gates matches "
            f"(the run declares: {have})"
        )
    missing = [s for s in SCRIPT_NAMES if not (SCRIPTS / s).is_file()]
    if missing:
        raise EdgeError(f"{SCRIPTS}: missing {', '.join(missing)}; the checkout is incomplete")
    n = min(cfg.bundle_images, len(ctx.eval_set.labels))
    x, labels = ctx.eval_set.x[:n], ctx.eval_set.labels[:n]
    out = layout.bundle_dir
    tmp = Path(tempfile.mkdtemp(prefix=".device_bundle-", dir=layout.root))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the bundle is meant to be copied and shared
        (tmp / "models").mkdir()
        for m in models:
            shutil.copyfile(m, tmp / "models" / m.name)
        write_eval_npz(tmp / "eval.npz", x, labels, ctx.data, cfg.image_size)
        top1 = {
            m.name: score(predict(open_runner(tmp / "models" / m.name, cfg.threads or None), x), labels)["top1"]
            for m in models
        }
        (tmp / "expected.json").write_text(
            json.dumps(
                {
                    "images": int(len(labels)),
                    "source": "host",
                    "top1": top1,
                    "precision": {m.name: records.read(layout, layout.rel(m))["build"]["precision"] for m in models},
                },
                indent=2,
            )
        )
        for s in SCRIPT_NAMES:
            shutil.copyfile(SCRIPTS / s, tmp / s)
            os.chmod(tmp / s, 0o755)
        if packs(cfg):
            latency_pack(ctx, tmp / "latency")
        (tmp / "README.md").write_text(
            _readme(models, len(labels), cfg.image_size, ctx.data.name, cfg.bench_runs, cfg.bench_warmup)
            + (_table_readme(cfg) if packs(cfg) else "")
        )
        kept = _carry_over(out, tmp)
        old = layout.root / ".device_bundle-old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if kept:
        print(f"  bundle: kept what a device run wrote into the old bundle: {', '.join(kept)}", file=console.err())
    if left_out:
        why = {rel: records.row_status(layout, rel, cfg.max_size_mib)[0] for rel in left_out}
        print(
            f"  bundle: left out (not built, failed a gate, or stale): "
            f"{', '.join(f'{rel} ({why[rel]})' for rel in left_out)}",
            file=console.err(),
        )


def _carry_over(old: Path, new: Path) -> list[str]:
    """Files in the old bundle that the bundle did not make (device_results_*.json of a run on this machine, notes),
    copied into the new one, so re-making the bundle loses nothing a device run wrote there."""
    if not old.is_dir():
        return []
    kept = []
    for path in sorted(old.iterdir()):
        if path.name == "models" or (new / path.name).exists():
            continue
        if path.is_dir():
            shutil.copytree(path, new / path.name)
        else:
            shutil.copy2(path, new / path.name)
        kept.append(path.name)
    return kept


def candidates(ctx) -> list[str]:
    """The run's .tflite rows whose stem matches a comma-separated glob of bundle_models (`*`: all)."""
    globs = [p.strip() for p in ctx.cfg.bundle_models.split(",") if p.strip()] or ["*"]
    tflite = [r for r in ctx.rows if r.endswith(".tflite")]
    return [r for r in tflite if any(fnmatch.fnmatch(Path(r).stem, g) for g in globs)]


def chosen(ctx) -> list[str]:
    """The candidates that were built and passed every gate, max_size_mib's included: a file that failed a gate, or
    was checked against nothing, is not shipped."""
    return [
        r
        for r in candidates(ctx)
        if records.built(ctx.layout, r) and records.passed(ctx.layout, r, ctx.cfg.max_size_mib)
    ]


def _inputs(ctx) -> list[str]:
    layout, shipped = ctx.layout, candidates(ctx)
    return (
        shipped
        + [f"{layout.rel(layout.record(rel))}#build,gates" for rel in shipped]
        + [str(SCRIPTS / name) for name in SCRIPT_NAMES]
    )


def _outputs(ctx) -> list[str]:
    layout = ctx.layout
    files = ["eval.npz", "expected.json", "README.md", *SCRIPT_NAMES]
    files += [f"latency/{f}" for f in PACK_FILES] if packs(ctx.cfg) else []
    return [layout.rel(layout.bundle_dir / f) for f in files] + [
        layout.rel(layout.bundle_dir / "models" / Path(rel).name) for rel in chosen(ctx)
    ]


STAGE = Stage(
    "bundle",
    bundle_stage,
    "device bundle: chosen .tflite files, eval.npz, device_tests scripts, README",
    needs=("convert",),
    keys=EVAL_KEYS
    | {"bundle_models", "bundle_images", "bench_runs", "bench_warmup", "max_size_mib", "bundle_table"}
    | {"budget_size", "budget_threads", "fit_levels", "structured_round_to", "model", "shortcut"},
    inputs=_inputs,
    outputs=_outputs,
    needs_run=True,
    sections=(),
)
