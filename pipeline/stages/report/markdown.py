"""The report as markdown: the table, its notes, the headline, the two-converter line, explain's layers, the
architecture."""

from __future__ import annotations

from ...core import records
from ...core.artifacts import file_sha
from ...core.errors import EdgeError
from ...engine.memory import memory_markdown, memory_rows
from .fit_section import fit_markdown
from .rows import columns, fit_row, fmt, fp32_reference, in_memory, latency_size, load_json, recommended, smallest

DEVICE_NOTE = (
    "rows `@ device:...` / `@ android:...`: measured on the device (device/*.json); top-1 on the bundle's "
    "images (eval.npz), Δ against the fp32 file measured there on the same images"
)


EMULATED_NOTE = (
    "rows `@ arm64 (emulated, ...)`: the bundle run on arm64 under qemu-user (device_tests/arm64_check.py); "
    "their top-1 is the arm64 kernels' answer, their latency is emulation's and NOT representative of "
    "real hardware (qemu is many times slower)"
)


def cells(r: dict, reference: dict | None, size: int | None = None) -> list[str]:
    """One report row as the table's text cells, in columns() order. † marks a top-1 measured on other images than the
    fp32 reference row's."""
    other_set = reference and r["source"] == "host" and r.get("data_id") and r["data_id"] != reference.get("data_id")
    top1 = None if r.get("top1") is None else fmt(100 * r["top1"]) + ("†" if other_set else "")
    cells = [
        fmt(c)
        for c in (
            r["artifact"],
            r.get("format"),
            r.get("precision"),
            fmt(r.get("sparsity"), 3),
            fmt(r.get("channels_kept"), 2),
            fmt(r["macs"] / 1e6, 1) if r.get("macs") else None,
            r.get("status"),
            fmt(r.get("size_mib")),
            fmt(r.get("gzip_mib")),
            top1,
            fmt(r.get("delta_top1")),
            fmt(r.get("agreement"), 4),
            fmt(r.get("ms_1")),
            fmt(r.get("ms_n")),
            fmt(r.get("peak_rss_mib"), 0),
            fmt(r.get("model_mib"), 1),
            fmt(r.get("interpreter_model_mib"), 1),
            fmt(r.get("floor_mib"), 1),
        )
    ]
    if size:
        at = (r.get("at_size") or {}).get(size, {})
        cells += [fmt(at.get("ms_1")), fmt(at.get("speedup"), 1)]
    return cells


def notes(rows: list[dict], reference: dict | None) -> list[str]:
    out = [records.LEGEND]
    for r in rows:
        if r["status"] != "pass":
            out.append(f"- {r['artifact']}: {r['status']}: {r['reason']}")
    for r in rows:
        if r.get("repairs"):
            speed = f", {r['ms_1']:.2f} ms at 1 thread" if r.get("ms_1") is not None else ""
            out.append(
                f"- {r['artifact']}: the repair of {r['repairs']} (quant_fallback=auto): "
                f"{len(r['float_layers'])} layer(s) kept in float ({', '.join(r['float_layers'])}), "
                f"{r['status']}, {fmt(r.get('size_mib'))} MiB{speed}"
            )
    if reference and any(
        r["source"] == "host" and r.get("data_id") and r["data_id"] != reference.get("data_id") for r in rows
    ):
        out.append(
            f"- †: top-1 measured on other images than the fp32 reference ({reference['images']} "
            f"{reference['split']} images): Δ is against the reference on those same images, but the top-1 is "
            f"not comparable with the other rows; re-run the stage that built it"
        )
    if any(r["source"] != "host" for r in rows):
        out.append(DEVICE_NOTE)
    if any(r.get("emulated") for r in rows):
        out.append(EMULATED_NOTE)
    return out


