"""`resnet-edge VERB [config.yaml] key=value ...` — one verb per job."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from .errors import EdgeError


@dataclass
class SummaryOptions:
    image_size: int = 224  # input is image_size x image_size
    num_classes: int = 1000
    in_channels: int = 3
    width: float = 1.0  # channel width multiplier
    stem: str = "imagenet"  # or "small"
    shortcut: str = "B"  # ResNets only: "B" projection, "A" zero-padding


def cmd_summary(args: argparse.Namespace) -> int:
    from models import build_model

    from .config import load_config, parse_overrides
    from .summary import summarize, to_markdown

    o = load_config(None, parse_overrides(args.overrides), cls=SummaryOptions)
    options = {"num_classes": o.num_classes, "in_channels": o.in_channels, "width": o.width, "stem": o.stem}
    if args.model.startswith("resnet"):
        options["shortcut"] = o.shortcut
    try:
        model = build_model(args.model, **options)
    except ValueError as e:
        raise EdgeError(f"summary {args.model}: {e}") from None
    s = summarize(model, args.model, o.image_size, o.in_channels)
    print(json.dumps(s.to_dict(), indent=2) if args.format == "json" else to_markdown(s))
    return 0


def _config(args: argparse.Namespace, fresh: bool = False):
    """[config.yaml] key=value. Without a YAML file, a verb after train starts from the run's saved config
    (runs/<name>/config.yaml), so `resnet-edge export name=x` needs no repeat of the training keys."""
    from pathlib import Path

    from .config import load_config, parse_overrides

    words = list(args.overrides)
    path = words.pop(0) if words and "=" not in words[0] else None
    overrides = parse_overrides(words)
    if path is None and not fresh:
        saved = Path(overrides.get("runs_dir", "runs")) / overrides.get("name", "default") / "config.yaml"
        path = saved if saved.is_file() else None
    return load_config(path, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .config import parse_bool, parse_overrides
    from .train import train

    words = parse_overrides([w for w in args.overrides if "=" in w])
    cfg = _config(args, fresh=not parse_bool("resume", words.get("resume", "false")))
    try:
        train(cfg)
    except KeyboardInterrupt:
        last = cfg.run_dir / "train" / "last.pt"
        print(f"error: interrupted; {last} holds the last completed epoch: continue with resume=true",
              file=sys.stderr)
        return 130
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_stage

    export_stage(_config(args))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_stage

    convert_stage(_config(args))
    return 0


def _verb_config(args: argparse.Namespace, aliases: dict[str, str]):
    """Verb-local names (`ratio`, `epochs`) for the config keys they mean in this verb, said in the help."""
    words = []
    for word in args.overrides:
        key, sep, value = word.partition("=")
        words.append(f"{aliases[key]}={value}" if sep and key in aliases else word)
    args.overrides = words
    return _config(args)


def cmd_quantize(args: argparse.Namespace) -> int:
    from quantization.stages import quantize_stage

    quantize_stage(_verb_config(args, {"epochs": "qat_epochs", "lr": "qat_lr", "preset": "quant_preset"}))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from quantization.stages import prune_stage

    method = next((w.partition("=")[2] for w in args.overrides if w.startswith("method=")), "magnitude")
    args.overrides = [w for w in args.overrides if not w.startswith("method=")]
    prefix = "prune" if method == "magnitude" else "structured"
    cfg = _verb_config(args, {"ratio": f"{prefix}_ratio", "epochs": f"{prefix}_epochs", "lr": f"{prefix}_lr",
                              "importance": "structured_importance"})
    prune_stage(cfg, method)
    return 0


def _artifact_args(args: argparse.Namespace) -> tuple[list, dict]:
    """ARTIFACT... key=value: the artifact paths and the overrides, at least one artifact."""
    from pathlib import Path

    from .config import parse_overrides

    artifacts = [Path(a) for a in args.artifacts if "=" not in a]
    if not artifacts:
        raise EdgeError(f"{args.verb}: name at least one artifact (.pt, .onnx or .tflite)")
    return artifacts, parse_overrides([a for a in args.artifacts if "=" in a])


def _artifact_config(artifacts: list, overrides: dict):
    """An artifact inside a run directory brings that run's config (data set, image size, normalisation)."""
    from .config import load_config

    saved = next((p / "config.yaml" for p in artifacts[0].resolve().parents if (p / "config.yaml").is_file()), None)
    cfg = load_config(saved, overrides)
    return cfg, (saved.parent if saved else cfg.run_dir)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import benchmark
    from .data import input_shape

    artifacts, overrides = _artifact_args(args)
    threads = [int(t) for t in overrides.pop("bench_threads", "").split(",") if t]
    runs, warmup = int(overrides.pop("runs", 50)), int(overrides.pop("warmup", 10))
    cfg, run_dir = _artifact_config(artifacts, overrides)
    benchmark(artifacts, input_shape(cfg), run_dir / "bench", threads or None, warmup, runs)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_bool
    from .run import run

    force = any(parse_bool("force", w.partition("=")[2]) for w in args.overrides if w.startswith("force="))
    args.overrides = [w for w in args.overrides if not w.startswith("force=")]
    run(_config(args, fresh=True), force=force)
    return 0


