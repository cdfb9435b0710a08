"""`resnet-edge [--verbose] VERB [config.yaml | RUN_DIR] key=value ...` — one verb per job; every stage of the chain
is one.

Every key is a Config key (pipeline/config/schema.py), checked for type and range before any work starts; bad input
is one line `error: ...` and exit 2. --verbose (or RESNET_EDGE_DEBUG=1) prints the traceback of an error as well, and
lets the tools' own output (onnx2tf, TensorFlow, litert-torch, NNCF) through to the console instead of
runs/<name>/logs/<stage>.log.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from .core import console
from .core.errors import EdgeError
from .core.layout import Layout


@dataclass
class SummaryOptions:
    image_size: int = 224  # input is image_size x image_size
    num_classes: int = 1000
    in_channels: int = 3
    width: float = 1.0  # channel width multiplier
    stem: str = "imagenet"  # or "small"
    shortcut: str = "B"  # ResNets only: "B" projection, "A" zero-padding


def cmd_summary(args: argparse.Namespace) -> int:
    from models import MODELS, build_model

    from .config import MIN_IMAGE_SIZE, load_config, parse_overrides
    from .engine.summary import summarize, to_markdown

    o = load_config(None, parse_overrides(args.overrides), cls=SummaryOptions)
    if args.model not in MODELS:
        raise EdgeError(f"summary {args.model}: unknown model; choose {', '.join(MODELS)}")
    if o.stem in MIN_IMAGE_SIZE and not MIN_IMAGE_SIZE[o.stem] <= o.image_size <= 4096:
        raise EdgeError(
            f"image_size={o.image_size}: expected {MIN_IMAGE_SIZE[o.stem]} <= image_size <= 4096 for stem={o.stem}"
        )
    for key, low in (("num_classes", 1), ("in_channels", 1)):
        if getattr(o, key) < low:
            raise EdgeError(f"{key}={getattr(o, key)}: expected {key} >= {low}")
    if not 0 < o.width <= 8:  # also NaN and inf
        raise EdgeError(f"width={o.width}: expected 0 < width <= 8 (a channel multiplier)")
    options = {"num_classes": o.num_classes, "in_channels": o.in_channels, "width": o.width, "stem": o.stem}
    if args.model.startswith("resnet"):
        options["shortcut"] = o.shortcut
    try:
        model = build_model(args.model, **options)
    except ValueError as e:
        raise EdgeError(f"summary {args.model}: {e}") from e
    s = summarize(model, args.model, o.image_size, o.in_channels)
    print(json.dumps(s.to_dict(), indent=2) if args.format == "json" else to_markdown(s))
    return 0


def _split(words: list[str]) -> tuple[str | None, dict[str, str]]:
    """[config.yaml | RUN_DIR] key=value ... -> (the YAML file or run folder, or None; the overrides)."""
    from .config import parse_overrides

    words = list(words)
    path = words.pop(0) if words and "=" not in words[0] else None
    if path is not None and not Path(path).exists() and Path(path).suffix not in (".yaml", ".yml"):
        raise EdgeError(f"{path!r}: expected key=value (a config file, first, ends in .yaml) or a run folder")
    return path, parse_overrides(words)


def _config(words: list[str], existing: bool = False):
    """[config.yaml | RUN_DIR] key=value. A run folder opens that run. Without a YAML file, every verb on an existing
    run (train and run included) starts from the run's saved config (<runs_dir>/<name>/config.yaml), the overrides on
    top: `resnet-edge export name=x` needs no repeat of the training keys, and `run name=x` after a custom `train
    name=x ...` does not retrain x with the defaults. preset= starts afresh from that preset's values. `existing`: a
    stage that reads a run it did not make (Stage.needs_run): the run must be there (runs/default with no name=)."""
    from .config import load_config, open_run, parse_overrides, run_folder

    first = words[0] if words and "=" not in words[0] else None
    if first is not None and (Path(first).is_dir() or existing and Path(first).suffix not in (".yaml", ".yml")):
        return open_run(first, parse_overrides(words[1:]))
    path, overrides = _split(words)
    saved = Layout(run_folder(overrides)).config.is_file()
    if path is None and "preset" not in overrides and (saved or existing):
        return open_run(None, {"resume": "false", **overrides})  # resume=true is one command's request, not saved
    return load_config(path, overrides)


def cmd_stage(args: argparse.Namespace) -> int:
    """A stage of the chain: the verb is its name. benchmark and explain given files measure those files instead."""
    from .chain import context, stages
    from .run import run_one

    stage = stages()[args.verb]
    if args.verb in FILE_VERBS and any(_is_artifact(w) for w in args.overrides):
        return FILE_VERBS[args.verb](args)
    cfg = _config(args.overrides, existing=stage.needs_run)
    try:
        if stage.name == "train" and int(os.environ.get("RANK", "0")) > 0:  # torchrun: every rank trains; rank 0
            stage.call(context(cfg))  # keeps the books
            return 0
        return run_one(stage.name, cfg)
    except KeyboardInterrupt:
        if stage.resumable is None:
            raise
        print(
            f"error: interrupted; continue where {stage.name} stopped with resume=true (or `resnet-edge run "
            f"name={cfg.name}`)",
            file=sys.stderr,
        )
        return 130


def cmd_prune(args: argparse.Namespace) -> int:
    from .run import run_one

    cfg = _config(args.overrides)
    return run_one(f"prune_{cfg.prune_method}", cfg)


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_bool
    from .run import run

    force_words = [w for w in args.overrides if w.startswith("force=")]
    force = any(parse_bool("force", w.partition("=")[2]) for w in force_words)  # a flag of run, not a Config key
    run(_config([w for w in args.overrides if w not in force_words]), force=force)
    return 0


def _is_artifact(word: str) -> bool:
    return "=" not in word and Path(word).suffix in (".pt", ".onnx", ".tflite")


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    written = compare([Path(d) for d in args.run_dirs], Path(args.out))
    print(written["md"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return 0


def _artifact_context(args: argparse.Namespace):
    """ARTIFACT... key=value -> (artifacts, Context of the run the results belong to). That run is the one named by
    runs_dir=/name= when given, else the run directory the first artifact lives in; its config (data set, image size,
    normalisation) applies. Results go into that run only: an artifact from elsewhere is recorded as external/."""
    from .chain import context
    from .config import load_config, parse_overrides, run_folder

    artifacts = [Path(a).resolve() for a in args.overrides if "=" not in a]
    if not artifacts:
        raise EdgeError(f"{args.verb}: name at least one artifact (.pt, .onnx or .tflite)")
    missing = [str(a) for a in artifacts if not a.is_file()]
    if missing:
        raise EdgeError(f"{', '.join(missing)}: artifact not found")
    overrides = parse_overrides([a for a in args.overrides if "=" in a])
    home = next((p for p in artifacts[0].resolve().parents if Layout(p).config.is_file()), None)
    if "runs_dir" in overrides or "name" in overrides or home is None:
        target = Layout(run_folder(overrides))
        saved = target.config if target.config.is_file() else (Layout(home).config if home else None)
        cfg = load_config(saved, overrides | {"runs_dir": str(target.root.parent), "name": target.root.name})
    else:
        cfg = load_config(Layout(home).config, overrides | {"runs_dir": str(home.parent), "name": home.name})
    return artifacts, context(cfg)


def _keep_the_run_gates(ctx, own: list[Path]) -> None:
    """A side command does not loosen (or tighten) the gates of the run's own rows: those are the run's config's, and
    report and bundle trust them. A different gate key for a file of the run is an error naming the way to change it."""
    from .config import open_run
    from .config.keys import GATE_KEYS

    if not own or not ctx.layout.config.is_file():
        return
    saved = open_run(ctx.layout.root)
    changed = [f"{k}={getattr(ctx.cfg, k)}" for k in sorted(GATE_KEYS) if getattr(ctx.cfg, k) != getattr(saved, k)]
    if changed:
        was = ", ".join(f"{k.split('=')[0]}={getattr(saved, k.split('=')[0])}" for k in changed)
        raise EdgeError(
            f"{', '.join(changed)}: {own[0].name} is a row of {ctx.layout.root}, gated at the run's {was}; "
            f"change the run's gates with `resnet-edge run name={ctx.layout.root.name} {' '.join(changed)}`"
            ", or evaluate a copy of the file outside the run"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core import records
    from .engine.evaluate import assess

    artifacts, ctx = _artifact_context(args)
    ctx.stage = ctx.invocation = "evaluate"
    _keep_the_run_gates(ctx, [a for a in artifacts if ctx.layout.holds(a)])
    for artifact in artifacts:
        inside = ctx.layout.holds(artifact)
        old = records.read(ctx.layout, ctx.layout.rel(artifact)) if inside else {}
        if old and (old.get("build") or {}).get("status") != "ok":
            raise EdgeError(
                f"{artifact}: its last build {old['build'].get('status')} ({old['build'].get('error')}); "
                f"the file on disk is not that build: rebuild it (resnet-edge run) before evaluating"
            )
        parent = (old.get("evaluation") or {}).get("parent")
        record = assess(
            ctx,
            artifact,
            parent=ctx.layout.path(parent) if parent else None,
            compressed=bool((old.get("build") or {}).get("compressed")),
            build=old.get("build"),
        )
        ev = record["evaluation"]
        status, reason = records.status(record)
        vs = (
            f", {100 * ev['agreement']:.2f}% agreement with {ev['reference']}"
            if ev.get("agreement") is not None
            else ""
        )
        print(
            f"{record['artifact']}: top-1 {100 * ev['top1']:.2f}%, top-5 {100 * ev['top5']:.2f}%{vs} ({ev['images']} "
            f"{ev['split']} images) {status}{': ' + reason if reason else ''}"
        )
    return 0


def cmd_benchmark_files(args: argparse.Namespace) -> int:
    """benchmark ARTIFACT... key=value: host latency and peak RSS of any files, into the records of their run."""
    from .core import records
    from .data import input_shape
    from .engine.evaluate import external
    from .stages.benchmark import benchmark

    artifacts, ctx = _artifact_context(args)
    cfg, layout = ctx.cfg, ctx.layout
    results = benchmark(artifacts, input_shape(cfg), cfg.thread_counts, cfg.bench_warmup, cfg.bench_runs)
    failed = []
    for artifact, result in zip(artifacts, results, strict=True):
        rel = layout.rel(artifact) if layout.holds(artifact) else external(artifact)
        records.write(layout, rel, benchmark=result)
        cells = ", ".join(
            f"{n} thread(s) {c['latency_ms_median']:.2f} ms (peak RSS {c['peak_rss_mib']:.0f} MiB)"
            if "error" not in c
            else f"{n} thread(s) failed: {c['error']}"
            for n, c in result["threads"].items()
        )
        print(f"{rel}: {cells}")
        failed += [f"{rel}: {c['error']}" for c in result["threads"].values() if "error" in c][:1]
    if failed:
        raise EdgeError("benchmark failed: " + " | ".join(failed))
    return 0


def cmd_explain_files(args: argparse.Namespace) -> int:
    """explain ARTIFACT... [reference=FLOAT.tflite] [explain_images=64]: per-layer int8 error, into explain/."""
    from .engine.layer_error import reference_for
    from .stages.explain import write_explanation

    given = [w.partition("=")[2] for w in args.overrides if w.startswith("reference=")]
    args.overrides = [w for w in args.overrides if not w.startswith("reference=")]
    artifacts, ctx = _artifact_context(args)
    if given and not Path(given[0]).is_file():
        raise EdgeError(f"reference={given[0]}: file not found")
    for artifact in artifacts:
        if given:
            reference = Path(given[0]).resolve()
        elif ctx.layout.holds(artifact):
            reference = reference_for(ctx, ctx.layout.rel(artifact))
        else:
            raise EdgeError(f"{artifact}: outside a run; name its float file with reference=")
        result = write_explanation(ctx, artifact, reference)
        print(f"{result['artifact']} vs {result['reference']} ({result['images']} images): {result['verdict']}")
        print(
            "  worst: "
            + "; ".join(
                f"{lay['layer']} {lay['op']} {lay['snr_db']:.1f} dB (adds noise at {lay['snr_added_db']:.1f} dB)"
                for lay in (result["layers"][i] for i in result["worst"])
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-edge", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--verbose", action="store_true", help="the tools' own output and the traceback of an error on the console too"
    )
    common = argparse.ArgumentParser(add_help=False)  # --verbose after the verb works too
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = functools.partial(verbs.add_parser, parents=[common])
    p = add("summary", help="the architecture table: per-stage output size, params, MACs, memory")
    p.add_argument("model", help="resnet18/34/50/101/152 or mobilenet_v2")
    p.add_argument("overrides", nargs="*", help="image_size=224 num_classes=1000 in_channels=3 width=1 stem= shortcut=")
    p.add_argument("--format", choices=["md", "json"], default="md")
    p.set_defaults(func=cmd_summary)
    from .chain import CHAIN

    for stage in CHAIN:
        p = add(stage.name, help=stage.help)
        files = f"; or {FILE_VERBS_USAGE[stage.name]}" if stage.name in FILE_VERBS_USAGE else ""
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="[config.yaml | RUN_DIR] key=value",
            help=f"e.g. name=default{files}; keys its result depends on: {', '.join(sorted(stage.keys))}",
        )
        p.set_defaults(func=cmd_stage)
    p = add(
        "prune",
        help="the prune stage prune_method chooses: magnitude (prune_magnitude) or structured (prune_structured)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="[config.yaml] key=value",
        help="prune_method=magnitude prune_ratio=0.5 prune_epochs=1 | prune_method=structured structured_ratio=0.5",
    )
    p.set_defaults(func=cmd_prune)
    p = add(
        "run",
        help="the whole chain into runs/<name>/: "
        + ", ".join(s.name for s in CHAIN)
        + " (cached per stage; force=true redoes)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="[config.yaml] key=value",
        help="e.g. name=default force=true "
        + " ".join(f"{s.switch}=false" for s in CHAIN if s.switch)
        + " budget_ms=3.4 (or budget_speedup=10, budget_mib=1: adds fit, the most accurate file within it)",
    )
    p.set_defaults(func=cmd_run)
    p = add("compare", help="which model to ship: several runs in one table and two Pareto plots (size, latency)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="runs/compare", help="where compare.{md,html,json}, size.png, latency.png go")
    p.set_defaults(func=cmd_compare)
    p = add("evaluate", help="top-1/top-5, agreement with fp32, per-class accuracy, gates of any artifact")
    p.add_argument(
        "overrides", nargs="+", metavar="ARTIFACT|key=value", help=".pt/.onnx/.tflite files; eval_subset=1000"
    )
    p.set_defaults(func=cmd_evaluate)
    return parser


# Stage verbs that also take files: `benchmark FILE...` and `explain FILE...` measure any files.
FILE_VERBS = {"benchmark": cmd_benchmark_files, "explain": cmd_explain_files}
FILE_VERBS_USAGE = {
    "benchmark": "ARTIFACT... bench_runs=50 bench_warmup=10 bench_threads=1,2 image_size=224",
    "explain": "ARTIFACT... reference=FLOAT.tflite explain_images=64",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.VERBOSE = args.verbose  # the tools' own output on the console too, not only in runs/<name>/logs/
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; what was finished is kept
        print(
            f"error: interrupted: {args.verb} stopped; what it finished is kept, run it again for the rest",
            file=sys.stderr,
        )
        return 130
    except EdgeError as e:
        if args.verbose or os.environ.get("RESNET_EDGE_DEBUG") == "1":
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  an input no check caught: still one line, the traceback on request
        if args.verbose or os.environ.get("RESNET_EDGE_DEBUG") == "1":
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(
            f"error: {args.verb}: {type(e).__name__}: {first} (unexpected: --verbose shows where; please report it)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
