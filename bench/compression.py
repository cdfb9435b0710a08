"""Compression figures on a trained run (default: runs/default, the `make demo` ResNet-18, full 10,000-image test
split): fp32, NNCF PTQ int8 ONNX, TFLite int8, QAT int8 (QDQ ONNX and TFLite), NNCF magnitude 30/50/70% + int8,
structured 30/50% + int8 — top-1, size and gzip size in MiB, MACs. Prints one table and writes JSON.

    python bench/compression.py [name=default qat_epochs=1 prune_epochs=1 structured_epochs=2 ...]

Needs `resnet-edge train`, `export` and `convert` done for the run. Each variant that fails becomes a row.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from pipeline.config import load_config, parse_overrides  # noqa: E402
from pipeline.errors import EdgeError  # noqa: E402
from pipeline.summary import count_macs  # noqa: E402
from pipeline.artifacts import file_sizes  # noqa: E402
from quantization.stages import Context, prune_stage, quantize_stage  # noqa: E402


def main(argv: list[str]) -> int:
    overrides = parse_overrides(argv)
    name = overrides.get("name", "default")
    saved = Path(overrides.get("runs_dir", "runs")) / name / "config.yaml"
    base = load_config(saved if saved.is_file() else None, overrides)
    # a failed gate is a figure here, not a stop: the table says pass or fail per row
    base = dataclasses.replace(base, max_int8_drop=100.0)
    ctx = Context(base)
    import torch

    dense_macs = count_macs(model_from_checkpoint(load_checkpoint(ctx.checkpoint)), torch.from_numpy(ctx.x[:1]))
    rows: list[dict] = []
    fp32 = dict(ctx.reference, **file_sizes(ctx.onnx), method="fp32", macs=dense_macs)
    rows.append(fp32)
    for variant in ("fp32", "int8"):
        path = ctx.run / "tflite" / f"{variant}.tflite"
        rows += ctx.gate(ctx.evaluate([path]), {"method": f"tflite_{variant}", "macs": dense_macs})
    jobs = [("ptq + qat", lambda: quantize_stage(dataclasses.replace(base, qat=True)))]
    jobs += [(f"nncf {r:.0%}", lambda r=r: prune_stage(dataclasses.replace(base, prune_ratio=r), "magnitude"))
             for r in (0.3, 0.5, 0.7)]
    jobs += [(f"structured {r:.0%}", lambda r=r: prune_stage(dataclasses.replace(base, structured_ratio=r),
                                                              "structured")) for r in (0.3, 0.5)]
    for label, job in jobs:
        start = time.perf_counter()
        try:
            new = job()
            for r in new:
                r.setdefault("macs", dense_macs)
                r["stage_s"] = time.perf_counter() - start
            rows += new
        except EdgeError as e:
            rows.append({"artifact": label, "method": label, "error": str(e)})
    ref_top1 = fp32["top1"]
    fp32_tflite_mib = next(r["size_mib"] for r in rows if r.get("method") == "tflite_fp32")
    print(f"compression: {base.model} on {base.data_source}, {len(ctx.labels)} test images, "
          f"host {platform.processor() or platform.machine()}; MiB = 2^20 bytes")
    print("| artifact | method | top-1 | drop pts | size MiB | gzip MiB | gzip / fp32 TFLite | MMACs | sparsity |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['artifact']} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        sparsity = r.get("sparsity_tflite_int8")
        print(f"| {Path(r['artifact']).name} | {r['method']} | {r['top1']:.4f} | {100 * (ref_top1 - r['top1']):.2f} "
              f"| {r['size_mib']:.2f} | {r['gzip_mib']:.2f} | {r['gzip_mib'] / fp32_tflite_mib:.1%} "
              f"| {r['macs'] / 1e6:.1f} | {'' if sparsity is None else f'{sparsity:.3f}'} |")
    out = ctx.run / "bench" / "compression.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(ctx.run), "rows": [{k: v for k, v in r.items() if k != "per_class_top1"}
                                                              for r in rows]}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
