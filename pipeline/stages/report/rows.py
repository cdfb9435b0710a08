"""The report's rows, read only from the run's records: one per artifact the run's stages declare (status from
pipeline.core.records.status, nothing else), device results as extra rows, bench/latency.py's figures at another
size attached; the fp32 reference's measurement set; which int8 file to ship."""

from __future__ import annotations

import json
from pathlib import Path

from ...core import records
from ...core.artifacts import file_sha
from ...core.precision import is_int8_tflite
from ...core.records import Gate
from ...engine.evaluate import delta_points
from ...engine.memory import memory_figures, shipped_label

COLUMNS = [
    "artifact",
    "format",
    "precision",
    "sparsity",
    "channels kept",
    "MMACs",
    "status",
    "size MiB",
    "gzip MiB",
    "top-1 %",
    "Δ top-1 vs fp32 (points)",
    "agreement",
    "ms @1 thread",
    "ms @N",
    "peak RSS MiB",
    "model MiB (as shipped)",
    "model MiB (Interpreter)",
    "floor MiB",
]


LATENCY_COLUMNS = ["ms @1 at {size}px", "x fp32 TFLite at {size}px"]  # where bench/latency.py measured the run


# File stems of the dense float model: onnx2tf's fp32 TFLite file (in the run, in the device bundle, in
# bench/latency.py's tables) and the ONNX export.
DENSE_FP32 = ("fp32", "model_fp32", "model")


def fp32_reference(rows: list[dict], fmt: str | None = None) -> dict | None:
    """The one rule for "the fp32 reference" among rows measured in one place: the first fp32 row (in the order
    given: a run's declared order puts the ONNX export first) whose file is the dense float model, of format `fmt`
    when given ("tflite": the float phone file every speed-up is against); failing that, the first fp32 row of that
    format; None where none was measured."""

    def fmt_of(r):
        return r.get("format") or ("tflite" if str(r.get("runtime") or "").startswith("tflite") else r.get("runtime"))

    fp32 = [r for r in rows if r.get("precision") == "fp32" and (fmt is None or fmt_of(r) == fmt)]
    name = lambda r: Path(str(r.get("artifact") or "").split(" @ ")[0]).stem  # noqa: E731
    return next((r for r in fp32 if name(r) in DENSE_FP32), fp32[0] if fp32 else None)


def latency_size(rows: list[dict]) -> int | None:
    """The size bench/latency.py measured the rows' artifacts at: 224 where measured there (its default), else the
    largest; None where it did not run. The report's and compare's one rule."""
    sizes = {size for r in rows for size in r.get("at_size") or {}}
    return 224 if 224 in sizes else max(sizes, default=None)


def columns(rows: list[dict]) -> list[str]:
    size = latency_size(rows)
    return COLUMNS + ([c.format(size=size) for c in LATENCY_COLUMNS] if size else [])


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def host_row(layout, rel: str, max_size_mib: float) -> dict:
    """One record as a report row: its status decided by pipeline.core.records.row_status, nothing else."""
    record = records.read(layout, rel)
    build, ev = record.get("build") or {}, record.get("evaluation") or {}
    size_gates = records.size_gates(record, max_size_mib)
    status, reason = records.row_status(layout, rel, max_size_mib)
    cells = (record.get("benchmark") or {}).get("threads") or {}
    ok = {int(n): c for n, c in cells.items() if "error" not in c}
    top_n = max(ok, default=None)
    top1, ref = ev.get("top1"), ev.get("reference_top1")
    channel_pruned = build.get("channels_kept") is not None  # its weight sparsity is near zero: not the figure
    return {
        "artifact": rel,
        "format": build.get("format"),
        "precision": build.get("precision"),
        "sparsity": None if channel_pruned else build.get("sparsity_tflite_int8", build.get("nncf_sparsity_prunable")),
        "channels_kept": build.get("channels_kept") if channel_pruned else None,
        "macs": build.get("macs"),
        "method": build.get("method"),
        "status": status,
        "reason": reason,
        "size_mib": build.get("size_mib"),
        "gzip_mib": build.get("gzip_mib"),
        "top1": top1,
        "delta_top1": delta_points(ref, top1),
        "agreement": ev.get("agreement"),
        "images": ev.get("images"),
        "split": ev.get("split"),
        "data_id": ev.get("data_id"),
        "ms_1": ok.get(1, {}).get("latency_ms_median"),
        "ms_n": ok.get(top_n, {}).get("latency_ms_median") if top_n else None,
        "threads_n": top_n,
        "peak_rss_mib": max((c.get("peak_rss_mib") or 0 for c in ok.values()), default=None) or None,
        **memory_figures(record.get("benchmark")),
        "gates": [*(record.get("gates") or []), *(g.to_dict() for g in size_gates)],
        "source": "host",
        "repairs": build.get("repairs"),
        "float_layers": build.get("float_layers"),
    }


