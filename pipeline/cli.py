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


def _config(args: argparse.Namespace):
    from .config import load_config, parse_overrides

    words = list(args.overrides)
    path = words.pop(0) if words and "=" not in words[0] else None
    return load_config(path, parse_overrides(words))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = _config(args)
    try:
        train(cfg)
    except KeyboardInterrupt:
        last = cfg.run_dir / "train" / "last.pt"
        print(f"error: interrupted; {last} holds the last completed epoch: continue with resume=true",
              file=sys.stderr)
        return 130
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
