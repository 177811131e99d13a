"""The report's plots: matplotlib (Agg) figures returned as inline SVG text.

Readable in light and dark mode: backgrounds are transparent, text, axes and the
Pareto front are drawn in a placeholder colour that becomes ``currentColor`` (the
page's text colour) and the grid in one that becomes ``var(--grid)``; series colours
are mid-luminance, so they read on white and on near-black.
"""
from __future__ import annotations

import io
import re
from evit_export.targets import get_target, target_names

FG, GRID = "#0a0b0c", "#0d0e0f"  # placeholders, replaced in the SVG text
OTHER_COLOUR = "#cc79a7"


def target_colour(name: str) -> str:
    """The format's own colour (``Target.colour``); a format no longer installed gets a neutral one."""

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


PRECISION_GREY = "#8c9099"  # precision shapes are filled grey: hollow means "estimate"


def _legend(ax, points: list[dict], front: bool, plot_key: str) -> None:
    """Colour = target, grey shape = precision, filled/hollow = measured/estimate; each
    entry's group is ``legend--<plot_key>--<entry>`` (target, precision, measured,
    estimate, front)."""
    from matplotlib.lines import Line2D

    entries = []
    for t in dict.fromkeys(p["target"] for p in points):
        entries.append((t, Line2D([], [], ls="", marker="o", color=target_colour(t), label=t)))
    for prec in dict.fromkeys(p["precision"] for p in points):
        entries.append((prec, Line2D([], [], ls="", marker=PRECISION_MARKERS.get(prec, "D"), color=PRECISION_GREY,
                                     label=prec)))
    kinds = {p["measured"] for p in points}
    if True in kinds:
        entries.append(("measured", Line2D([], [], ls="", marker="o", color=FG, label="measured (filled)")))
    if False in kinds:
        entries.append(("estimate", Line2D([], [], ls="", marker="o", color=FG, mfc="none",
                                           label="estimate (hollow)")))
    if front:
        entries.append(("front", Line2D([], [], color=FG, lw=2, alpha=0.5, label="Pareto front")))
    legend = ax.legend(handles=[h for _, h in entries], loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    for (key, _), drawn in zip(entries, legend.legend_handles):
        drawn.set_gid(f"legend--{plot_key}--{key}")


def _headroom(ax, ys: list[float], percent: bool) -> None:
    """Room above the highest point for its label and Pareto ring (below the title), and
    below the lowest; an accuracy axis labels ticks within 0..100 only."""
    if not percent:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.15 * (high - low))
        return
    span = max(ys) - min(ys)
    low, high = min(ys) - max(1.5, 0.08 * span), max(ys) + max(2.5, 0.18 * span)
    ax.set_ylim(low, high)
    ax.set_yticks([t for t in ax.get_yticks() if max(0.0, low) <= t <= min(100.0, high)])


