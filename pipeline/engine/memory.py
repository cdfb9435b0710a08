"""The report's memory section: where each TFLite file's memory goes on the host (device_tests/tflite_memory.py's
attribution, measured by the benchmark stage in a fresh process per file), as a table and a stacked bar chart."""

from __future__ import annotations

from pathlib import Path

from ..core.artifacts import atomic_write

# (field, label, colour) of the stacked parts, bottom up
PARTS = [
    ("file_mib", "model file pages", "tab:blue"),
    ("loaded_mib", "model read into memory", "tab:olive"),
    ("cache_mib", "weight cache pages", "tab:cyan"),
    ("packed_mib", "XNNPACK packed weights + buffers", "tab:orange"),
    ("arena_mib", "activations (arena)", "tab:green"),
    ("invoke_mib", "scratch touched by running", "tab:purple"),
    ("other_mib", "other", "tab:gray"),
]


def _top(cells: dict) -> dict | None:
    """The attribution of the thread count's cell that used most; None where no cell has one (ONNX, torch)."""
    memory = [c["memory"] for c in cells.values() if (c.get("memory") or {}).get("model_mib") is not None]
    return max(memory, key=lambda m: m["model_mib"], default=None)


def memory_figures(benchmark: dict | None) -> dict:
    """A benchmark section's memory, as the report and compare show it: the model's own measured memory as the device
    bundle ships the file (`memory_mode`, tflite_memory.SHIPPED_MODE: CompiledModel with the weight cache) where that
    was measured, else the Interpreter's; the Interpreter's beside it; the floor. None where nothing was measured."""
    benchmark = benchmark or {}
    interpreter = _top(benchmark.get("threads") or {})
    shipped = _top((benchmark.get("shipped") or {}).get("threads") or {})
    top = shipped or interpreter
    mode = benchmark["shipped"]["mode"] if shipped else "interpreter" if interpreter else None
    return {
        "model_mib": top and top["model_mib"],
        "floor_mib": top and top["floor_mib"],
        "memory": top,
        "memory_mode": mode,
        "as_shipped": shipped is not None,
        "interpreter_model_mib": interpreter and interpreter["model_mib"],
        "interpreter_memory": interpreter,
    }


# How a file ran when its memory was measured (device_tests/tflite_memory.py's modes), as the report names it
MODE_LABELS = {
    "interpreter": "Interpreter",
    "interpreter_plain": "Interpreter, no XNNPACK",
    "interpreter_bytes": "Interpreter, file read into memory",
    "compiled": "CompiledModel",
    "compiled_cache": "CompiledModel + weight cache",
    "compiled_lean": "CompiledModel + weight cache, transient indirection",
}


def shipped_label(r: dict) -> str:
    """A row's `memory_mode` in words, with "as shipped" where the figure is the bundle's way (memory_figures)."""
    mode = r.get("memory_mode")
    label = MODE_LABELS.get(mode or "", mode or "-")
    return f"{label}, as shipped" if r.get("as_shipped") else label


def memory_rows(rows: list[dict], latency_tables: list[dict]) -> list[dict]:
    """The run's host rows with an attribution, then bench/latency.py's TFLite rows at their size (224x224): each as
    shipped (where measured), then with the Interpreter."""

    def both(artifact: str, r: dict) -> list[dict]:
        out = [{"artifact": artifact, "how": shipped_label(r), "memory": r["memory"]}]
        if r.get("memory_mode") != "interpreter" and r.get("interpreter_memory"):
            out.append({"artifact": artifact, "how": MODE_LABELS["interpreter"], "memory": r["interpreter_memory"]})
        return out

    found = [f for r in rows if r.get("memory") and r["source"] == "host" for f in both(r["artifact"], r)]
    for table in latency_tables:
        size = table["image_size"]
        found += [f for r in table["rows"] if r.get("memory") for f in both(f"{r['artifact']} @ {size}x{size}", r)]
    return found


def memory_markdown(found: list[dict]) -> str:
    parts = [(k, label) for k, label, _ in PARTS if any(r["memory"].get(k) for r in found)]
    head = [
        "artifact",
        "how it runs",
        "model MiB",
        *(label for _, label in parts),
        "floor MiB",
        "x floor",
        "runtime code MiB",
    ]
    out = [
        "## Memory (model MiB, measured)",
        "",
        "Each TFLite file in a fresh process at the thread count that used most: resident memory it added, less "
        "the runtime's own code pages, split by where it sits (device_tests/tflite_memory.py). First as the device "
        "bundle ships it (bench_tflite.py's default: LiteRT's CompiledModel with XNNPACK's weight cache, the "
        "packed weights mapped from a file written on the first launch; measured on a later launch, at the "
        "largest thread count), then with LiteRT's Interpreter and XNNPACK, which packs a private copy of the "
        "weights. The report's `model MiB` column is the first. floor = weights as stored + peak live "
        "activations of one inference, read from the file (an fp16 file's activations include its weights "
        "dequantized to fp32). python bench/memory.py compares every way. Bars: report/memory.png.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in found:
        m = r["memory"]
        cells = [
            r["artifact"],
            r["how"],
            f"{m['model_mib']:.1f}",
            *(f"{m.get(k) or 0:.1f}" for k, _ in parts),
            f"{m['floor_mib']:.1f}",
            f"{m['vs_floor']:.2f}" if m.get("vs_floor") else "-",
            f"{m.get('code_mib') or 0:.1f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def memory_png(found: list[dict], path: Path) -> Path:
    """One stacked bar per TFLite file (its measured parts), a black tick at its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.45 * max(4, len(found)) + 1.2), dpi=100)
    names = [f"{r['artifact'].split('/')[-1]} ({r['how']})" for r in found]
    left = [0.0] * len(found)
    for key, label, colour in PARTS:
        widths = [max(0.0, r["memory"].get(key) or 0.0) for r in found]
        ax.barh(names, widths, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.scatter([r["memory"]["floor_mib"] for r in found], names, marker="|", s=300, color="k", label="floor", zorder=3)
    if not found:
        ax.text(0.5, 0.5, "no TFLite file benchmarked", ha="center", transform=ax.transAxes)
    ax.invert_yaxis()
    ax.set_xlabel("MiB (2^20 bytes) resident, the runtime's code excluded")
    ax.set_title(
        "memory of each TFLite file, measured: as shipped (CompiledModel + weight cache) and with the Interpreter",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
