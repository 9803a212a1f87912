"""PNG plots of benchmark results: accuracy against cost (one curve per model over its budgets)
and cost against image side (one line per model, log-log).

Uses matplotlib's object API (`Figure`, no pyplot), as `foveate.explain` does: no global backend
or figure registry. Every file is saved atomically (`foveate.fileio.atomic_save_figure`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..fileio import atomic_save_figure

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib tab10
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DPI = 120


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


def _by_model(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["model"], []).append(r)
    return groups


def _log_if_positive(ax, axis: str, values: Sequence[float]) -> None:
    """Log scale when every value is > 0 and they span more than a factor 3."""
    positive = [v for v in values if v is not None and v > 0]
    if positive and len(positive) == len(values) and max(positive) > 3 * min(positive):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _tradeoff(results: dict[str, Any], path: Path, x_of: Callable[[dict[str, Any]], float], xlabel: str,
              xerr_of: Callable[[dict[str, Any]], float] | None = None) -> Path:
    rows = results["rows"]
    fig = Figure(figsize=(6.4, 4.4), dpi=DPI)
    ax = fig.subplots()
    for i, (name, group) in enumerate(_by_model(rows).items()):
        xs, ys = [x_of(r) for r in group], [r["test_acc"] for r in group]
        style = _style(i)
        ax.plot(xs, ys, linestyle="-", label=name, **style)
        if xerr_of is not None:  # median ± IQR/2, where that stays > 0 (a log axis cannot show the rest)
            bars = [(x, y, xerr_of(r) / 2) for r, x, y in zip(group, xs, ys) if 0 < xerr_of(r) / 2 < x]
            if bars:
                bx, by, half = zip(*bars)
                ax.errorbar(bx, by, xerr=half, capsize=2, linestyle="none", color=style["color"])
        for r, x, y in zip(group, xs, ys):
            if r["budget"] != "none":
                ax.annotate(r["budget"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=style["color"])
    _log_if_positive(ax, "x", [x_of(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (top-1)")
    data = results["header"]["data"]
    ax.set_title(f"{data.get('n_test', '?')} test images; labels: budget (locations)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=DPI, format="png")
    return path


def plot_tradeoff(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """OUT_DIR/accuracy_vs_gflops.png and OUT_DIR/accuracy_vs_latency.png (batch-1 median, a
    horizontal bar as wide as the interquartile range), one curve per model over its budgets."""
    out_dir = Path(out_dir)
    return [
        _tradeoff(results, out_dir / "accuracy_vs_gflops.png", lambda r: r["gflops"],
                  "GFLOPs per image (FLOPs = 2 x MACs)"),
        _tradeoff(results, out_dir / "accuracy_vs_latency.png", lambda r: r["latency_ms"]["1"]["median"],
                  "latency ms per image, batch 1 (median; bar: ± IQR/2)", lambda r: r["latency_ms"]["1"]["iqr"]),
    ]


def plot_scaling(results: dict[str, Any], path: str | Path) -> Path:
    """Latency, peak memory and GFLOPs per image against the image side, log-log, one line per
    model (and budget); a grey dotted guide has slope 2 (cost proportional to the pixel count)."""
    path = Path(path)
    rows = [r for r in results["rows"] if not r.get("error")]
    memory_kind = "fresh-process RSS" if any(r.get("memory") for r in rows) else "allocator peak"

    def memory_of(r: dict[str, Any]) -> float | None:
        if memory_kind == "fresh-process RSS":
            return r["memory"]["added_mib"] if r.get("memory") else None
        return r.get("allocator_peak_mib")

    panels = [("latency ms / image (batch 1, median)", lambda r: r["latency_ms"]["median"]),
              (f"peak memory MiB / image ({memory_kind})", memory_of),
              ("GFLOPs / image", lambda r: r["gflops"])]
    fig = Figure(figsize=(13.5, 4.2), dpi=DPI)
    axes = fig.subplots(1, 3)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["model"] if r["budget"] == "none" else f"{r['model']} @ {r['budget']}", []).append(r)
    sides = sorted({r["side"] for r in rows})
    for ax, (label, value_of) in zip(axes, panels):
        plotted = []
        for i, (name, group) in enumerate(groups.items()):
            points = [(r["side"], value_of(r)) for r in sorted(group, key=lambda r: r["side"])]
            points = [(s, v) for s, v in points if v is not None and v > 0]
            if points:
                ax.plot(*zip(*points), linestyle="-", label=name, **_style(i))
                plotted.append(points)
        if plotted and len(sides) > 1:
            anchor = max(points[0][1] for points in plotted)  # slope-2 guide through the highest first point
            first = min(points[0][0] for points in plotted)
            ax.plot(sides, [anchor * (s / first) ** 2 for s in sides], linestyle=":", color="#888888",
                    label="∝ pixels (slope 2)")
        if plotted:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sides, [str(s) for s in sides])
            ax.minorticks_off()
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("image side px (square canvas)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("cost per image as the canvas grows (same digits and noise)", fontsize=10)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=DPI, format="png")
    return path
