"""Compression figures on a trained run (default: runs/default, the `make demo` ResNet-18, full 10,000-image test
split): NNCF PTQ int8 ONNX and QAT (QDQ ONNX and TFLite), NNCF magnitude 30/50/70% and channel pruning 30/50/70/80%
(with and without knowledge distillation from the dense model, one-shot and iterative) to int8 TFLite, beside the run's
own fp32 and int8 files: top-1, drop, the real gate (the run's max_int8_drop), size and gzip size in MiB, MACs, and
the latency of every int8 TFLite file re-made at `size` px (default 224; 0: skip) at the run's thread counts, with its
speed-up over the dense fp32 TFLite file at that size, measured in the same benchmark. Prints one table, writes JSON.

    python bench/compression.py [name=default variants=ptq_qat,structured50 size=224 structured_epochs=2 ...]

It reads the run and never writes into it: every variant is a run of its own under runs/<name>-compression/<variant>/,
seeded with the run's checkpoint and ONNX model and made by the same stage code and contract as `resnet-edge run`.
A variant that fails to build is a row with its reason.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from benchkit import entry, write_table

from pipeline.chain import context, stages
from pipeline.config import open_run, parse_overrides
from pipeline.core import records
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.core.layout import Layout
from pipeline.engine.contract import run_stage
from pipeline.engine.evaluate import drop_points
from pipeline.engine.manifest import begin_run

VARIANTS = [  # (folder, stage, config changes)
    ("ptq_qat", "quantize", {"qat": True}),  # QAT with the run's kd_alpha
    ("magnitude30", "prune_magnitude", {"prune_ratio": 0.3}),
    ("magnitude50", "prune_magnitude", {"prune_ratio": 0.5}),
    ("magnitude70", "prune_magnitude", {"prune_ratio": 0.7}),
    ("structured30", "prune_structured", {"structured_ratio": 0.3, "kd_alpha": 0.0}),
    ("structured50", "prune_structured", {"structured_ratio": 0.5, "kd_alpha": 0.0}),
    ("structured70", "prune_structured", {"structured_ratio": 0.7, "kd_alpha": 0.0}),
    ("structured80", "prune_structured", {"structured_ratio": 0.8, "kd_alpha": 0.0}),
    ("structured50_kd", "prune_structured", {"structured_ratio": 0.5, "kd_alpha": 0.5}),
    ("structured70_kd", "prune_structured", {"structured_ratio": 0.7, "kd_alpha": 0.5}),
    ("structured80_kd", "prune_structured", {"structured_ratio": 0.8, "kd_alpha": 0.5}),
    ("structured70_kd_iter", "prune_structured", {"structured_ratio": 0.7, "kd_alpha": 0.5, "structured_steps": 2}),
    ("structured80_kd_iter", "prune_structured", {"structured_ratio": 0.8, "kd_alpha": 0.5, "structured_steps": 2}),
    # channel rounding at the ratio where 20x lives: every count a multiple of 1 (none), 8 (the default) or 16
    ("structured70_kd_r1", "prune_structured", {"structured_ratio": 0.7, "kd_alpha": 0.5, "structured_round_to": 1}),
    ("structured70_kd_r16", "prune_structured", {"structured_ratio": 0.7, "kd_alpha": 0.5, "structured_round_to": 16}),
]


def seed(source: Layout, target: Layout) -> None:
    """The variant's run starts from copies of the source run's checkpoint and ONNX model (copies, not links: nothing
    done in the variant can reach the source run)."""
    for path in (source.best, source.onnx):
        dst = target.path(source.rel(path))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)


def row(layout: Layout, rel: str, label: str) -> dict:
    record = records.read(layout, rel)
    build, ev = record.get("build") or {}, record.get("evaluation") or {}
    status, reason = records.status(record)
    drop = drop_points(ev["reference_top1"], ev["top1"]) if ev.get("reference_top1") is not None else None
    return {
        "variant": label,
        "artifact": rel,
        "method": build.get("method"),
        "status": status,
        "reason": reason,
        "top1": ev.get("top1"),
        "drop_points": drop,
        "size_mib": build.get("size_mib"),
        "gzip_mib": build.get("gzip_mib"),
        "macs": build.get("macs"),
        "channels_kept": build.get("channels_kept"),
        "sparsity": build.get("sparsity_tflite_int8", build.get("nncf_sparsity_prunable")),
    }


def at_size(rows: list[dict], source: Layout, out: Path, cfg, data, size: int) -> None:
    """The dense model (fp32 and int8) and every channel-pruned variant (int8) re-made as TFLite at `size` px and
    benchmarked together (one process per file, the run's thread counts): rows get ms_<size>_<threads> and
    x_fp32_<size>, the speed-up over the dense fp32 file at the first thread count."""
    from pipeline.data import eval_arrays, input_shape
    from pipeline.engine.onnx_to_tflite import tflite_at_size
    from pipeline.stages.benchmark import benchmark

    where = out / f"{size}px"
    calib_u8, (x, _) = data.calibration.images[:64], eval_arrays(data, size, 8)
    jobs = [
        (r, source.best, "fp32" if r["artifact"].endswith("fp32.tflite") else "int8")
        for r in rows
        if r["variant"] == "run"
        and r["artifact"] in (source.rel(source.tflite("fp32")), source.rel(source.tflite("int8")))
    ]
    for r in rows:
        name = Path(r["artifact"]).stem.removesuffix("_int8")
        ckpt = out / r["variant"] / "quant" / f"{name}.pt"
        if (
            r["variant"] != "run"
            and r["artifact"].endswith("_int8.tflite")
            and r.get("channels_kept")
            and ckpt.is_file()
        ):
            jobs.append((r, ckpt, "int8"))
    paths = []
    for r, ckpt, precision in jobs:
        t = time.perf_counter()
        stem = f"{r['variant']}_{Path(ckpt).stem}"
        made = tflite_at_size(ckpt, where / f"{stem}.onnx", (precision,), calib_u8, data.norm, size, x)
        paths.append(made[precision])
        print(
            f"compression: {r['variant']} {precision} at {size} px built in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
    threads = cfg.thread_counts
    results = benchmark(paths, [1, input_shape(cfg)[1], size, size], threads, cfg.bench_warmup, cfg.bench_runs)
    for (r, _, _), result in zip(jobs, results, strict=True):
        for n in threads:
            r[f"ms_{size}_{n}"] = result["threads"][str(n)].get("latency_ms_median")
    base = next((r[f"ms_{size}_{threads[0]}"] for r, _, p in jobs if p == "fp32"), None)
    for r, _, _ in jobs:
        ms = r[f"ms_{size}_{threads[0]}"]
        r[f"x_fp32_{size}"] = base / ms if base and ms else None


def _cell(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def main(argv: list[str]) -> int:
    overrides = parse_overrides(argv)
    size = overrides.pop("size", "224")
    if not size.isdigit() or 0 < int(size) < 17:
        raise EdgeError(f"size={size}: a whole number of pixels, at least 17 (0: no latency at another size)")
    size = int(size)
    names = [v.strip() for v in overrides.pop("variants", ",".join(v[0] for v in VARIANTS)).split(",") if v.strip()]
    unknown = sorted(set(names) - {v[0] for v in VARIANTS})
    if unknown:
        raise EdgeError(f"variants={','.join(unknown)}: choose from {', '.join(v[0] for v in VARIANTS)}")
    cfg = open_run(None, overrides)
    source = Layout(cfg.run_dir)
    for path, stage in ((source.best, "train"), (source.onnx, "export")):
        if not path.is_file():
            raise EdgeError(f"{path}: missing; run `resnet-edge {stage} name={source.root.name}` (or run) first")
    out = source.companion("compression")
    own = [source.rel(p) for p in (source.onnx, source.tflite("fp32"), source.tflite("int8"))]
    rows = [row(source, rel, "run") for rel in own if source.record(rel).is_file()]
    data = None
    for folder, stage_name, changes in (v for v in VARIANTS if v[0] in names):
        variant = dataclasses.replace(cfg, runs_dir=str(out), name=folder, **changes)
        ctx = context(variant, data)
        seed(source, ctx.layout)
        begin_run(ctx)
        start = time.perf_counter()
        stage = stages()[stage_name]
        entry = run_stage(stage, ctx)
        data = ctx.data  # loaded once, shared by every variant
        for rel in stage.records(ctx):
            rows.append(
                row(ctx.layout, rel, folder)
                | {"stage_s": round(time.perf_counter() - start, 1), "stage_error": entry.get("error")}
            )
    if size:
        from pipeline.data import load_data_for

        at_size(rows, source, out, cfg, data or load_data_for(cfg), size)
    threads = cfg.thread_counts
    fp32_mib = next((r["size_mib"] for r in rows if r["artifact"] == source.rel(source.tflite("fp32"))), None)
    ev_images = (records.read(source, source.rel(source.onnx)).get("evaluation") or {}).get("images")
    print(
        f"compression: {cfg.model} on {cfg.data_source}, {ev_images} test images, gate max_int8_drop "
        f"{cfg.max_int8_drop:g} points; host {host()['cpu']}; MiB = 2^20 bytes"
    )
    at = [f"ms @{n} {size}px" for n in threads] + [f"x fp32 {size}px @{threads[0]}"] if size else []
    print(
        "| variant | artifact | method | status | top-1 % | drop pts | size MiB | gzip MiB | gzip / fp32 TFLite "
        "| MMACs | sparsity | channels kept | " + "".join(f"{c} | " for c in at)
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(at))
    for r in rows:
        share = r["gzip_mib"] / fp32_mib if r["gzip_mib"] and fp32_mib else None
        cells = (
            [_cell(r.get(f"ms_{size}_{n}"), ".2f") for n in threads] + [_cell(r.get(f"x_fp32_{size}"), ".1f")]
            if size
            else []
        )
        print(
            f"| {r['variant']} | {r['artifact']} | {r['method'] or '-'} | {r['status']} | "
            f"{_cell(100 * r['top1'] if r['top1'] is not None else None, '.2f')} | "
            f"{_cell(r['drop_points'], '.2f')} | {_cell(r['size_mib'], '.2f')} | "
            f"{_cell(r['gzip_mib'], '.2f')} | {_cell(share, '.1%')} | "
            f"{_cell(r['macs'] / 1e6 if r['macs'] else None, '.1f')} | {_cell(r['sparsity'], '.3f')} | "
            f"{_cell(r['channels_kept'], '.2f')} | " + "".join(f"{c} | " for c in cells)
        )
    for r in rows:
        if r["status"] != "pass":
            print(f"- {r['variant']} {r['artifact']}: {r['status']}: {r['reason']}")
    return write_table(
        out / "compression.json",
        {
            "run": str(source.root),
            "host": host(),
            "max_int8_drop": cfg.max_int8_drop,
            "size": size,
            "threads": threads,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    entry(main)
