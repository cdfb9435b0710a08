"""The report's pictures: top-1 against size and against latency (a front of what is worth shipping), and each
int8 file's per-layer error."""

from __future__ import annotations

from pathlib import Path

from ...core.artifacts import atomic_write
from .rows import measured


def layers_png(found: list[dict], path: Path) -> Path:
    """One panel per explained file: output SNR per layer in graph order, the five worst in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(1, len(found)), 1, figsize=(10, 2.6 * max(1, len(found))), dpi=100, squeeze=False)
    for ax, e in zip(axes[:, 0], found, strict=False):
        snr = [lay["snr_db"] for lay in e["layers"]]
        colors = ["tab:red" if i in e["worst"] else "tab:blue" for i in range(len(snr))]
        ax.bar(range(len(snr)), snr, color=colors)
        ax.axhline(20, color="k", lw=0.8, ls="--")
        for i in e["worst"]:
            ax.annotate(
                e["layers"][i]["layer"], (i, snr[i]), fontsize=6, rotation=60, xytext=(0, 3), textcoords="offset points"
            )
        ax.set_title(f"{e['artifact']}: {e['verdict']}", fontsize=8)
        ax.set_ylabel("SNR dB")
    if not found:
        axes[0, 0].text(0.5, 0.5, "no int8 file explained", ha="center")
    axes[-1, 0].set_xlabel("layer (graph order); red: the five adding most noise")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def front_points(points: list[dict]) -> list[dict]:
    """The Pareto front through the passing points: each the cheapest that beats every cheaper one."""
    front, best = [], -1.0
    for p in sorted((p for p in points if p["ok"]), key=lambda p: p["x"]):
        if p["top1"] > best:
            front.append(p)
            best = p["top1"]
    return front


def legend_name(group: str | None, ok: bool) -> str:
    """A run's points (compare) or the run's own (report): passed as dots, failed as crosses."""
    if group is None:
        return "passed every gate" if ok else "failed a gate"
    return group if ok else f"{group} (failed a gate)"


def front_png(points: list[dict], path: Path, xlabel: str, title: str, ylabel: str = "top-1 (%)") -> Path:
    """Top-1 (%) against a cost (log x axis), each point {x, top1, label, ok, group}: one colour per group (a run) in
    the legend, a failed point as a cross, and labels only on the Pareto front (the rest would blur into each other;
    the table has them all)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    groups = list(dict.fromkeys(p.get("group") for p in points))
    colours = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}
    for g in groups:
        for ok in (True, False):
            mine = [p for p in points if p.get("group") == g and p["ok"] == ok]
            if mine:
                ax.scatter(
                    [p["x"] for p in mine],
                    [100 * p["top1"] for p in mine],
                    s=40,
                    alpha=0.7,
                    color=colours[g],
                    marker="o" if ok else "x",
                    label=legend_name(g, ok),
                )
    front = front_points(points)
    labels: dict[tuple, list[str]] = {}
    for p in front:
        labels.setdefault((round(p["x"], 2), round(100 * p["top1"], 2)), []).append(p["label"])
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.plot([p["x"] for p in front], [100 * p["top1"] for p in front], "k--", lw=1, label="Pareto front (labelled)")
    ax.set_xscale("log")
    if points:  # plain-number ticks (1, 2, 5, 10, ...) across the values shown
        lo, hi = min(p["x"] for p in points), max(p["x"] for p in points)
        ticks = [t * 10**e for e in range(-3, 5) for t in (1, 2, 5) if lo / 1.5 <= t * 10**e <= hi * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.text(0.5, 0.5, "nothing measured", ha="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def pareto_png(rows: list[dict], path: Path, reference: dict | None = None) -> Path:
    points = [
        {"x": r["size_mib"], "top1": r["top1"], "label": Path(r["artifact"]).name, "ok": r["status"] == "pass"}
        for r in measured(rows, reference)
        if r.get("size_mib")
    ]
    return front_png(points, path, "file size (MiB, log scale)", "accuracy vs size")


def latency_png(
    rows: list[dict], path: Path, size: int, reference: dict | None = None, top1_at: int | None = None
) -> Path:
    """Top-1 (measured at the run's `top1_at` px) against latency at `size` px, 1 thread (bench/latency.py), for the
    rows it measured: the two sizes are named on their axes."""
    points = [
        {
            "x": r["at_size"][size]["ms_1"],
            "top1": r["top1"],
            "label": Path(r["artifact"]).name,
            "ok": r["status"] == "pass",
        }
        for r in measured(rows, reference)
        if (r.get("at_size") or {}).get(size, {}).get("ms_1")
    ]
    return front_png(
        points,
        path,
        f"ms per image at {size}x{size}, 1 thread (log scale)",
        f"accuracy vs latency at {size} px (bench/latency.py)",
        f"top-1 (%) at the run's {top1_at} px" if top1_at and top1_at != size else "top-1 (%)",
    )


def fit_png(found: list[dict], path: Path) -> Path:
    """One panel per fit row (pipeline.stages.fit): val top-1 against predicted cost for every candidate the search
    scored (after adaptive BN), the step it kept (and after that step's fine-tune), one ratio for every group at each
    grid level beside them (adaptive BN, no fine-tune), the returned file as measured, and the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(1, len(found)), 1, figsize=(8, 4.8 * max(1, len(found))), dpi=110, squeeze=False)
    for ax, f in zip(axes[:, 0], found, strict=False):
        b, unit = f["budget"], f["budget"]["unit"]
        proposals = [p for t in f.get("trace", []) for p in t["proposals"]]
        ax.scatter(
            [p["predicted"] for p in proposals],
            [p["val_top1"] for p in proposals],
            s=14,
            color="0.6",
            label="candidates (adaptive BN)",
        )
        steps = f.get("trace", [])
        start = [(f["reference"]["dense_int8_ms"], f["dense_val_top1"])] if unit == "ms" else []
        xs = [x for x, _ in start] + [t["predicted"] for t in steps]
        ax.plot(xs, [y for _, y in start] + [t["val_top1"] for t in steps], "o-", color="tab:blue", ms=4, lw=1)
        ax.plot([], [], "o-", color="tab:blue", label="step kept (before its fine-tune)")
        ax.scatter(
            [t["predicted"] for t in steps],
            [t["val_top1_tuned"] for t in steps],
            s=18,
            marker="^",
            color="tab:green",
            label="after the step's fine-tune",
        )
        uni = f.get("uniform", [])
        ax.plot(
            [u["predicted"] for u in uni],
            [u["val_top1"] for u in uni],
            "s--",
            color="tab:orange",
            ms=5,
            lw=1,
            label="one ratio for every group (adaptive BN)",
        )
        for u in uni:
            ax.annotate(f"{100 * u['channels_kept']:.0f}%", (u["predicted"], u["val_top1"]), fontsize=6)
        final = f.get("measured_ms") if unit == "ms" else f.get("measured_mib")
        if final is not None and f.get("val_top1") is not None:
            ax.scatter([final], [f["val_top1"]], s=120, marker="*", color="tab:red", label="returned file (measured)")
        ax.axvline(b["target"], color="k", ls="--", lw=1, label=f"budget {b['target']:.3f} {unit}")
        cost = f"ms per image at {b['size']} px, {b['threads']} thread(s)" if unit == "ms" else "file MiB"
        ax.set_xlabel(f"{cost} (predicted; the star measured)")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title(f"{f['row']['artifact']}: the search against one ratio for every layer", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if not found:
        axes[0, 0].text(0.5, 0.5, "no fit row", ha="center")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