def _run_config(run_dir: str, overrides: dict | None = None):
    """The saved config of an existing run directory, pointed at where that directory is now."""
    from pathlib import Path

    from .config import load_config

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise EdgeError(f"{run}: not a run directory (no config.yaml); run `resnet-edge run` first")
    return load_config(run / "config.yaml", {**(overrides or {}), "runs_dir": str(run.parent), "name": run.name})


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import report, report_run

    if (Path(args.run_dir) / "config.yaml").is_file():  # the run's own config: architecture table, max_size_mib gate
        report_run(_run_config(args.run_dir))
    else:
        report(Path(args.run_dir))
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from .bundle import bundle
    from .config import parse_overrides

    overrides = parse_overrides(args.overrides)
    unknown = set(overrides) - {"bundle_models", "bundle_images"}
    if unknown:
        raise EdgeError(f"bundle: unknown keys {sorted(unknown)}; valid: bundle_models, bundle_images")
    bundle(_run_config(args.run_dir, overrides))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import eval_arrays, load_data_for
    from .evaluate import evaluate

    artifacts, overrides = _artifact_args(args)
    reference = overrides.pop("reference", None)
    cfg, run_dir = _artifact_config(artifacts, overrides)
    reference = Path(reference) if reference else run_dir / "onnx" / "model.onnx"
    data = load_data_for(cfg)
    x, labels = eval_arrays(data, cfg.image_size, cfg.eval_subset)
    evaluate(artifacts, x, labels, run_dir / "eval", reference if reference.is_file() else None, data.classes,
             cfg.threads or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-edge", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("summary", help="the architecture table: per-stage output size, params, MACs, memory")
    p.add_argument("model", help="resnet18/34/50/101/152 or mobilenet_v2")
    p.add_argument("overrides", nargs="*", help="image_size=224 num_classes=1000 in_channels=3 width=1 stem= shortcut=")
    p.add_argument("--format", choices=["md", "json"], default="md")
    p.set_defaults(func=cmd_summary)
    p = verbs.add_parser("train", help="train a model (GPU: AMP, channels_last; torchrun for DDP); resumable")
    p.add_argument("overrides", nargs="*", metavar="[config.yaml] key=value",
                   help="e.g. model=resnet18 epochs=6 preset=cpu|gpu resume=true weights=PATH")
    p.set_defaults(func=cmd_train)
    for verb, func, text in (("export", cmd_export, "torch checkpoint -> ONNX, with onnxruntime parity gate"),
                             ("convert", cmd_convert, "ONNX -> TFLite fp32/fp16/dynamic-range/int8, gated")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("overrides", nargs="*", metavar="[config.yaml] key=value", help="e.g. name=default")
        p.set_defaults(func=func)
    p = verbs.add_parser("quantize", help="NNCF int8 PTQ of the fp32 ONNX; qat=true adds quantization-aware training")
    p.add_argument("overrides", nargs="*", metavar="[config.yaml] key=value",
                   help="qat=true epochs=N (QAT epochs) lr= preset=performance|mixed ignored_scope=a,b calib_size=300")
    p.set_defaults(func=cmd_quantize)
    p = verbs.add_parser("prune", help="NNCF magnitude pruning (method=magnitude) or channel pruning "
                                       "(method=structured), fine-tuned, to fp32 and int8 TFLite")
    p.add_argument("overrides", nargs="*", metavar="[config.yaml] key=value",
                   help="ratio=0.5 epochs=N (0: BN adaptation) lr= method=magnitude|structured importance=l1|l2")
    p.set_defaults(func=cmd_prune)
    p = verbs.add_parser("run", help="the whole chain into runs/<name>/: train, export, convert, quantize, prune, "
                                     "benchmark, report, bundle (cached per stage; force=true redoes)")
    p.add_argument("overrides", nargs="*", metavar="[config.yaml] key=value", help="e.g. name=default force=true")
    p.set_defaults(func=cmd_run)
    p = verbs.add_parser("report", help="report.json/.md/.html and pareto.png of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
    p = verbs.add_parser("bundle", help="device bundle: chosen .tflite files, eval.npz, device_tests scripts, README")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="bundle_models=fp32,*int8 (globs on the file stems; *: all) bundle_images=1000 (default: the run's)")
    p.set_defaults(func=cmd_bundle)
    p = verbs.add_parser("evaluate", help="top-1/top-5, agreement with fp32, per-class accuracy of any artifact")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT|key=value",
                   help=".pt/.onnx/.tflite files; key=value e.g. eval_subset=1000 reference=PATH")
    p.set_defaults(func=cmd_evaluate)
    p = verbs.add_parser("benchmark", help="host latency (median/p90, 1 thread and all cores), peak RSS, size")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT|key=value",
                   help=".pt/.onnx/.tflite files; runs=50 warmup=10 bench_threads=1,2 image_size=224")
    p.set_defaults(func=cmd_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
