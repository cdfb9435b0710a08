"""The report's memory section: where each TFLite file's memory goes on the host (device_tests/tflite_memory.py's
attribution, measured by the benchmark stage in a fresh process per file), as a table and a stacked bar chart."""

from __future__ import annotations

from pathlib import Path

from .artifacts import atomic_write

# (field, label, colour) of the stacked parts, bottom up
PARTS = [("file_mib", "model file pages", "tab:blue"), ("cache_mib", "weight cache pages", "tab:cyan"),
         ("packed_mib", "XNNPACK packed weights + buffers", "tab:orange"), ("arena_mib", "activations (arena)",
                                                                             "tab:green"),
         ("invoke_mib", "scratch touched by running", "tab:purple"), ("other_mib", "other", "tab:gray")]


def measured(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("memory") and r["source"] == "host"]


def memory_markdown(rows: list[dict]) -> str:
    found = measured(rows)
    parts = [(k, label) for k, label, _ in PARTS if any(r["memory"].get(k) for r in found)]
    head = ["artifact", "model MiB", *(label for _, label in parts), "floor MiB", "x floor", "runtime code MiB"]
    out = ["## Memory (model MiB, measured)", "",
           "Each TFLite file in a fresh process with LiteRT's Interpreter and XNNPACK (the default CPU path), at the "
           "thread count that used most: resident memory it added, less the runtime's own code pages, split by "
           "where it sits (device_tests/tflite_memory.py). floor = weights as stored + peak live activations of one "
           "inference, read from the file. Bars: report/memory.png.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        m = r["memory"]
        cells = [r["artifact"], f"{m['model_mib']:.1f}", *(f"{m.get(k) or 0:.1f}" for k, _ in parts),
                 f"{m['floor_mib']:.1f}", f"{m['vs_floor']:.2f}" if m.get("vs_floor") else "-",
                 f"{m.get('code_mib') or 0:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def memory_png(rows: list[dict], path: Path) -> Path:
    """One stacked bar per TFLite file (its measured parts), a black tick at its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = measured(rows)
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(4, len(found)) + 1.2), dpi=100)
    names = [r["artifact"].split("/")[-1] for r in found]
    left = [0.0] * len(found)
    for key, label, colour in PARTS:
        widths = [max(0.0, r["memory"].get(key) or 0.0) for r in found]
        ax.barh(names, widths, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.scatter([r["memory"]["floor_mib"] for r in found], names, marker="|", s=300, color="k", label="floor", zorder=3)
    if not found:
        ax.text(0.5, 0.5, "no TFLite file benchmarked", ha="center", transform=ax.transAxes)
    ax.invert_yaxis()
    ax.set_xlabel("MiB (2^20 bytes) resident, the runtime's code excluded")
    ax.set_title("memory of each TFLite file, measured (LiteRT Interpreter, XNNPACK)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
