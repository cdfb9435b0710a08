"""Training throughput, three ways, one run, same model and batch:
(a) fp32 eager NCHW, (b) AMP + channels_last, (c) (b) + torch.compile. Prints a table, writes JSON.

    python bench/train_throughput.py [model=resnet18 stem=small image_size=28 batch_size=512 steps=30 out=PATH]

On CUDA, AMP is bf16 where supported (else fp16 with a grad scaler); on a CPU it is bf16 autocast, reported as is.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models import build_model


def measure(variant: str, opts: dict, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(opts["model"], num_classes=10, in_channels=1, stem=opts["stem"]).to(device).train()
    x = torch.randn(opts["batch_size"], 1, opts["image_size"], opts["image_size"], device=device)
    y = torch.randint(0, 10, (opts["batch_size"],), device=device)
    amp = variant != "a_fp32_eager"
    if amp:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, foreach=True
    )  # as train.make_optimizer
    step_model = torch.compile(model) if variant == "c_amp_cl_compile" else model

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    start = time.perf_counter()
    for _ in range(opts["warmup"]):  # includes compilation for (c)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(opts["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {
        "variant": variant,
        "images_per_s": opts["steps"] * opts["batch_size"] / wall,
        "warmup_s": warm_s,
        "amp_dtype": str(dtype).replace("torch.", "") if amp else "fp32",
        "channels_last": amp,
        "compile": variant == "c_amp_cl_compile",
    }


def main(argv: list[str]) -> int:
    opts = {
        "model": "resnet18",
        "stem": "small",
        "image_size": 28,
        "batch_size": 512,
        "steps": 30,
        "warmup": 5,
        "out": "runs/bench/train_throughput.json",
    }
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in opts:
            print(f"error: unknown option {key!r}; valid: {', '.join(opts)}", file=sys.stderr)
            return 2
        opts[key] = type(opts[key])(value)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    host = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    rows = []
    for variant in ("a_fp32_eager", "b_amp_channels_last", "c_amp_cl_compile"):
        try:
            rows.append(measure(variant, opts, device))
        except Exception as e:  # a variant that cannot run here becomes a row, not a crash
            rows.append({"variant": variant, "images_per_s": None, "error": f"{e.__class__.__name__}: {e}"[:200]})
    base = rows[0]["images_per_s"]
    print(
        f"train throughput: {opts['model']} stem={opts['stem']} {opts['image_size']}px batch {opts['batch_size']}, "
        f"{device} ({host}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| variant | images/s | x (a) | warm-up s |\n|---|---:|---:|---:|")
    for r in rows:
        ips = r["images_per_s"]
        ratio = f"{ips / base:.2f}" if ips and base else "-"
        print(
            f"| {r['variant']} | {ips:,.0f} | {ratio} | {r.get('warmup_s', 0):.1f} |"
            if ips
            else f"| {r['variant']} | failed: {r['error']} | - | - |"
        )
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"options": opts, "device": str(device), "host": host, "torch": torch.__version__, "rows": rows}, indent=2
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