def device_gates(row: dict, max_drop: float) -> list[Gate]:
    """A device row's gate: its top-1 on the bundle's images agrees with the host's on the same images (expected.json),
    within max_int8_drop points either way. A row with no host figure to meet is checked against nothing."""
    if row.get("top1") is None or row.get("host_top1") is None:
        return []
    return [
        Gate.at_most(
            "device vs host",
            "|top-1 here - on the host| on the same images (points)",
            abs(100 * (row["top1"] - row["host_top1"])),
            max_drop,
        )
    ]


def device_rows(layout, max_drop: float) -> list[dict]:
    """Rows from device/*.json (bench_tflite.py, android_benchmark.py), gated on their agreement with the host; Δ
    against the fp32 file measured in the same place on the same images."""
    rows = []
    for path in sorted(layout.device_dir.glob("*.json")):
        found = load_json(path).get("rows", [])
        fp32 = (fp32_reference([r for r in found if r.get("top1") is not None], "tflite") or {}).get("top1")
        for row in found:
            source = row.get("source") or path.stem
            top1 = row.get("top1")
            row = {
                k: v for k, v in row.items() if k != "predictions"
            }  # per-image classes: the JSON's, not the report's
            gates = device_gates(row, max_drop)
            if row.get("status") != "pass":
                status, reason = "bench failed", row.get("error")
            else:
                status, reason = records.status({"build": {"status": "ok"}}, gates)
            rows.append(
                {
                    **{c: None for c in ("sparsity", "gzip_mib", "agreement", "macs", "reason")},
                    **row,
                    "artifact": f"{row.get('artifact')} @ {source}",
                    "source": source,
                    "status": status,
                    "reason": reason,
                    "gates": [g.to_dict() for g in gates],
                    "delta_top1": delta_points(fp32, top1),
                }
            )
    return rows


def collect_rows(ctx) -> list[dict]:
    return [host_row(ctx.layout, rel, ctx.cfg.max_size_mib) for rel in ctx.rows] + device_rows(
        ctx.layout, ctx.cfg.max_int8_drop
    )


def _shippable(rows: list[dict], reference: dict | None) -> list[dict]:
    """Host int8 TFLite rows that passed every gate, measured on the reference's images."""
    return [
        r
        for r in rows
        if r["source"] == "host"
        and r["status"] == "pass"
        and is_int8_tflite(r["format"], r.get("precision"))
        and (reference is None or r.get("data_id") == reference.get("data_id"))
    ]


def fit_stem(artifact: str) -> str | None:
    """fit_3p4ms for tflite/fit_3p4ms_int8.tflite, the int8 file `fit` returned by onnx2tf's route (its record is
    fit/fit_3p4ms.json); None for any other file, the NNCF route's fit file included."""
    name = Path(artifact).name
    if name.startswith("fit_") and name.endswith("_int8.tflite") and not name.endswith("_nncf_int8.tflite"):
        return name.removesuffix("_int8.tflite")
    return None


def fit_row(rows: list[dict], reference: dict | None = None) -> dict | None:
    """The passing int8 file `fit` returned for the run's budget, if any: the answer to the question the user asked."""
    return next((r for r in _shippable(rows, reference) if fit_stem(r["artifact"])), None)