def _described(r: dict, rows: list[dict]) -> str:
    """artifact (size, top-1, drop, speed and speed-up over the fp32 TFLite file at 1 thread)."""
    fp32 = (fp32_reference([x for x in rows if x["source"] == "host" and x.get("ms_1")], "tflite") or {}).get("ms_1")
    speed = f", {r['ms_1']:.2f} ms at 1 thread" if r["ms_1"] is not None else ""
    if speed and fp32:
        speed += f", {fp32 / r['ms_1']:.1f}x the fp32 TFLite file"
    delta = f", Δ {r['delta_top1']:+.2f} points vs fp32" if r["delta_top1"] is not None else ""
    return f"{r['artifact']} ({r['size_mib']:.2f} MiB, top-1 {100 * r['top1']:.2f}%{delta}{speed}{in_memory(r)})"


def headline(rows: list[dict], reference: dict | None) -> str:
    best, small = recommended(rows, reference), smallest(rows, reference)
    if best is None:
        return "Recommended phone file: none (no int8 TFLite file passed every gate)."
    why = (
        "the most accurate file the search found within the run's budget (fit), and it passed every gate"
        if best is fit_row(rows, reference)
        else "the fastest int8 TFLite file that passed every gate"
    )
    line = f"Recommended phone file: {_described(best, rows)}: {why}."
    if small is not best:
        line += f" Smallest: {_described(small, rows)}."
    return line


def converters_line(layout) -> str | None:
    """The two fp32 routes compared (onnx2tf via ONNX, litert-torch from torch): do they agree, and if not, which
    one left torch."""
    rel = layout.rel(layout.tflite("fp32_litert"))
    check = (records.read(layout, rel).get("build") or {}).get("cross_check")
    if not check:
        return None
    (a, da), (b, db) = check["vs_torch"].items()
    farther = a if da > db else b
    verdict = (
        "they agree" if check["agreement"] >= 0.999 else f"they disagree, and {farther} is the one that left torch"
    )
    return (
        f"Two fp32 converters: {a} (onnx2tf, from ONNX) and {b} (litert-torch, from torch) give the same top-1 on "
        f"{100 * check['agreement']:.2f}% of the test images, max |dlogit| between them {check['max_abs_diff']:.2g}; "
        f"against torch {da:.2g} and {db:.2g}: {verdict}."
    )


def explanations(layout, rows: list[dict]) -> list[dict]:
    """explain/<artifact>.json of the host rows that have one (pipeline.stages.explain), in row order: only of rows
    that are built and current, and only where the file and its reference are still the ones explained."""
    found = [
        load_json(layout.explanation(r["artifact"]))
        for r in rows
        if r["source"] == "host" and r["status"] not in ("failed", "skipped", "stale")
    ]
    return [
        e
        for e in found
        if e.get("layers")
        and all(
            e.get(k) == file_sha(layout.path(e[f]))
            for k, f in (("sha256", "artifact"), ("reference_sha256", "reference"))
        )
    ]


def explain_markdown(found: list[dict]) -> str:
    out = [
        "## Per-layer int8 error (explain)",
        "",
        "Each int8 file against the float file of the same converter and weights, every op output compared on the "
        "same test images: SNR of the int8 output (dB), and the SNR of the noise the layer itself added, by which "
        "layers are ranked (a later layer inherits an earlier one's noise without causing it). Bars: "
        "report/layers.png.",
        "",
    ]
    for e in found:
        out += [
            f"- {e['artifact']} vs {e['reference']} ({e['images']} {e.get('split', 'test')} images, "
            f"{len(e['layers'])} layers): {e['verdict']}",
            "",
        ]
        out += [
            "| worst layers | op | output shape | int8 | output SNR dB | added-noise SNR dB | cosine | max abs err |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for i in e["worst"]:
            lay = e["layers"][i]
            out.append(
                f"| {lay['layer']} | {lay['op']} | {'x'.join(map(str, lay['shape']))} | "
                f"{'yes' if lay['int8'] else 'no'} | {lay['snr_db']:.1f} | {lay['snr_added_db']:.1f} | "
                f"{lay['cosine']:.5f} | {lay['max_abs_err']:.3g} |"
            )
        out.append("")
    return "\n".join(out).rstrip()


def table_lines(rows: list[dict], reference: dict | None) -> list[str]:
    cols, size = columns(rows), latency_size(rows)
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(cells(r, reference, size)) + " |" for r in rows
    ]


