"""The fp32 training curve behind the cpu preset: for each recipe, test top-1 (best validation epoch, the full 10,000
test images) against training minutes on this host. Each recipe is a train stage of its own under
runs/epochs/<recipe>/; prints one table and writes runs/epochs/epochs.json.

    python bench/epochs.py [recipes="6;6 ema=0.998;10 ema=0.998;10 ema=0.998 augment=true" preset=cpu ...]

A recipe is an epoch count and optional key=value changes, recipes are separated by ';'. Any other key=value applies
to every recipe. Recipes already trained with the same config are not redone (the stage cache).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchkit import entry, write_table

from pipeline.chain import context, stages
from pipeline.config import load_config, parse_overrides
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.core.layout import Layout
from pipeline.engine.contract import decide, run_stage
from pipeline.engine.manifest import begin_run

RECIPES = "6 ema=0;6;8;10;12;10 augment=true;14 augment=true"  # the cpu preset has ema=0.998


def parse_recipes(text: str) -> list[tuple[str, dict[str, str]]]:
    """'10 ema=0.998;12' -> [('e10_ema0.998', {'epochs': '10', 'ema': '0.998'}), ('e12', {'epochs': '12'})]."""
    out = []
    for part in (p.split() for p in text.split(";") if p.strip()):
        if not part[0].isdigit():
            raise EdgeError(f"recipe {' '.join(part)!r}: starts with an epoch count, e.g. '10 ema=0.998'")
        changes = {"epochs": part[0], **parse_overrides(part[1:])}
        label = "_".join([f"e{part[0]}", *(f"{k}{v}" for k, v in changes.items() if k != "epochs")])
        out.append((label, changes))
    return out


def main(argv: list[str]) -> int:
    overrides = parse_overrides(argv)
    recipes = parse_recipes(overrides.pop("recipes", RECIPES))
    root = Path(overrides.pop("runs_dir", "runs")) / "epochs"
    rows, data = [], None
    for label, changes in recipes:
        cfg = load_config(None, {"preset": "cpu", **overrides, **changes, "runs_dir": str(root), "name": label})
        ctx = context(cfg, data)
        begin_run(ctx)
        stage = stages()["train"]
        action, key = decide(stage, ctx)
        if action != "cached":
            result = run_stage(stage, ctx, key)
            if result["status"] != "ok":
                raise EdgeError(f"recipe {label}: {result['error']}")
        data = ctx.data
        m = json.loads(Layout(cfg.run_dir).metrics.read_text())
        rows.append(
            {
                "recipe": label,
                **changes,
                "ema": cfg.ema,
                "augment": cfg.augment,
                "epochs": cfg.epochs,
                "best_epoch": m["best_epoch"],
                "val_top1": m["best_val_acc"],
                "test_top1": m["test_acc"],
                "train_min": m["train_wall_s"] / 60,
                "amp": m["amp"],
                "curve": [(e["epoch"], e["val_acc"], e["wall_s"] / 60) for e in m["epochs"]],
            }
        )
        print(f"epochs: {label}: test {100 * m['test_acc']:.2f}% in {m['train_wall_s'] / 60:.1f} min", file=sys.stderr)
    print(
        f"fp32 {cfg.model} on {cfg.data_source} at {cfg.image_size} px ({cfg.preset} preset), test top-1 of the best "
        f"validation epoch on {m['test_images']} images; host {host()['cpu']}"
    )
    print("| recipe | epochs | ema | augment | best epoch | val top-1 % | test top-1 % | train min |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['epochs']} | {r['ema']:g} | {r['augment']} | {r['best_epoch']} | "
            f"{100 * r['val_top1']:.2f} | {100 * r['test_top1']:.2f} | {r['train_min']:.1f} |"
        )
    return write_table(root / "epochs.json", {"host": host(), "overrides": overrides, "rows": rows})


if __name__ == "__main__":
    entry(main)