def recommended(rows: list[dict], reference: dict | None = None) -> dict | None:
    """The phone file to ship: the file `fit` returned within the run's budget, where it passed; else the fastest
    passing int8 TFLite file at 1 thread (then the smallest)."""
    return fit_row(rows, reference) or min(
        _shippable(rows, reference),
        key=lambda r: (r["ms_1"] if r["ms_1"] is not None else float("inf"), r["size_mib"]),
        default=None,
    )


def smallest(rows: list[dict], reference: dict | None = None) -> dict | None:
    """The smallest passing int8 TFLite file (then the fastest)."""
    return min(
        _shippable(rows, reference),
        key=lambda r: (r["size_mib"], r["ms_1"] if r["ms_1"] is not None else float("inf")),
        default=None,
    )


def measured(rows: list[dict], reference: dict | None) -> list[dict]:
    """Host rows with a top-1 on the reference's images (one measurement set)."""
    return [
        r
        for r in rows
        if r.get("top1") is not None
        and r.get("source") == "host"
        and (reference is None or r.get("data_id") == reference["data_id"])
    ]


def latency_artifact(name: str, runtime: str) -> str | None:
    """The run artifact a bench/latency.py file stands for (the same weights at another size): model_int8.tflite is
    tflite/int8.tflite, structured50_int8.tflite is tflite/structured50_int8.tflite; None for its own models."""
    if runtime.startswith("tflite"):
        return f"tflite/{name.removeprefix('model_')}"
    if runtime == "onnxruntime":
        return {"model.onnx": "onnx/model.onnx", "model_ptq_int8.onnx": "quant/ptq_int8.onnx"}.get(name)
    return None


def attach_latency(rows: list[dict], tables: list[dict]) -> None:
    """rows[i]["at_size"][size] = {ms_1, ms_n, speedup} from bench/latency.py's tables (first and last thread count;
    speed-up over its fp32 TFLite file at the first)."""
    by_artifact = {r["artifact"]: r for r in rows if r["source"] == "host"}
    for table in tables:
        first, last = table["threads"][0], table["threads"][-1]
        for lat in table["rows"]:
            row = by_artifact.get(latency_artifact(lat["artifact"], lat["runtime"]))
            if row is not None and lat.get(f"ms_{first}"):
                row.setdefault("at_size", {})[table["image_size"]] = {
                    "ms_1": lat[f"ms_{first}"],
                    "ms_n": lat.get(f"ms_{last}"),
                    "threads": [first, last],
                    "speedup": lat.get("speedup_vs_tflite_fp32"),
                }


def current(layout, table: dict) -> bool:
    """A bench/latency.py table describes the run's models: every checkpoint it was built from is unchanged (a
    table without that record, or after a retrain, is another model's figures)."""
    weights = table.get("weights")
    return bool(weights) and all(file_sha(layout.path(rel)) == sha for rel, sha in weights.items())


def run_rows(ctx) -> tuple[list[dict], dict | None, list[dict]]:
    """The run's rows (with bench/latency.py's figures attached where it ran), the fp32 reference's measurement set
    and the latency tables: what report and compare read."""
    layout = ctx.layout
    rows = collect_rows(ctx)
    reference = fp32_reference([r for r in rows if r["source"] == "host" and r.get("data_id")])
    reference = reference and {k: reference[k] for k in ("images", "split", "data_id")}
    tables = [
        t
        for t in map(load_json, sorted(layout.companion("latency").glob("latency_*.json")))
        if t and current(layout, t)
    ]
    attach_latency(rows, tables)
    return rows, reference, tables


def fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def in_memory(r: dict) -> str:
    """`, 13.1 MiB in memory (CompiledModel + weight cache, as shipped; 22.0 MiB with the Interpreter)`: a row's
    measured model memory as the device bundle runs the file, the Interpreter's beside it; "" where unmeasured."""
    if r.get("model_mib") is None:
        return ""
    beside = (
        f"; {r['interpreter_model_mib']:.1f} MiB with the Interpreter"
        if r.get("interpreter_model_mib") is not None and r.get("memory_mode") != "interpreter"
        else ""
    )
    return f", {r['model_mib']:.1f} MiB in memory ({shipped_label(r)}{beside})"