def to_markdown(rows: list[dict], meta: dict) -> str:
    reference = meta.get("reference")
    out = [
        f"# resnet-edge report: {meta['run']}",
        "",
        headline(rows, reference),
        "",
        f"Host: {meta['host']['cpu']}, {meta['host']['cores']} cores ({meta['host']['machine']}); "
        f"MiB = 2^20 bytes; latency = median ms per image, batch 1, after warm-up; top-1 on "
        + (f"{reference['images']} {reference['split']} images." if reference else "the test split."),
        "",
        *table_lines(rows, reference),
        "",
        *notes(rows, reference),
        *([meta["converters"]] if meta.get("converters") else []),
    ]
    for table in meta.get("latency_tables", []):
        out += ["", latency_markdown(table)]
    if latency_size(rows):
        out += ["", f"Top-1 against latency at {latency_size(rows)} px, 1 thread: report/latency.png."]
    memory = memory_rows(rows, meta.get("latency_tables", []))
    if memory:
        out += ["", memory_markdown(memory)]
    if meta.get("fit"):
        out += ["", fit_markdown(meta["fit"])]
    if meta.get("explain"):
        out += ["", explain_markdown(meta["explain"])]
    if meta.get("stages"):
        out += [
            "",
            "## Stages",
            "",
            "Wall time of each stage on this host as the manifest last recorded it (the report and "
            "bundle stages' own times: the console's closing table and manifest.json).",
            "",
            *meta["stages"],
        ]
    out += [
        "",
        "## Architecture",
        "",
        meta.get("architecture", "(summary not available)"),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
    ]
    return "\n".join(out) + "\n"


def latency_markdown(table: dict) -> str:
    """bench/latency.py's table: the same weights at phone resolution through every runtime."""
    threads = table["threads"]
    out = [
        f"## Latency at {table['image_size']}x{table['image_size']} (bench/latency.py)",
        "",
        f"Same weights, batch 1, median of {table['runs']} runs after {table['warmup']} warm-up runs; host "
        f"{table['host']['cpu']}, {table['host']['cores']} cores.",
        "",
        "| model | runtime | precision | size MiB | "
        + " | ".join(f"ms @{n}" for n in threads)
        + f" | x TFLite fp32 @{threads[0]} | peak RSS MiB | model MiB (as shipped) | model MiB (Interpreter) | "
        "floor MiB |",
        "|---|---|---|---:|" + "---:|" * len(threads) + "---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        out.append(
            f"| {r['model']} | {r['runtime']} | {r['precision']} | {fmt(r['size_mib'])} | "
            + " | ".join(fmt(r.get(f"ms_{n}")) for n in threads)
            + f" | {fmt(r.get('speedup_vs_tflite_fp32'))} | {fmt(r.get('peak_rss_mib'), 0)} | "
            + f"{fmt(r.get('model_mib'), 1)} | {fmt(r.get('interpreter_model_mib'), 1)} | "
            + f"{fmt(r.get('floor_mib'), 1)} |"
        )
    return "\n".join(out)


def architecture(layout, cfg) -> str:
    """The summary table of the run's trained model (with its real class count), or a note why there is none."""
    from ...data import input_shape
    from ...engine.checkpoint import load_checkpoint, model_from_checkpoint
    from ...engine.summary import summarize
    from ...engine.summary import to_markdown as summary_markdown

    try:
        model = model_from_checkpoint(load_checkpoint(layout.best))
    except EdgeError as e:
        return f"(summary not available: {e})"
    return summary_markdown(summarize(model, cfg.model, cfg.image_size, input_shape(cfg)[1]))
