"""Latency at phone resolution, one table from one run: a trained run's weights re-exported at 224x224 (ResNet is
fully convolutional, so the same weights run at any size) through every runtime and precision, next to MobileNetV2.

    python bench/latency.py [name=default size=224 calib=64 mobilenet=true bench_runs=50 bench_warmup=10 ...]

Rows: torch fp32 eager; onnxruntime fp32 and NNCF int8 (QDQ); TFLite fp32, fp16, dynamic-range and full int8 (onnx2tf);
TFLite fp32 and NNCF PT2E int8 (litert-torch); the run's structured- and magnitude-pruned models as int8 TFLite;
MobileNetV2 (random weights, the run's input channels and classes) as TFLite fp32 and int8 and onnxruntime fp32. Each
artifact is timed in its own process (pipeline.stages.benchmark) with the run's bench_runs / bench_warmup /
bench_threads (key=value overrides them). int8 files are calibrated on the run's training images upsampled to the size;
their accuracy is not the point here (the model was trained at the run's size), their speed is. Reads the run, writes
only into runs/<name>-latency/ (files and latency_<size>.json), which `resnet-edge report` of the run shows as its own
table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from benchkit import entry, write_table

from pipeline.config import open_run, parse_bool, parse_overrides
from pipeline.core.artifacts import atomic_write, file_sha
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.core.layout import Layout
from pipeline.core.names import magnitude_name, structured_name
from pipeline.data import eval_arrays, input_shape, load_data_for, preprocess
from pipeline.engine.checkpoint import load_checkpoint, save_checkpoint
from pipeline.engine.memory import memory_figures
from pipeline.engine.onnx_to_tflite import tflite_at_size
from pipeline.stages.benchmark import benchmark
from pipeline.stages.report import fp32_reference, latency_markdown


def mobilenet_checkpoint(parent: dict, out: Path) -> Path:
    """A resnet-edge checkpoint of a randomly initialised MobileNetV2 with the run's input channels and classes."""
    import torch

    from models import build_model

    torch.manual_seed(0)
    options = {k: parent["model_options"][k] for k in ("num_classes", "in_channels")}
    model = build_model("mobilenet_v2", **options).eval()
    ckpt = {
        **{k: parent[k] for k in ("format", "config", "data")},
        "model_name": "mobilenet_v2",
        "model_options": options,
        "model": model.state_dict(),
        "epoch": 0,
        "best_acc": -1.0,
        "history": [],
    }
    return save_checkpoint(ckpt, out)


def ptq(onnx_path: Path, out: Path, calib) -> Path:
    import onnx

    from quantization.nncf_ops import ptq_onnx

    quantized = ptq_onnx(onnx.load(str(onnx_path)), calib)
    return atomic_write(out, lambda tmp: onnx.save(quantized, str(tmp)))


