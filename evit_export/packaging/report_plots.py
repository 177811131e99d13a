"""The report's plots: matplotlib (Agg) figures returned as inline SVG text.

Readable in light and dark mode: backgrounds are transparent, text, axes and the
Pareto front are drawn in a placeholder colour that becomes ``currentColor`` (the
page's text colour) and the grid in one that becomes ``var(--grid)``; series colours
are mid-luminance, so they read on white and on near-black.
"""
from __future__ import annotations

import io
import re

FG, GRID = "#0a0b0c", "#0d0e0f"  # placeholders, replaced in the SVG text
OTHER_COLOUR = "#cc79a7"


def target_colour(name: str) -> str:
    """The format's own colour (``Target.colour``); a format no longer installed gets a neutral one."""
    from evit_export.targets import get_target, target_names

    return get_target(name).colour if name in target_names() else OTHER_COLOUR
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # real <text>, so the page's font and colour apply
        "svg.hashsalt": "evit-export",  # stable ids from run to run
        "font.family": "sans-serif", "font.size": 9,
        "text.color": FG, "axes.labelcolor": FG, "axes.edgecolor": FG, "xtick.color": FG, "ytick.color": FG,
        "axes.facecolor": "none", "figure.facecolor": "none", "savefig.transparent": True,
        "axes.grid": True, "grid.color": GRID, "grid.linewidth": 0.6, "legend.frameon": False,
        "axes.spines.top": False, "axes.spines.right": False})
    return plt


def to_svg(fig) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline in HTML
    svg = svg.replace(FG, "currentColor").replace(GRID, "var(--grid)")
    # Scale with the page instead of fixed points.
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 class="chart"', svg, count=1)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower x (latency) and higher
    y (accuracy, or MACs as its proxy), ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _legend(ax, points: list[dict], front: bool) -> None:
    from matplotlib.lines import Line2D

    handles = []
    for t in dict.fromkeys(p["target"] for p in points):
        handles.append(Line2D([], [], ls="", marker="o", color=target_colour(t), label=t))
    for prec in dict.fromkeys(p["precision"] for p in points):
        handles.append(Line2D([], [], ls="", marker=PRECISION_MARKERS.get(prec, "D"), color=FG, mfc="none",
                              label=prec))
    kinds = {p["measured"] for p in points}
    if True in kinds:
        handles.append(Line2D([], [], ls="", marker="o", color=FG, label="measured (filled)"))
    if False in kinds:
        handles.append(Line2D([], [], ls="", marker="o", color=FG, mfc="none", label="estimate (hollow)"))
    if front:
        handles.append(Line2D([], [], color=FG, lw=2, alpha=0.5, label="Pareto front"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)


def scatter_plot(points: list[dict], plot_key: str, xlabel: str, ylabel: str, title: str,
                 front: bool = True, percent: bool = False) -> str:
    """One marker per point (``x``, ``y``, ``target``, ``precision``, ``measured``,
    ``label``, ``id``): colour = target, shape = precision, filled = measured, hollow =
    estimate. Each marker is its own SVG group ``point--<plot_key>--<cell id>`` so the
    page (and its test) can count them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.5))
    for p in points:
        colour = target_colour(p["target"])
        art = ax.scatter([p["x"]], [p["y"]], s=46, marker=PRECISION_MARKERS.get(p["precision"], "D"),
                         c=colour if p["measured"] else "none", edgecolors=colour, linewidths=1.6, zorder=3,
                         clip_on=False)  # a point on an axis limit (0 % accuracy) stays whole
        art.set_gid(f"point--{plot_key}--{p['id']}")
        ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if front and len(points) > 1:
        idx = pareto_front([(p["x"], p["y"]) for p in points])
        xs, ys = [points[i]["x"] for i in idx], [points[i]["y"] for i in idx]
        ax.plot(xs, ys, color=FG, lw=2, alpha=0.5, drawstyle="steps-post", zorder=2)
        ax.scatter(xs, ys, s=150, facecolors="none", edgecolors=FG, linewidths=1, alpha=0.6, zorder=2)
    if not points:
        ax.text(0.5, 0.5, "no cell of this sweep runs on this device", transform=ax.transAxes, ha="center")
    if percent and points:  # an accuracy axis stays within 0..100 however close the points are
        ys = [p["y"] for p in points]
        ax.set_ylim(max(0.0, min(ys) - 2.0), min(100.0, max(ys) + 2.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, loc="left")
    if points:
        _legend(ax, points, front and len(points) > 1)
    return to_svg(fig)


def share_plot(rows: list[dict]) -> str:
    """Horizontal bars per artifact: share of graph ops that move data rather than
    compute, and (where the runtime profiles ops) the share of kernel time they take."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 0.9 + 0.26 * max(1, len(rows))))
    names = [r["id"] for r in rows]
    ys = list(range(len(rows)))
    ax.barh([y + 0.18 for y in ys], [100 * r["op_share"] for r in rows], height=0.36,
            color=[target_colour(r["target"]) for r in rows], label="share of ops")
    timed = [(y, r) for y, r in zip(ys, rows) if r.get("time_share") is not None]
    if timed:
        ax.barh([y - 0.18 for y, _ in timed], [100 * r["time_share"] for _, r in timed], height=0.36,
                color="none", edgecolor=FG, hatch="////", label="share of kernel time")
    ax.set_yticks(ys, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("memory-bound share, %")
    ax.legend(loc="lower right", fontsize=8)
    return to_svg(fig)


def published_plot(published: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    xs = [row["gpu_img_s"] for row in published.values()]
    ys = [row["top1"] for row in published.values()]
    ax.plot(xs, ys, color=FG, lw=1, alpha=0.6)
    ax.scatter(xs, ys, s=36, color=OTHER_COLOUR, zorder=3)
    for name, x, y in zip(published, xs, ys):
        ax.annotate(name.upper(), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xlabel("V100 GPU throughput, images/s (published)")
    ax.set_ylabel("ImageNet-1K top-1, % (published)")
    ax.set_title("Published figures (paper / model zoo), not measured here", fontsize=10, loc="left")
    return to_svg(fig)
