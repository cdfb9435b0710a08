"""The report's fit section: each fit row's budget, search trace and figures; for a search on a device's latency
table, the device's prediction and, once its device/*.json rows are in, what the device measured."""

from __future__ import annotations

from pathlib import Path

from .rows import fit_stem, fmt, in_memory, load_json


def fit_records(layout, rows: list[dict]) -> list[dict]:
    """fit/<name>.json of each fit row the run has (pipeline.stages.fit), with its int8 row."""
    found = []
    for r in rows:
        stem = fit_stem(r["artifact"]) if r["source"] == "host" else None
        record = load_json(layout.path(f"fit/{stem}.json")) if stem else {}
        if record.get("budget"):
            found.append({**record, "row": r, "on_device": on_device(record, r, rows)})
    return found


def on_device(record: dict, row: dict, rows: list[dict]) -> list[dict]:
    """The device rows (device/*.json) of a fit file searched on a device's table: the row's file or the file at the
    budget's size (fit/<name>_<size>px_int8.tflite), at the budget's thread count: [{source, ms}]."""
    if not record.get("device"):
        return []
    names = {Path(row["artifact"]).name, Path(record["device"]["file"]).name}
    threads = record["budget"]["threads"]
    found = []
    for r in rows:
        if r["source"] == "host" or r["artifact"].split(" @ ")[0] not in names:
            continue
        median = r.get("ms_1") if threads == 1 else (r.get("ms_n") if r.get("threads_n") == threads else None)
        # the fastest inference, the table's own statistic: bench_tflite.py's per-thread min, benchmark_model's min
        fastest = (r.get("per_thread") or {}).get(f"t{threads}", {}).get("latency_ms_min") or (
            (r.get("benchmark_model") or {}).get("latency_ms_min") if median is not None else None
        )
        if median is not None:
            found.append({"source": r["source"], "file": r["artifact"].split(" @ ")[0], "ms": fastest or median})
            found[-1]["statistic"] = "fastest" if fastest else "median"
    return found


def fit_markdown(found: list[dict]) -> str:
    out = [
        "## Fit to a budget (fit)",
        "",
        "The most accurate int8 file the search found within the budget: channels per group chosen greedily (NetAdapt; "
        "or by each group's sensitivity alone, fit_search=sensitivity) "
        "on a latency table measured on this host (one-op int8 files, LiteRT + XNNPACK; with latency_table=, on the "
        "device the row names, whose file is then timed there, not here), each step scored on the "
        "validation split; the file then timed whole at the budget's size, in the same rounds as the dense int8 file. "
        "ms here: the fastest of short bursts, not a median (this host's speed varies by 2x for minutes). "
        "report/fit.png: every candidate's validation top-1 against its predicted cost, beside one ratio for every "
        "group.",
        "",
    ]
    for f in found:
        b, row, timed = f["budget"], f["row"], f.get("timed") or {}
        unit = b["unit"]
        measured = f.get("measured_ms") if unit == "ms" else f.get("measured_mib")
        if f.get("device"):  # searched on a device's table: predicted there, measured there when its rows are back
            d = f["device"]
            out += [
                f"- {row['artifact']}: budget {b['value']:g} ms at {b['size']} px, {b['threads']} thread(s) on the "
                f"latency table measured on {d['on']} ({f['table']['path']}, {f['table']['entries']} entries); "
                f"predicted {d['predicted_ms']:.3f} ms there; top-1 {fmt(row.get('top1') and 100 * row['top1'])}% "
                f"({fmt(row.get('delta_top1'))} points vs fp32), {fmt(row.get('size_mib'))} MiB; fastest reachable "
                f"{f['fastest']:.3f} ms; "
                f"{'pruned in ' + str(len(f['trace'])) + ' steps' if f.get('pruned') else 'the dense file met it'}",
                "",
            ]
            out += [
                f"  - measured on {m['source']}: {m['ms']:.3f} ms, {m['statistic']} ({m['file']}; predicted "
                f"{d['predicted_ms']:.3f}, {100 * (d['predicted_ms'] / m['ms'] - 1):+.1f}%)"
                for m in f["on_device"]
            ] or [
                f"  - not measured on the device yet: time {d['file']} there (bench_tflite.py --threads "
                f"{b['threads']}) and copy its JSON into device/"
            ]
            out.append("")
        else:
            out += [
                f"- {row['artifact']}: budget {b['value']:g} "
                f"{'x the fp32 file' if b['kind'] == 'speedup' else unit} at "
                f"{b['size']} px, {b['threads']} thread(s) -> target {b['target']:.3f} {unit}; predicted "
                f"{f['predicted']:.3f}, measured {fmt(measured, 3)} {unit}"
                + (
                    f" (at the table's calibrated speed: {fmt(timed.get('raw_ms'), 3)} ms raw beside the dense int8 "
                    f"file's {timed['dense_int8_ms']:.3f} ms in the same rounds)"
                    if timed
                    else ""
                )
                + f"; top-1 {fmt(row.get('top1') and 100 * row['top1'])}% "
                f"({fmt(row.get('delta_top1'))} points vs fp32), "
                f"{fmt(row.get('size_mib'))} MiB{in_memory(row)}; fastest reachable {f['fastest']:.3f} {unit}; "
                f"{'pruned in ' + str(len(f['trace'])) + ' steps' if f.get('pruned') else 'the dense file met it'} "
                f"({f.get('search', 'netadapt')}), "
                f"{fmt(f.get('seconds'), 0)} s"
                + (
                    f"; table {f['table']['path']} ({f['table']['entries']} entries, "
                    f"{f['table']['identity']['runtime']})"
                    if f.get("table")
                    else ""
                ),
                "",
            ]
        if f.get("trace"):
            out += ["| step | group cut | channels kept | predicted | val top-1 % | after the step's fine-tune % |"]
            out += ["|---:|---|---:|---:|---:|---:|"]
            out += [
                f"| {t['iteration']} | {t['group']} | {t['channels']} | {t['predicted']:.3f} | "
                f"{t['val_top1']:.2f} | {t['val_top1_tuned']:.2f} |"
                for t in f["trace"]
            ]
            out += ["", "Channels kept per group: " + ", ".join(f"{g} {c}" for g, c in f["plan"].items()), ""]
        if f.get("uniform"):
            out += [
                "One ratio for every group, for comparison (adaptive BN, no fine-tune): "
                + ", ".join(
                    f"{100 * u['channels_kept']:.0f}% {u['predicted']:.3f} {unit} {u['val_top1']:.2f}%"
                    for u in f["uniform"]
                ),
                "",
            ]
    return "\n".join(out).rstrip()
