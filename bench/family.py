"""Which model to ship, across the family: one recipe (the run's config, default the cpu preset on Fashion-MNIST)
trains and runs the whole chain for resnet18, resnet18 at half width, resnet34 and mobilenet_v2, each a run of its own
under runs/family/<member>/, then `resnet-edge compare` merges them into runs/family/compare/ (one table, top-1 vs
size and vs latency, markdown + HTML). Prints the compare table and writes family.json (wall time per member).

    python bench/family.py [members=resnet18,resnet18_w0.5,resnet34,mobilenet_v2 epochs=6 train_subset=0 ...]

Any other key=value is a config override for every member (e.g. run_magnitude=false to save time). Members already
complete are not redone (the stage cache); force=true redoes them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchkit import entry, write_table

from pipeline.chain import context
from pipeline.compare import compare
from pipeline.config import load_config, parse_bool, parse_overrides
from pipeline.core.errors import EdgeError
from pipeline.core.host import host
from pipeline.run import run

MEMBERS = {  # name: what differs from the shared recipe
    "resnet18": {"model": "resnet18"},
    "resnet18_w0.5": {"model": "resnet18", "width": 0.5},
    "resnet34": {"model": "resnet34"},
    "mobilenet_v2": {"model": "mobilenet_v2"},
}


def main(argv: list[str]) -> int:
    overrides = parse_overrides(argv)
    names = [m.strip() for m in overrides.pop("members", ",".join(MEMBERS)).split(",") if m.strip()]
    unknown = sorted(set(names) - set(MEMBERS))
    if unknown:
        raise EdgeError(f"members={','.join(unknown)}: choose from {', '.join(MEMBERS)}")
    force = parse_bool("force", overrides.pop("force", "false"))
    root = Path(overrides.pop("runs_dir", "runs")) / "family"
    walls, problems, data = {}, {}, None
    for name in names:
        cfg = load_config(
            None,
            {
                "preset": "cpu",
                **overrides,
                **{k: str(v) for k, v in MEMBERS[name].items()},
                "runs_dir": str(root),
                "name": name,
            },
        )
        start = time.perf_counter()
        ctx = context(cfg, data)
        try:  # a member with a failed gate still has its report: its rows go into the comparison, marked
            run(cfg, force=force, ctx=ctx)
            problems[name] = None
        except EdgeError as e:
            problems[name] = str(e)
        data = ctx.data  # one data set for every member
        walls[name] = round(time.perf_counter() - start, 1)
        print(f"family: {name} done in {walls[name]:.0f} s ({problems[name] or 'every gate passed'})", file=sys.stderr)
    reported = [n for n in names if (root / n / "report" / "report.json").is_file()]
    if not reported:
        raise EdgeError("no member reached its report: " + " | ".join(f"{n}: {p}" for n, p in problems.items()))
    written = compare([root / name for name in reported], root / "compare")
    print(written["md"].read_text(), end="")
    print("| member | wall s |\n|---|---:|\n" + "".join(f"| {n} | {w:.0f} |\n" for n, w in walls.items()))
    print("".join(f"- {n}: {p}\n" for n, p in problems.items() if p), end="")
    return write_table(
        root / "family.json",
        {
            "members": names,
            "overrides": overrides,
            "wall_s": walls,
            "problems": problems,
            "host": host(),
            "compare": str(root / "compare"),
        },
    )


if __name__ == "__main__":
    entry(main)