def build(cfg, run: Layout, out: Path, size: int, calib_n: int, with_mobilenet: bool) -> list[tuple]:
    """(model, runtime, precision, artifact) at `size`, written under `out` (never into the run)."""
    data = load_data_for(cfg)
    calib_u8 = np.asarray(data.calibration.images[:calib_n])
    x, _ = eval_arrays(data, size, 8)  # the export parity gate's batch
    # (label, checkpoint, file stem, TFLite variants, onnxruntime precisions)
    sources = [(cfg.model, run.best, "model", ("fp32", "fp16", "dynamic_range", "int8"), ("fp32", "int8"))]
    for name in (structured_name(cfg), magnitude_name(cfg)):
        if run.quant(f"{name}.pt").is_file():
            sources.append((f"{cfg.model} {name}", run.quant(f"{name}.pt"), name, ("int8",), ()))
    if with_mobilenet:
        ckpt = mobilenet_checkpoint(load_checkpoint(run.best), out / "mobilenet_v2.pt")
        sources.append(("mobilenet_v2 (random)", ckpt, "mobilenet_v2", ("fp32", "int8"), ("fp32",)))
    rows = [(cfg.model, "torch", "fp32", run.best)]
    if cfg.run_litert:  # the second converter: litert-torch from torch, fp32 and NNCF PT2E int8
        from pipeline.engine.checkpoint import model_from_checkpoint
        from pipeline.engine.torch_to_tflite import convert_fp32, convert_int8

        t = time.perf_counter()
        model = model_from_checkpoint(load_checkpoint(run.best))
        rows.append(
            (cfg.model, "tflite (litert-torch)", "fp32", convert_fp32(model, x, out / "model_fp32_litert.tflite"))
        )
        rows.append(
            (
                cfg.model,
                "tflite (litert-torch)",
                "NNCF int8",
                convert_int8(
                    model, preprocess(calib_u8, data.norm, size), out / "model_nncf_int8.tflite", cfg.pt2e_algorithm
                ),
            )
        )
        print(
            f"latency: built {cfg.model} with litert-torch at {size} px in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
    for label, ckpt, stem, variants, ort in sources:
        t = time.perf_counter()
        onnx = out / f"{stem}.onnx"
        paths = tflite_at_size(ckpt, onnx, variants, calib_u8, data.norm, size, x)
        if "fp32" in ort:
            rows.append((label, "onnxruntime", "fp32", onnx))
        if "int8" in ort:
            rows.append(
                (
                    label,
                    "onnxruntime",
                    "int8",
                    ptq(onnx, out / f"{stem}_ptq_int8.onnx", preprocess(calib_u8, data.norm, size)),
                )
            )
        rows += [(label, "tflite", v, p) for v, p in paths.items()]
        print(f"latency: built {label} at {size} px in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return rows


def main(argv: list[str]) -> int:
    o = parse_overrides(argv)
    options = {k: o.pop(k) for k in ("size", "calib", "mobilenet") if k in o}
    cfg = open_run(None, o)
    run = Layout(cfg.run_dir)
    if not run.best.is_file():
        raise EdgeError(f"{run.root}: no trained run; `resnet-edge run name={run.root.name}` first")
    size, calib = (options.get(k, d) for k, d in (("size", "224"), ("calib", "64")))
    if not size.isdigit() or not calib.isdigit() or int(size) < 17 or int(calib) < 1:
        raise EdgeError(f"size={size} calib={calib}: expected whole numbers, size >= 17 pixels and calib >= 1 images")
    size = int(size)
    out = run.companion("latency")
    built = build(
        cfg, run, out / f"{size}px", size, int(calib), parse_bool("mobilenet", options.get("mobilenet", "true"))
    )
    in_channels = input_shape(cfg)[1]
    threads = cfg.thread_counts
    results = benchmark([p for *_, p in built], [1, in_channels, size, size], threads, cfg.bench_warmup, cfg.bench_runs)
    rows = []
    for (model, runtime, precision, path), r in zip(built, results, strict=True):
        cells = {f"ms_{n}": r["threads"][str(n)].get("latency_ms_median") for n in threads}
        rows.append(
            {
                "model": model,
                "runtime": runtime,
                "precision": precision,
                "artifact": path.name,
                "size_mib": path.stat().st_size / 2**20,
                **cells,
                "peak_rss_mib": max((r["threads"][str(n)].get("peak_rss_mib") or 0) for n in threads),
                **memory_figures(r),
                "errors": {n: c["error"] for n, c in r["threads"].items() if "error" in c} or None,
            }
        )
    t1 = f"ms_{threads[0]}"
    base = (fp32_reference([r for r in rows if r[t1]], "tflite") or {}).get(t1)
    dense_int8 = next((r[t1] for r in rows if r["runtime"] == "tflite" and r["artifact"] == "model_int8.tflite"), None)
    for r in rows:
        r["speedup_vs_tflite_fp32"] = base / r[t1] if base and r[t1] else None
        r["speedup_vs_tflite_int8"] = dense_int8 / r[t1] if dense_int8 and r[t1] else None
    weights = [run.best] + [run.quant(f"{n}.pt") for n in (structured_name(cfg), magnitude_name(cfg))]
    table = {
        "run": str(run.root),
        "image_size": size,
        "in_channels": in_channels,
        "threads": threads,
        "weights": {run.rel(p): file_sha(p) for p in weights if p.is_file()},  # what report holds it against
        "runs": cfg.bench_runs,
        "warmup": cfg.bench_warmup,
        "host": host(),
        "rows": rows,
    }
    print(latency_markdown(table))
    return write_table(out / f"latency_{size}.json", table)


if __name__ == "__main__":
    entry(main)
