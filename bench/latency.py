"""Latency at phone resolution, one table from one run: a trained run's weights re-exported at 224x224 (ResNet is
fully convolutional, so the same weights run at any size) through every runtime and precision, next to MobileNetV2.

    python bench/latency.py [name=default image_size=224 runs=50 warmup=5 threads=1,2 calib=64 mobilenet=true]

Rows: torch fp32 eager; onnxruntime fp32 and NNCF int8 (QDQ); TFLite fp32, fp16, dynamic-range and full int8
(onnx2tf); the run's structured- and magnitude-pruned models as int8 TFLite; MobileNetV2 (random weights, the run's
input channels and classes) as TFLite fp32 and int8 and onnxruntime fp32. Each artifact is timed in its own process
(pipeline.benchmark). int8 files are calibrated on the run's training images upsampled to the size; their accuracy
is not the point here (the model was trained at the run's size), their speed is. Writes runs/<name>/bench/latency_<size>.json,
which `resnet-edge report` shows as its own table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.artifacts import atomic_write_json  # noqa: E402
from pipeline.benchmark import benchmark, host  # noqa: E402
from pipeline.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pipeline.config import load_config, parse_bool, parse_overrides  # noqa: E402
from pipeline.convert import convert_tflite  # noqa: E402
from pipeline.data import eval_arrays, input_shape, load_data_for, preprocess  # noqa: E402
from pipeline.errors import EdgeError  # noqa: E402
from pipeline.export import export_onnx  # noqa: E402
from pipeline.report import latency_markdown  # noqa: E402
from quantization.nncf_ops import ptq_onnx  # noqa: E402


def mobilenet_checkpoint(parent: dict, out: Path) -> Path:
    """A resnet-edge checkpoint of a randomly initialised MobileNetV2 with the run's input channels and classes."""
    import torch

    from models import build_model

    torch.manual_seed(0)
    options = {k: parent["model_options"][k] for k in ("num_classes", "in_channels")}
    model = build_model("mobilenet_v2", **options).eval()
    ckpt = {**{k: parent[k] for k in ("format", "config", "data")}, "model_name": "mobilenet_v2",
            "model_options": options, "model": model.state_dict(), "epoch": 0, "best_acc": -1.0, "history": []}
    return save_checkpoint(ckpt, out)


def build(cfg, size: int, calib_n: int, with_mobilenet: bool) -> list[tuple[str, str, str, Path]]:
    """(model, runtime, precision, artifact) at `size`, written under runs/<name>/bench<size>/."""
    run = cfg.run_dir
    data = load_data_for(cfg)
    calib_u8 = np.asarray(data.calibration.images[:calib_n])
    x, _ = eval_arrays(data, size, 8)  # the export parity gate's batch
    out = run / f"bench{size}"
    best = run / "train" / "best.pt"
    # (label, checkpoint, file stem, TFLite variants, onnxruntime precisions)
    sources = [(cfg.model, best, "model", ("fp32", "fp16", "dynamic_range", "int8"), ("fp32", "int8"))]
    for name in (f"structured{round(cfg.structured_ratio * 100)}", f"pruned{round(cfg.prune_ratio * 100)}"):
        if (run / "quant" / f"{name}.pt").is_file():
            sources.append((f"{cfg.model} {name}", run / "quant" / f"{name}.pt", name, ("int8",), ()))
    if with_mobilenet:
        ckpt = mobilenet_checkpoint(load_checkpoint(best), out / "mobilenet_v2.pt")
        sources.append(("mobilenet_v2 (random)", ckpt, "mobilenet_v2", ("fp32", "int8"), ("fp32",)))
    rows = [(cfg.model, "torch", "fp32", best)]
    for label, ckpt, stem, variants, ort in sources:
        t = time.perf_counter()
        onnx = out / f"{stem}.onnx"
        export_onnx(ckpt, onnx, x)
        paths = convert_tflite(onnx, out, calib_u8, data.norm, size, variants, prefix=f"{stem}_")
        if "fp32" in ort:
            rows.append((label, "onnxruntime", "fp32", onnx))
        if "int8" in ort:
            calib = preprocess(calib_u8, data.norm, size)
            rows.append((label, "onnxruntime", "int8", ptq_onnx(onnx, out / f"{stem}_ptq_int8.onnx", calib)))
        rows += [(label, "tflite", v, p) for v, p in paths.items()]
        print(f"latency: built {label} at {size} px in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return rows


def main(argv: list[str]) -> int:
    o = parse_overrides(argv)
    run = Path(o.get("runs_dir", "runs")) / o.get("name", "default")
    size, runs, warmup = int(o.get("image_size", 224)), int(o.get("runs", 50)), int(o.get("warmup", 5))
    threads = [int(t) for t in o.get("threads", "1,2").split(",")]
    if not (run / "train" / "best.pt").is_file():
        raise EdgeError(f"{run}: no trained run; `resnet-edge run name={run.name}` first")
    cfg = load_config(run / "config.yaml", {"runs_dir": str(run.parent), "name": run.name})
    built = build(cfg, size, int(o.get("calib", 64)), parse_bool("mobilenet", o.get("mobilenet", "true")))
    in_channels = input_shape(cfg)[1]
    results = benchmark([p for *_, p in built], [1, in_channels, size, size], None, threads, warmup, runs)
    rows = []
    for (model, runtime, precision, path), r in zip(built, results):
        cells = {f"ms_{n}": r[f"t{n}"].get("latency_ms_median") for n in threads}
        rows.append({"model": model, "runtime": runtime, "precision": precision, "artifact": path.name,
                     "size_mib": r["size_mib"], "gzip_mib": r["gzip_mib"], **cells,
                     "peak_rss_mib": max((r[f"t{n}"].get("peak_rss_mib") or 0) for n in threads),
                     "errors": {f"t{n}": r[f"t{n}"]["error"] for n in threads if "error" in r[f"t{n}"]} or None})
    t1 = f"ms_{threads[0]}"
    base = next((r[t1] for r in rows if r["runtime"] == "tflite" and r["precision"] == "fp32"), None)
    dense_int8 = next((r[t1] for r in rows if r["runtime"] == "tflite" and r["artifact"] == "model_int8.tflite"), None)
    for r in rows:
        r["speedup_vs_tflite_fp32"] = base / r[t1] if base and r[t1] else None
        r["speedup_vs_tflite_int8"] = dense_int8 / r[t1] if dense_int8 and r[t1] else None
    table = {"image_size": size, "in_channels": in_channels, "threads": threads, "runs": runs, "warmup": warmup,
             "host": host(), "rows": rows}
    print(latency_markdown(table))
    out = atomic_write_json(run / "bench" / f"latency_{size}.json", table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
