"""``report.html``: one self-contained page a person reads to choose a variant × format
× precision for a device. No network (styles, script and SVG plots are inline), opens
from disk, follows the reader's light or dark mode, and names artifacts relative to the
sweep folder (no paths of the machine that ran the sweep).
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from evit_export.core.atomic import write_text_atomic
from evit_export.core.paths import strip_paths
from evit_export.packaging import report_plots as plots

REPORT_HTML = "report.html"
THIS_MACHINE = "this-machine"

# Paper (Liu et al., CVPR 2023) and official model zoo: ImageNet-1K, 224x224; GPU
# throughput on a V100. Shown labelled as published, never mixed with measurements.
PUBLISHED = {
    "m0": {"top1": 63.2, "top5": 85.2, "params": "2.3M", "macs": "79M", "gpu_img_s": 27644},
    "m1": {"top1": 68.4, "top5": 88.7, "params": "3.0M", "macs": "167M", "gpu_img_s": 20093},
    "m2": {"top1": 70.8, "top5": 90.2, "params": "4.2M", "macs": "201M", "gpu_img_s": 18218},
    "m3": {"top1": 73.4, "top5": 91.4, "params": "6.9M", "macs": "263M", "gpu_img_s": 16644},
    "m4": {"top1": 74.3, "top5": 91.8, "params": "8.8M", "macs": "299M", "gpu_img_s": 15914},
    "m5": {"top1": 77.1, "top5": 93.4, "params": "12.4M", "macs": "522M", "gpu_img_s": 10621},
}


def write_report(out_dir: Path, results: dict) -> Path:
    return write_text_atomic(Path(out_dir) / REPORT_HTML, build_report(results))


# --- what the plots show -----------------------------------------------------------------

def device_plots(results: dict) -> list[dict]:
    """One plot per device: this machine (measured), every fleet device measured over
    SSH (sweep --fleet) and every simulated profile, each with one point per cell it
    applies to."""
    cells = [c for c in results["cells"] if c["status"] == "done"]
    with_data = bool(results["config"].get("data"))
    devices = []
    measured = [c for c in cells if (c.get("latency") or {}).get("median_ms") is not None]
    if measured:
        machine = results.get("machine", {}).get("description", "this machine")
        devices.append({"key": THIS_MACHINE, "title": f"this machine, measured ({machine})",
                        "measured": True,
                        "points": [_point(c, c["latency"]["median_ms"], True, with_data) for c in measured]})
    for device in results.get("fleet") or {}:
        hits = [c for c in cells if ((c.get("fleet") or {}).get(device) or {}).get("median_ms") is not None]
        if not hits:
            continue  # nothing measured there (e.g. the device refused the key): no empty plot
        devices.append({"key": f"fleet:{device}", "title": f"{device}, measured over SSH", "measured": True,
                        "points": [_point(c, c["fleet"][device]["median_ms"], True, with_data) for c in hits]})
    for device in results["config"].get("simulate") or []:
        hits = [c for c in cells if (c.get("estimates") or {}).get(device)]
        about = (results.get("devices") or {}).get(device) or (hits[0]["estimates"][device] if hits else {})
        provenance = "; ".join(str(about[k]) for k in ("description", "provenance", "error") if about.get(k))
        devices.append({"key": device, "title": f"{device}, simulated (estimate)", "provenance": provenance,
                        "points": [_point(c, c["estimates"][device]["estimate_ms"], False, with_data)
                                   for c in hits]})
    for d in devices:
        d["points"] = [p for p in d["points"] if p["y"] is not None]
    return devices


def _point(cell: dict, latency_ms: float, measured: bool, with_data: bool) -> dict:
    y = (cell.get("parity") or {}).get("top1") if with_data else (cell["macs"] or 0) / 1e6
    return {"id": cell["id"], "x": latency_ms, "y": y, "target": cell["target"], "precision": cell["precision"],
            "measured": measured, "label": cell["variant"]}


def _y_label(results: dict) -> str:
    if results["config"].get("data"):
        return f"top-1 on {results['config']['data']}, %"
    return "MMACs per image (capacity; no --data given for accuracy)"


def size_points(results: dict) -> tuple[list[dict], str]:
    """(file size vs latency points, what the latency is): measured where this machine
    runs the artifact, else the first simulated device's estimate."""
    points, used = [], set()
    first = (results["config"].get("simulate") or [None])[0]
    for c in results["cells"]:
        if c["status"] != "done":
            continue
        lat = (c.get("latency") or {}).get("median_ms")
        est = ((c.get("estimates") or {}).get(first) or {}).get("estimate_ms") if first else None
        if lat is None and est is None:
            continue
        used.add("measured" if lat is not None else f"estimate ({first})")
        points.append({"id": c["id"], "x": lat if lat is not None else est, "y": c["file_size"] / 1e6,
                       "target": c["target"], "precision": c["precision"], "measured": lat is not None,
                       "label": c["variant"]})
    return points, " / ".join(sorted(used))


