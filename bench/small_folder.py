"""The default run on a small real data set, as a new user would try it: a 4,000-image ImageFolder of 28x28
Fashion-MNIST images written as PNGs (3,600 for training, 400 for test, balanced), then `resnet-edge run
data_source=imagefolder data_root=DIR` with nothing else changed. Prints the report table and the run's verdict; writes
runs/small-folder/small_folder.json (the rows, the stage table, the host).

    python bench/small_folder.py [train=3600 test=400 name=small-folder runs_dir=runs key=value ...]

Any other key=value goes to the run (e.g. structured_ratio=0.3).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchkit import entry, write_table

from pipeline.config import load_config, parse_overrides
from pipeline.core.errors import EdgeError
from pipeline.core.host import host


def write_folder(root: Path, train: int, test: int) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png from Fashion-MNIST, the same count of each class."""
    from PIL import Image

    from pipeline.data import load_data

    data = load_data("fashion_mnist")
    marker = root / f".made-{train}-{test}"
    if marker.is_file():
        return root
    for split, images, labels, n in (
        ("train", data.train.images, data.train.labels, train),
        ("test", data.test.images, data.test.labels, test),
    ):
        per_class = n // len(data.classes)
        for c, name in enumerate(data.classes):
            folder = root / split / name.replace("/", "-").replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for _i, j in enumerate([k for k in range(len(labels)) if labels[k] == c][:per_class]):
                Image.fromarray(images[j].squeeze()).save(folder / f"{j:05d}.png")
    marker.touch()
    return root


def main(argv: list[str]) -> int:
    from pipeline.chain import context
    from pipeline.run import run
    from pipeline.stages.report import run_rows

    o = parse_overrides(argv)
    train, test = (int(o.pop(k, d)) for k, d in (("train", 3600), ("test", 400)))
    runs_dir, name = o.pop("runs_dir", "runs"), o.pop("name", "small-folder")
    folder = write_folder(Path(runs_dir) / f"{name}-data", train, test)
    cfg = load_config(
        None,
        {
            "data_source": "imagefolder",
            "data_root": str(folder),
            "in_channels": "3",
            **o,
            "runs_dir": runs_dir,
            "name": name,
        },
    )
    start, verdict = time.perf_counter(), "ok"
    try:
        run(cfg)
    except EdgeError as e:
        verdict = str(e)
    wall = time.perf_counter() - start
    from pipeline.core.layout import Layout

    layout = Layout(cfg.run_dir)
    rows, _, _ = run_rows(context(cfg))
    print("| artifact | status | top-1 % | Δ vs fp32 | size MiB |\n|---|---|---:|---:|---:|")
    for r in rows:
        top1 = "-" if r.get("top1") is None else f"{100 * r['top1']:.2f}"
        delta = "-" if r.get("delta_top1") is None else f"{r['delta_top1']:+.2f}"
        print(f"| {r['artifact']} | {r['status']} | {top1} | {delta} | {r.get('size_mib') or 0:.2f} |")
    print(f"\nrun: {verdict}\n{train} training / {test} test images, {wall:.0f} s")
    manifest = json.loads(layout.manifest.read_text())
    return write_table(
        layout.root / "small_folder.json",
        {
            "train_images": train,
            "test_images": test,
            "wall_s": wall,
            "verdict": verdict,
            "host": host(),
            "stages": manifest.get("last_run"),
            "rows": [
                {k: r.get(k) for k in ("artifact", "status", "reason", "top1", "delta_top1", "size_mib")} for r in rows
            ],
        },
    )


if __name__ == "__main__":
    entry(main)
