"""`resnet-edge bundle RUN_DIR`: one folder to copy to a phone or board. The chosen .tflite files, eval.npz (test
images exactly as the host feeds them, with their labels and the preprocessing constants), the host's accuracy on
those same images (expected.json), the device_tests scripts and a README with the commands."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import EdgeError

SCRIPTS = Path(__file__).resolve().parents[1] / "device_tests"
SCRIPT_NAMES = ("bench_tflite.py", "android_benchmark.py")


def choose(tflite_dir: Path, patterns: str) -> list[Path]:
    """The run's .tflite files whose stem matches any comma-separated glob (`*`: all of them)."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()] or ["*"]
    files = sorted(tflite_dir.glob("*.tflite"))
    chosen = [f for f in files if any(fnmatch.fnmatch(f.stem, g) for g in globs)]
    if not chosen:
        have = ", ".join(f.stem for f in files) or "none"
        raise EdgeError(f"bundle_models={patterns}: no .tflite file in {tflite_dir} matches (have: {have})")
    return chosen


def write_eval_npz(path: Path, x_nchw: np.ndarray, labels: np.ndarray, data, image_size: int) -> None:
    """float32 NHWC (the layout onnx2tf's files take), so the device needs no torch to preprocess."""
    np.savez(path, x=np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1), np.float32), labels=labels.astype(np.int64),
             mean=np.asarray(data.norm.mean, np.float32), std=np.asarray(data.norm.std, np.float32),
             image_size=np.int64(image_size), classes=np.asarray(data.classes), layout=np.asarray("NHWC"),
             dataset=np.asarray(data.name))


def _readme(models: list[Path], n: int, image_size: int, dataset: str) -> str:
    names = " ".join(f"models/{m.name}" for m in models)
    first = f"models/{next((m.name for m in models if 'int8' in m.name), models[0].name)}"
    return f"""# resnet-edge device bundle

{len(models)} TFLite model(s) and {n} {dataset} test images at {image_size}x{image_size}, preprocessed exactly as on the
host (`eval.npz`: float32 NHWC `x`, `labels`, the normalisation `mean`/`std`). `expected.json` holds the host's top-1
of each model on these same images; `bench_tflite.py` reports whether the device agrees.

## Raspberry Pi OS 64-bit, Jetson, any Linux board (Python 3.9+)

```sh
python3 -m venv ~/edge && ~/edge/bin/pip install numpy ai-edge-litert
~/edge/bin/python bench_tflite.py {names} --eval eval.npz --threads 1,4 --runs 50 --warmup 10
```

It writes `device_results_<hostname>.json`. Copy that file into the run directory on the host and run
`resnet-edge report runs/<name>`: the device rows join the report table.

Runtime order: `ai_edge_litert`, then `tflite_runtime`, then `tensorflow.lite`. Where ai-edge-litert has no wheel,
`pip install "numpy<2" tflite-runtime` works instead: the tflite-runtime 2.14 wheels are built against numpy 1.x and
need glibc >= 2.34 on aarch64 (Raspberry Pi OS bookworm, Ubuntu 22.04 or newer). A delegate (e.g. an NPU's
`libvx_delegate.so`): `--delegate /path/to/lib.so`.

## Android phone over adb (from a computer with platform-tools)

Get TensorFlow's prebuilt `benchmark_model` for the phone's ABI (android_aarch64_benchmark_model from
https://www.tensorflow.org/lite/performance/measurement), then:

```sh
python3 android_benchmark.py {first} --binary ./android_aarch64_benchmark_model --threads 4
python3 android_benchmark.py {names} --binary ./android_aarch64_benchmark_model --use-gpu   # GPU delegate
python3 android_benchmark.py {first} --binary ./android_aarch64_benchmark_model --cpu-mask f0 --threads 4  # big cores
```

`--serial SERIAL` picks one of several phones; `--use-nnapi`, `--op-profiling` and `--timeout` as named. It pushes to
/data/local/tmp/resnet-edge, removes what it pushed afterwards, and writes `device_results_android_<serial>.json`.
In Termux on the phone itself, the board commands above work where a TFLite runtime wheel installs.
"""


def bundle(cfg) -> Path:
    """runs/<name>/device_bundle/ from cfg.bundle_models and cfg.bundle_images, built in a temporary folder (whose
    files therefore need no atomic writes of their own) and swapped in whole."""
    from .data import eval_arrays, load_data_for
    from .evaluate import evaluate

    run, images = cfg.run_dir, cfg.bundle_images
    if images < 1:
        raise EdgeError(f"bundle_images={images}: need at least 1")
    models = choose(run / "tflite", cfg.bundle_models)
    missing = [s for s in SCRIPT_NAMES if not (SCRIPTS / s).is_file()]
    if missing:
        raise EdgeError(f"{SCRIPTS}: missing {', '.join(missing)}; the checkout is incomplete")
    data = load_data_for(cfg)
    x, labels = eval_arrays(data, cfg.image_size, images)
    out = run / "device_bundle"
    tmp = Path(tempfile.mkdtemp(prefix=".device_bundle-", dir=run))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the bundle is meant to be copied and shared
        (tmp / "models").mkdir()
        for m in models:
            shutil.copyfile(m, tmp / "models" / m.name)
        write_eval_npz(tmp / "eval.npz", x, labels, data, cfg.image_size)
        rows = evaluate([tmp / "models" / m.name for m in models], x, labels, threads=cfg.threads or None)
        (tmp / "expected.json").write_text(json.dumps({
            "images": int(len(labels)), "source": "host",
            "top1": {Path(r["artifact"]).name: r["top1"] for r in rows}}, indent=2))
        for s in SCRIPT_NAMES:
            shutil.copyfile(SCRIPTS / s, tmp / s)
            os.chmod(tmp / s, 0o755)
        (tmp / "README.md").write_text(_readme(models, len(labels), cfg.image_size, data.name))
        old = run / ".device_bundle-old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"bundle ok -> {out} ({len(models)} models, {len(labels)} images, {size:.1f} MiB)", file=sys.stderr)
    return out