def scatter_plot(points: list[dict], plot_key: str, xlabel: str, ylabel: str, title: str,
                 front: bool = True, percent: bool = False) -> str:
    """One marker per point (``x``, ``y``, ``target``, ``precision``, ``measured``,
    ``label``, ``id``, optional ``plot``: the device of a point in a combined plot):
    colour = target, shape = precision, filled = measured, hollow = estimate. Markers,
    labels, title, axes and Pareto rings are SVG groups with ids (``point--<plot>--<cell
    id>``, ``label--…``, ``title--<plot_key>``, ``axes--…``, ``front--…``) so the page and
    its tests can find them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.5))
    ax.patch.set_gid(f"axes--{plot_key}")
    for p in points:
        colour, key = target_colour(p["target"]), p.get("plot", plot_key)
        art = ax.scatter([p["x"]], [p["y"]], s=46, marker=PRECISION_MARKERS.get(p["precision"], "D"),
                         c=colour if p["measured"] else "none", edgecolors=colour, linewidths=1.6, zorder=3,
                         clip_on=False)  # a point on an axis limit (0 % accuracy) stays whole
        art.set_gid(f"point--{key}--{p['id']}")
        label = ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        label.set_gid(f"label--{key}--{p['id']}")
    if front and len(points) > 1:
        idx = pareto_front([(p["x"], p["y"]) for p in points])
        xs, ys = [points[i]["x"] for i in idx], [points[i]["y"] for i in idx]
        ax.plot(xs, ys, color=FG, lw=2, alpha=0.5, drawstyle="steps-post", zorder=2)
        rings = ax.scatter(xs, ys, s=150, facecolors="none", edgecolors=FG, linewidths=1, alpha=0.6, zorder=2,
                           clip_on=False)
        rings.set_gid(f"front--{plot_key}")
    if not points:
        ax.text(0.5, 0.5, "no cell of this sweep runs on this device", transform=ax.transAxes, ha="center")
    else:
        ax.margins(x=0.12)  # room right of the last point for its label
        _headroom(ax, [p["y"] for p in points], percent)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, loc="left", pad=8).set_gid(f"title--{plot_key}")
    if points:
        _legend(ax, points, front and len(points) > 1, plot_key)
    return to_svg(fig)


def device_rows_plot(points: list[dict], devices: list[str], xlabel: str, title: str, percent: bool) -> str:
    """Every device's few points in one plot: a row per device (latency on x), each point
    labelled with its variant and accuracy (or MMACs), so labels of different devices
    never share a line. Ids as in ``scatter_plot``, with ``all`` as the plot key."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 1.3 + 0.38 * len(devices)))
    ax.patch.set_gid("axes--all")
    row = {d: i for i, d in enumerate(devices)}
    xs = [p["x"] for p in points]
    near = 0.04 * ((max(xs) - min(xs)) or max(xs) or 1.0)
    placed: list[tuple[int, float]] = []
    for p in points:
        colour = target_colour(p["target"])
        art = ax.scatter([p["x"]], [row[p["plot"]]], s=46, marker=PRECISION_MARKERS.get(p["precision"], "D"),
                         c=colour if p["measured"] else "none", edgecolors=colour, linewidths=1.6, zorder=3)
        art.set_gid(f"point--{p['plot']}--{p['id']}")
        value = f"{p['y']:.1f} %" if percent else f"{p['y']:.0f} MMACs"
        # A second point at (nearly) the same latency on the same row gets its label below.
        below = sum(r == row[p["plot"]] and abs(x - p["x"]) <= near for r, x in placed)
        placed.append((row[p["plot"]], p["x"]))
        label = ax.annotate(f"{p['label']} · {value}", (p["x"], row[p["plot"]]), textcoords="offset points",
                            xytext=(6, 5 - 13 * below), fontsize=7)
        label.set_gid(f"label--{p['plot']}--{p['id']}")
    ax.set_yticks(range(len(devices)), devices, fontsize=8)
    ax.set_ylim(len(devices) - 0.4, -0.7)  # first device on top, room above it for its labels
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10, loc="left", pad=8).set_gid("title--all")
    _legend(ax, points, False, "all")
    return to_svg(fig)


def share_plot(rows: list[dict]) -> str:
    """Horizontal bars per artifact: share of graph ops that move data rather than
    compute, and (where the runtime profiles ops) the share of kernel time they take.
    The legend sits above the axes, where it covers no bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 1.2 + 0.26 * max(1, len(rows))))
    names = [r["id"] for r in rows]
    ys = list(range(len(rows)))
    bars = ax.barh([y + 0.18 for y in ys], [100 * r["op_share"] for r in rows], height=0.36,
                   color=[target_colour(r["target"]) for r in rows], label="share of ops")
    for bar, r in zip(bars, rows):
        bar.set_gid(f"bar--{r['id']}--ops")
    timed = [(y, r) for y, r in zip(ys, rows) if r.get("time_share") is not None]
    if timed:
        bars = ax.barh([y - 0.18 for y, _ in timed], [100 * r["time_share"] for _, r in timed], height=0.36,
                       color="none", edgecolor=FG, hatch="////", label="share of kernel time")
        for bar, (_, r) in zip(bars, timed):
            bar.set_gid(f"bar--{r['id']}--time")
    ax.set_yticks(ys, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("memory-bound share, %")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, fontsize=8, borderaxespad=0).set_gid(
        "legend--share")
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
