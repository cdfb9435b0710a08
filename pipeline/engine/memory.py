"""The report's memory section: where each TFLite file's memory goes on the host (device_tests/tflite_memory.py's
attribution, measured by the benchmark stage in a fresh process per file), as a table and a stacked bar chart."""

from __future__ import annotations

from pathlib import Path

from ..core.artifacts import atomic_write

# (field, label, colour) of the stacked parts, bottom up
PARTS = [("file_mib", "model file pages", "tab:blue"), ("loaded_mib", "model read into memory", "tab:olive"),
         ("cache_mib", "weight cache pages", "tab:cyan"),
         ("packed_mib", "XNNPACK packed weights + buffers", "tab:orange"), ("arena_mib", "activations (arena)",
                                                                             "tab:green"),
         ("invoke_mib", "scratch touched by running", "tab:purple"), ("other_mib", "other", "tab:gray")]


def memory_figures(cells) -> dict:
    """The model's own measured memory (the thread count's cell that used most) and its floor, from TFLite cells'
    attribution; None where the cells have none (ONNX, torch)."""
    memory = [c["memory"] for c in cells if (c.get("memory") or {}).get("model_mib") is not None]
    top = max(memory, key=lambda m: m["model_mib"], default=None)
    return {"model_mib": top and top["model_mib"], "floor_mib": top and top["floor_mib"], "memory": top}


def memory_rows(rows: list[dict], latency_tables: list[dict]) -> list[dict]:
    """The run's host rows with an attribution, then bench/latency.py's TFLite rows at their size (224x224)."""
    found = [{"artifact": r["artifact"], "memory": r["memory"]} for r in rows
             if r.get("memory") and r["source"] == "host"]
    for table in latency_tables:
        size = table["image_size"]
        found += [{"artifact": f"{r['artifact']} @ {size}x{size}", "memory": r["memory"]} for r in table["rows"]
                  if r.get("memory")]
    return found


def memory_markdown(found: list[dict]) -> str:
    parts = [(k, label) for k, label, _ in PARTS if any(r["memory"].get(k) for r in found)]
    head = ["artifact", "model MiB", *(label for _, label in parts), "floor MiB", "x floor", "runtime code MiB"]
    out = ["## Memory (model MiB, measured)", "",
           "Each TFLite file in a fresh process with LiteRT's Interpreter and XNNPACK (the default CPU path), at the "
           "thread count that used most: resident memory it added, less the runtime's own code pages, split by "
           "where it sits (device_tests/tflite_memory.py). floor = weights as stored + peak live activations of one "
           "inference, read from the file (an fp16 file's activations include its weights dequantized to fp32). The "
           "device bundle's bench_tflite.py runs files with XNNPACK's weight cache by default, which maps the packed "
           "weights from a file instead (python bench/memory.py compares every way). Bars: report/memory.png.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        m = r["memory"]
        cells = [r["artifact"], f"{m['model_mib']:.1f}", *(f"{m.get(k) or 0:.1f}" for k, _ in parts),
                 f"{m['floor_mib']:.1f}", f"{m['vs_floor']:.2f}" if m.get("vs_floor") else "-",
                 f"{m.get('code_mib') or 0:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def memory_png(found: list[dict], path: Path) -> Path:
    """One stacked bar per TFLite file (its measured parts), a black tick at its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
