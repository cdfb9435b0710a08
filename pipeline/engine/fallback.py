"""quant_fallback=auto: an int8 file that fails its top-1 gate is quantized again with its worst layers kept in
float, one more at a time up to max_float_layers, until the top-1 drop on the validation split is within the gate.
The ranking is explain's (the noise each conv / fully-connected layer adds, measured on training images); whether
int8 is the cause and the stop rule look at validation images; the test split only judges the result, as for every
file. NNCF's own loop for ONNX (quantize_with_accuracy_control: rank once, revert in rank order, stop at max_drop) is
followed, not reinvented.

Each route says how to quantize with some layers in float: NNCF PT2E by module name, onnx2tf's SavedModel through
TFLite's QuantizationDebugger deny list by op output name (both in pipeline.engine.gated).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..core import console
from ..core.errors import EdgeError
from ..core.names import fallback_path


def clear(layout, int8: Path) -> None:
    """A new int8 file that needs no repair, or whose repair was not kept, makes its old repair obsolete: file, record
    and explanation go, once the new file is settled (never before: a failed rebuild keeps the old repair)."""
    fixed = fallback_path(int8)
    for stale in (fixed, layout.record(fixed), layout.explanation(fixed)):
        stale.unlink(missing_ok=True)


def wanted(ctx, record: dict, int8: Path, parent: Path) -> bool:
    """quant_fallback=auto, the int8 file failed its top-1 gate, and int8 is the cause: its float `parent` passes that
    gate on the same images. When pruning already cost the points, float layers cannot give them back (a repair of a
    channel-pruned file was 2.2x its size and scored lower); the stage says which keys to change instead."""
    if ctx.cfg.quant_fallback != "auto" or not any(
        g["name"] == "top-1 drop" and not g["passed"] for g in record.get("gates") or []
    ):
        return False
    from .evaluate import drop_points

    # on the validation images, as every choice (the test split only judges): the parent against the dense fp32 model
    if Path(parent) == ctx.layout.onnx:  # made from the dense fp32 model itself
        return True
    parent_drop = drop_points(validation_top1(ctx, ctx.layout.onnx), validation_top1(ctx, parent))
    if int8_is_the_cause(parent_drop, ctx.cfg.max_int8_drop):
        return True
    print(
        f"  {Path(int8).name}: no float fallback, int8 is not the cause: its float parent {Path(parent).name} "
        f"is already {parent_drop:.2f} points below the fp32 model on the validation images; prune less "
        "(structured_ratio, prune_ratio) or fine-tune longer (structured_epochs, prune_epochs, kd_alpha)",
        file=console.err(),
    )
    return False


def int8_is_the_cause(parent_drop: float, max_drop: float) -> bool:
    """The rule of the float fallback: the float model an int8 file was made from passes the top-1 gate itself."""
    return parent_drop <= max_drop


def ranked(failed: Path, reference: Path, images) -> list[dict]:
    """The file's conv and fully-connected layers, the one adding most noise first (pipeline.engine.layer_error); each
    with `sole_producers`: the conv layers whose output only it reads (a layer kept in float must not read int8)."""
    from collections import Counter

    from .layer_error import WEIGHTED_OPS, explain

    layers = explain(failed, reference, images)["layers"]
    readers = Counter(j for lay in layers for j in lay["reads"])
    for lay in layers:
        lay["sole_producers"] = [layers[j] for j in lay["reads"] if readers[j] == 1 and layers[j]["op"] in WEIGHTED_OPS]
    return sorted((lay for lay in layers if lay["op"] in WEIGHTED_OPS), key=lambda lay: lay["snr_added_db"])


def repair(
    ctx,
    failed: Path,
    parent: Path,
    build: dict,
    compressed: bool,
    requantize: Callable[[list[dict], Path], None],
    name: Callable[[dict], str],
) -> Path | None:
    """Quantize again (`requantize(layers, out)`) with 1, 2, ... of the worst layers in float until the validation
    drop against `parent` (the float model the int8 file was made from) is within max_int8_drop; the last try is
    evaluated and gated like any file, and kept only if it scores better on the validation images than the file it
    repairs (None: no repair kept). `name(layer)`: how the record lists a float layer."""
    from .evaluate import assess, drop_points
    from .layer_error import reference_for

    layout, cfg = ctx.layout, ctx.cfg
    reference = reference_for(ctx, layout.rel(failed))
    candidates = ranked(failed, reference, ctx.calib[: cfg.explain_images])[: cfg.max_float_layers]
    if not candidates:
        raise EdgeError(f"{failed.name}: no conv or fully-connected layer to keep in float")
    parent_top1, failed_top1 = validation_top1(ctx, parent), validation_top1(ctx, failed)
    out, tried = fallback_path(failed), []
    trying = out.with_name(f".trying-{out.name}")  # the previous repair stays until this one is kept
    try:
        for layer in candidates:
            tried.append(layer)
            requantize(tried, trying)
            top1 = validation_top1(ctx, trying)
            drop = drop_points(parent_top1, top1)
            if drop <= cfg.max_int8_drop:
                break
    except BaseException:
        trying.unlink(missing_ok=True)
        raise
    if top1 <= failed_top1:
        trying.unlink(missing_ok=True)
        clear(layout, failed)
        print(
            f"  {failed.name}: no float fallback kept: {len(tried)} layer(s) in float scored "
            f"{100 * top1:.2f}% on the validation images, no better than the file itself ({100 * failed_top1:.2f}%)",
            file=console.err(),
        )
        return None
    os.replace(trying, out)
    layout.explanation(layout.rel(out)).unlink(missing_ok=True)  # of the file it replaced
    assess(
        ctx,
        out,
        parent=parent,
        compressed=compressed,
        build={
            **build,
            "method": f"{build['method']}, {len(tried)} layer(s) in float",
            "repairs": layout.rel(failed),
            "float_layers": [name(lay) for lay in tried],
            "validation_drop": round(drop, 3),
        },
    )
    return out


def validation_top1(ctx, path: Path) -> float:
    """Top-1 of any artifact on the validation images (ctx.val_set)."""
    from .evaluate import predict
    from .runners import open_runner

    x, labels = ctx.val_set
    return float((predict(open_runner(path), x).argmax(1) == labels).mean())