def memory_points(results: dict) -> list[dict]:
    """Peak resident memory the model adds against measured latency, one point per cell
    measured on this machine (issue 22: what the device pays besides time)."""
    points = []
    for c in results["cells"]:
        lat = c.get("latency") or {}
        if c["status"] == "done" and lat.get("median_ms") is not None and lat.get("peak_rss_bytes"):
            points.append({"id": c["id"], "x": lat["median_ms"], "y": lat["peak_rss_bytes"] / 1e6,
                           "target": c["target"], "precision": c["precision"], "measured": True,
                           "label": c["variant"]})
    return points


def quality_points(results: dict) -> list[dict]:
    """Logits cosine (mean, against PyTorch) against measured latency, one point per cell:
    what each precision trades (issue 18); int8 points name the layers kept in float."""
    points = []
    for c in results["cells"]:
        lat = (c.get("latency") or {}).get("median_ms")
        cosine = (c.get("equivalence") or {}).get("cosine_mean")
        if c["status"] != "done" or lat is None or cosine is None:
            continue
        kept = ",".join((c.get("int8") or {}).get("kept_float") or [])
        points.append({"id": c["id"], "x": lat, "y": cosine, "target": c["target"], "precision": c["precision"],
                       "measured": True, "label": c["variant"] + (f" (float: {kept})" if kept else "")})
    return points


def share_rows(results: dict) -> list[dict]:
    return [{"id": c["id"], "target": c["target"], "op_share": c["memory_bound_ops"] / c["total_ops"],
             "time_share": c.get("memory_bound_time_share")}
            for c in results["cells"] if c.get("total_ops")]


# --- the page ----------------------------------------------------------------------------

STYLE = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d2433; --muted: #5b6475; --grid: #d9dde4;
        --card: #f5f6f8; --line: #d0d5dd; --pass: #1a7f37; --fail: #c62828; --warn: #9a6700; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f1115; --fg: #e4e7ec; --muted: #98a2b3; --grid: #30363f; --card: #171a21;
          --line: #2c313a; --pass: #4ac26b; --fail: #ff6b6b; --warn: #d4a72c; } }
