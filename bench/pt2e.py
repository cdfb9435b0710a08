"""NNCF's PT2E algorithms for the litert-torch int8 file, compared on a trained run: for each, the time to quantize and
to convert, top-1 on the validation split (what picks the default) and on the test split, and agreement with torch.

    python bench/pt2e.py [name=default size=32 batch=32]

Reads the run's checkpoint and data; writes the files and pt2e.json into runs/<name>-pt2e/ only.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from benchkit import entry, write_table

from pipeline.config import open_run, parse_overrides
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.core.layout import Layout
from pipeline.core.precision import tflite_precision
from pipeline.data import load_data_for, preprocess
from pipeline.engine.checkpoint import load_checkpoint, model_from_checkpoint
from pipeline.engine.evaluate import predict
from pipeline.engine.runners import TFLiteRunner, TorchRunner
from pipeline.engine.torch_to_tflite import to_tflite


def main(argv: list[str]) -> int:
    from litert_torch.quantize.quant_config import QuantConfig

    from quantization import pt2e

    o = parse_overrides(argv)
    size, batch = (o.pop(k, d) for k, d in (("size", None), ("batch", "32")))
    cfg = open_run(None, o)
    run = Layout(cfg.run_dir)
    if not run.best.is_file():
        raise EdgeError(f"{run.root}: no trained run; `resnet-edge run name={run.root.name}` first")
    size = int(size or cfg.image_size)
    data = load_data_for(cfg)
    calib = preprocess(np.asarray(data.calibration.images), data.norm, size)
    splits = {
        "val": (preprocess(np.asarray(data.val.images), data.norm, size), data.val.labels),
        "test": (preprocess(np.asarray(data.test.images), data.norm, size), data.test.labels),
    }
    model = model_from_checkpoint(load_checkpoint(run.best))
    torch_pred = {k: TorchRunner.from_model(model)(x).argmax(1) for k, (x, _) in splits.items()}
    out = run.companion("pt2e")
    rows = [
        {"algorithm": "torch fp32", **{f"{k}_top1": float((torch_pred[k] == y).mean()) for k, (_, y) in splits.items()}}
    ]
    for algorithm, bs in [(a, int(batch)) for a in pt2e.ALGORITHMS] + [("minmax", 1), ("nncf", 1)]:
        t = time.perf_counter()
        quantized, quantizer = pt2e.quantize(model, calib, algorithm, bs)
        quantize_s = time.perf_counter() - t
        t = time.perf_counter()
        path = to_tflite(
            quantized, calib[:1], out / f"{algorithm}_b{bs}_{size}.tflite", QuantConfig(pt2e_quantizer=quantizer)
        )
        convert_s = time.perf_counter() - t
        runner = TFLiteRunner(path)
        row = {
            "algorithm": algorithm,
            "calibration_batch": bs,
            "calibration_images": len(calib),
            "quantize_s": round(quantize_s, 1),
            "convert_s": round(convert_s, 1),
            "precision": tflite_precision(path),
            "size_mib": path.stat().st_size / 2**20,
        }
        for k, (x, y) in splits.items():
            pred = predict(runner, x).argmax(1)
            row |= {f"{k}_top1": float((pred == y).mean()), f"{k}_agreement": float((pred == torch_pred[k]).mean())}
        rows.append(row)
        print(
            f"pt2e: {algorithm} batch {bs}: val {row['val_top1']:.4f} test {row['test_top1']:.4f} "
            f"({quantize_s:.1f} s + {convert_s:.1f} s)",
            file=sys.stderr,
        )
    print(
        f"NNCF PT2E int8 via litert-torch, {cfg.model} at {size} px, {len(calib)} calibration images; host "
        f"{host()['cpu']}"
    )
    print(
        "| algorithm | calibration batch | quantize s | convert s | val top-1 | test top-1 "
        "| test agreement with torch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['algorithm']} | {r.get('calibration_batch', '-')} | {r.get('quantize_s', '-')} | "
            f"{r.get('convert_s', '-')} | {100 * r['val_top1']:.2f} | {100 * r['test_top1']:.2f} | "
            + (f"{100 * r['test_agreement']:.2f} |" if "test_agreement" in r else "- |")
        )
    return write_table(out / f"pt2e_{size}.json", {"run": str(run.root), "host": host(), "rows": rows})


if __name__ == "__main__":
    entry(main)