body { background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; margin: 0 auto; max-width: 1180px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted, figcaption { color: var(--muted); } figcaption { font-size: 12px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; padding: 10px; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
svg.chart { width: 100%; height: auto; display: block; color: var(--fg); }
table { border-collapse: collapse; width: 100%; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 6px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
#cells th { cursor: pointer; user-select: none; position: sticky; top: 0; background: var(--bg); }
#cells th[aria-sort=ascending]::after { content: " \\25B2"; } #cells th[aria-sort=descending]::after { content: " \\25BC"; }
.scroll { overflow-x: auto; max-height: 70vh; }
.pass { color: var(--pass); font-weight: 600; } .fail, .error { color: var(--fail); font-weight: 600; }
.skipped, .pending { color: var(--warn); }
.badge { display: inline-block; padding: 0 6px; border: 1px solid var(--line); border-radius: 10px; font-size: 11px; }
"""

# Sorting by hand: a few lines of DOM code, since a library would need the network or a vendored copy.
SCRIPT = """
document.querySelectorAll('#cells th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var key = function (row) {
      var cell = row.cells[col], v = cell.getAttribute('data-v');
      return v === null ? cell.textContent.trim() : (v === '' ? null : parseFloat(v));
    };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      var r = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def build_report(results: dict) -> str:
    body = [_header(results), _device_section(results), _size_and_share_section(results),
            _table_section(results), _problems_section(results), _published_section()]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"color-scheme\" content=\"light dark\">"
            "<title>evit-export sweep report</title><style>" + STYLE + "</style></head><body>\n"
            + "\n".join(body) + "\n<script>" + SCRIPT + "</script></body></html>\n")


def _header(results: dict) -> str:
    cfg, cells = results["config"], results["cells"]
    counts = {s: sum(c["status"] == s for c in cells) for s in ("done", "failed", "skipped", "pending")}
    verdicts = {v: sum(c.get("verdict") == v for c in cells) for v in ("pass", "fail")}
    machine = results.get("machine", {})
    lines = [
        (f"{len(cells)} cells: {counts['done']} done ({verdicts['pass']} pass, {verdicts['fail']} fail), "
        f"{counts['failed']} failed, {counts['skipped']} skipped"
        + (f", {counts['pending']} not finished" if counts["pending"] else "")),
        (f"variants {', '.join(cfg['variants'])} · targets {', '.join(cfg['targets'])} · precisions "
        f"{', '.join(cfg['precisions'])} · image size {_image_size(cfg, cells)}"),
        (_weights_line(cfg)
         + " · accuracy data: "
        f"{cfg.get('data') or 'none (plots use MACs)'} · int8 calibration: {cfg.get('calibration_data') or 'default'}"),
        (f"measured on: {machine.get('description', '?')}; CPU flags: {' '.join(machine.get('cpu_flags') or []) or '?'}"
        f"; latency threads: {cfg.get('threads', 1)}"),
        f"sweep started {results.get('started_at', '?')}, last updated {results.get('updated_at', '?')}",
    ]
    title = results.get("title") or "EfficientViT export sweep"
    return (f"<h1>{escape(title)}</h1>"
            + "".join(f"<p class=\"muted\">{escape(strip_paths(t))}</p>" for t in lines))


def _image_size(cfg: dict, cells: list[dict]) -> str:
    """The size the cells were built at (each variant's default when none was given)."""
    if cfg.get("img_size"):
        return str(cfg["img_size"])
    built = sorted({c["img_size"] for c in cells if c.get("img_size")})
    return ", ".join(map(str, built)) + " (the variants' default)" if built else "each variant's default"


def _weights_line(cfg: dict) -> str:
    given = cfg.get("weights") or {}
    random = f"seeded random weights (seed {cfg.get('seed', 0)}: structure, speed and equivalence only)"
    if not given:
        return f"weights: {random}"
    named = ", ".join(f"{v}: {n}" for v, n in given.items())
    return f"weights: {named}" + (f"; other variants: {random}" if set(cfg["variants"]) - set(given) else "")


def _figure(svg: str, caption: str, attrs: str = "") -> str:
    return f"<figure{attrs}>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


# With at most this many points on every device, one plot holds them all: seven
# near-empty panels say less than one with seven labelled points.
FEW_POINTS = 2


def combined_plot(devices: list[dict]) -> dict:
    """One plot for every device's points, a row per device (no Pareto front: points of
    different devices are not alternatives on one device)."""
    points = [{**p, "plot": d["key"]} for d in devices for p in d["points"]]
    estimated = [d for d in devices if not d.get("measured")]
    provenance = "; ".join(f"{d['key']}: {d.get('provenance') or '?'}" for d in estimated)
    caption = ("Few points per device, so one plot with a row per device; labels give each point's "
               "variant and its accuracy (or MMACs). "
               + ("Filled: measured (on this machine, or on a fleet device over SSH). "
                  if len(estimated) < len(devices) else "")
               + (f"Hollow: ESTIMATES from device profiles, not measurements. Profiles: {provenance}"
                  if estimated else ""))
    return {"key": "all", "title": "latency on every device", "points": points,
            "caption": caption, "devices": [d["key"] for d in devices]}


def _device_figures(results: dict) -> list[dict]:
    devices = device_plots(results)
    if len(devices) > 1 and max(len(d["points"]) for d in devices) <= FEW_POINTS:
        return [combined_plot(devices)]
    for d in devices:
        if d["key"] == THIS_MACHINE:
            d["caption"] = "measured with the runtime on this machine"
        elif d.get("measured"):
            d["caption"] = f"measured on {d['key'].split(':', 1)[1]} over SSH with the device's own runtime"
        else:
            d["caption"] = f"ESTIMATE from a device profile, not a measurement. Profile: {d.get('provenance') or '?'}"
        d["devices"] = [d["key"]]
    return devices


def _device_section(results: dict) -> str:
    ylabel = _y_label(results)
    figures = []
    for d in _device_figures(results):
        percent = bool(results["config"].get("data"))
        if d["key"] == "all":
            svg = plots.device_rows_plot(d["points"], d["devices"], "latency per image, ms (batch 1)", d["title"],
                                         percent)
        else:
            svg = plots.scatter_plot(d["points"], d["key"], "latency per image, ms (batch 1)", ylabel, d["title"],
                                     front=True, percent=percent)
        attrs = (f" class=\"plot pareto\" data-device=\"{escape(d['key'])}\" "
                 f"data-devices=\"{escape(','.join(d['devices']))}\" data-points=\"{len(d['points'])}\"")
        figures.append(_figure(svg, strip_paths(d["caption"]), attrs))
    if not figures:
        return "<h2>Speed against accuracy</h2><p class=\"muted\">No cell has a latency yet.</p>"
    what = "accuracy" if results["config"].get("data") else "MACs (no --data: accuracy unknown)"
    front = ("" if len(figures) == 1 and "data-device=\"all\"" in figures[0] else
             "; the line and rings mark the Pareto front (nothing else is both faster and higher)")
    return (f"<h2>Speed against {escape(what)}, per device</h2><p class=\"muted\">One point per cell the device "
            f"runs; filled markers are measured, hollow ones estimated{front}.</p><div class=\"plots\">"
            + "".join(figures) + "</div>")


def _size_and_share_section(results: dict) -> str:
    parts = []
    points, used = size_points(results)
    if points:
        svg = plots.scatter_plot(points, "size", "latency per image, ms (batch 1)", "file size, MB",
                                 f"Size against latency ({used})", front=False)
        parts.append(_figure(svg, "smaller and faster is better; filled = measured, hollow = estimate",
                             " class=\"plot size\""))
    quality = quality_points(results)
    if len({p["precision"] for p in quality}) > 1:
        svg = plots.scatter_plot(quality, "quality", "latency per image, ms (batch 1)",
                                 "logits cosine to PyTorch, mean",
                                 "Quality against speed, per precision (measured here)", front=False)
        parts.append(_figure(svg, "how far each precision moves the logits from PyTorch's on the check's images, "
                             "against its latency; int8 points name the layers kept in float",
                             " class=\"plot quality\""))
    memory = memory_points(results)
    if memory:
        svg = plots.scatter_plot(memory, "memory", "latency per image, ms (batch 1)", "peak resident memory, MB",
                                 "Memory against latency (measured on this machine)", front=False)
        parts.append(_figure(svg, "the process's resident high-water mark above its baseline after the runtime's "
                             "import and before the model's load, against median latency; lower and faster is "
                             "better", " class=\"plot memory\""))
    rows = share_rows(results)
    if rows:
        parts.append(_figure(plots.share_plot(rows), "ops that reshape, transpose, split, copy or apply "
                             "element-wise functions (the paper's memory-bound lens); hatched: their share of "
                             "the runtime's kernel time, where it can be profiled", " class=\"plot share\""))
    if not parts:
        return ""
    return "<h2>Size, memory and memory-bound work</h2><div class=\"plots\">" + "".join(parts) + "</div>"


def _num(value, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """A numeric table cell: shown formatted, sorted by its value (empty = no value)."""
    if value is None:
        return "<td data-v=\"\">–</td>"
    v = value * scale
    return f"<td data-v=\"{v!r}\">{escape(fmt.format(v))}</td>"


def _text(value, cls: str = "text") -> str:
    return f"<td class=\"{cls}\">{escape(strip_paths(str(value)) if value not in (None, '') else '–')}</td>"


def _columns(devices: list[str]) -> list[tuple[str, object]]:
    """(header, cell -> <td>) for every column of the table."""
    def eq(c, key):
        return (c.get("equivalence") or {}).get(key)

    def par(c, key):
        return (c.get("parity") or {}).get(key)

    def lat(c, key):
        return (c.get("latency") or {}).get(key)

    cols = [
        ("cell", lambda c: _text(c["id"])), ("variant", lambda c: _text(c["variant"])),
        ("target", lambda c: _text(c["target"])), ("precision", lambda c: _text(c["precision_label"])),
        ("verdict", lambda c: _text(c.get("verdict") or c["status"], f"text {c.get('verdict') or c['status']}")),
        ("size MB", lambda c: _num(c.get("file_size"), scale=1e-6)),
        ("params M", lambda c: _num(c.get("params"), "{:.3f}", 1e-6)),
        ("MMACs", lambda c: _num(c.get("macs"), "{:.1f}", 1e-6)),
        ("max abs err", lambda c: _num(eq(c, "max_abs"), "{:.2e}")),
        ("min cosine", lambda c: _num(eq(c, "cosine_min"), "{:.6f}")),
        ("top-1 agree %", lambda c: _num(eq(c, "top1_agreement"), "{:.1f}", 100.0)),
        ("parity top-1 %", lambda c: _num(par(c, "top1"))),
        ("Δ top-1", lambda c: _num(par(c, "delta_top1"), "{:+.2f}")),
        ("agreement %", lambda c: _num(par(c, "agreement"))),
        ("measured ms", lambda c: _num(lat(c, "median_ms"), "{:.3f}")),
        ("p90 ms", lambda c: _num(lat(c, "p90_ms"), "{:.3f}")),
        ("p99 ms", lambda c: _num(lat(c, "p99_ms"), "{:.3f}")),
        ("peak RSS MB", lambda c: _num(lat(c, "peak_rss_bytes"), "{:.1f}", 1e-6)),
        ("activations MB", lambda c: _num(c.get("activation_bytes"), "{:.2f}", 1e-6)),
        ("runtime", lambda c: _text(lat(c, "runtime"))),
    ]
    for d in devices:
        cols.append((f"{d} ms (est.)",
                     lambda c, d=d: _num(((c.get("estimates") or {}).get(d) or {}).get("estimate_ms"), "{:.3f}")))
    cols += [
        ("mem-bound ops", lambda c: _num(c.get("memory_bound_ops"), "{:.0f}")),
        ("ops", lambda c: _num(c.get("total_ops"), "{:.0f}")),
        ("mem-bound time %", lambda c: _num(c.get("memory_bound_time_share"), "{:.1f}", 100.0)),
        ("artifact", lambda c: _text(c.get("artifact"))),
    ]
    return cols


def _table_section(results: dict) -> str:
    cols = _columns(list(results["config"].get("simulate") or []))
    head = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h, _ in cols)
    rows = "".join(f"<tr data-cell=\"{escape(c['id'])}\">" + "".join(f(c) for _, f in cols) + "</tr>\n"
                   for c in results["cells"])
    return ("<h2>Every cell</h2><p class=\"muted\">Click a column to sort. Verdict: equivalence with PyTorch "
            "(and accuracy parity with --data) within the precision's tolerance. Measured latencies come from "
            "this machine; columns marked est. are simulated estimates.</p>"
            f"<div class=\"scroll\"><table id=\"cells\"><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody>"
            "</table></div>")


def _problems_section(results: dict) -> str:
    items = []
    for c in results["cells"]:
        notes = list(c.get("notes") or [])
        failures = (c.get("equivalence") or {}).get("failures") or []
        skipped_latency = (c.get("latency") or {}).get("skipped")
        if c["status"] in ("failed", "skipped", "pending"):
            why = c.get("reason") or "not run yet (interrupted): run the same command again to finish"
            items.append(f"<li><b>{escape(c['id'])}</b> <span class=\"badge {c['status']}\">{c['status']}</span> "
                         f"{escape(strip_paths(why))}</li>")
        elif failures or skipped_latency or notes:
            text = "; ".join(failures + ([skipped_latency] if skipped_latency else []) + notes)
            items.append(f"<li><b>{escape(c['id'])}</b> <span class=\"badge\">{escape(c.get('verdict') or '')}"
                         f"</span> {escape(strip_paths(text))}</li>")
    if not items:
        return ""
    return ("<h2>Failed, skipped and noted cells</h2><ul id=\"problems\">" + "".join(items) + "</ul>")


def _published_section() -> str:
    rows = "".join(f"<tr><td>{v.upper()}</td><td>{p['top1']}</td><td>{p['top5']}</td><td>{p['params']}</td>"
                   f"<td>{p['macs']}</td><td>{p['gpu_img_s']}</td></tr>" for v, p in PUBLISHED.items())
    table = ("<table id=\"published\"><thead><tr><th>variant</th><th>top-1 %</th><th>top-5 %</th><th>params</th>"
             f"<th>MACs</th><th>V100 img/s</th></tr></thead><tbody>{rows}</tbody></table>")
    return ("<h2>Published figures, for reference (not measured here)</h2><p class=\"muted\">Liu et al., "
            "“EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention”, CVPR 2023, and the "
            "official model zoo: ImageNet-1K at 224×224; throughput on an NVIDIA V100 GPU. The paper's CPU protocol "
            "is a Xeon E5-2690 v4, one thread, batch 16.</p><div class=\"plots\">"
            + _figure(plots.published_plot(PUBLISHED), "published, not measured here", " class=\"published\"")
            + f"<figure>{table}</figure></div>")
