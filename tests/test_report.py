"""``report.html`` of a real sweep, opened in real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; never a browser download).

Set EVIT_SCREENSHOT_DIR to keep the screenshots (light and dark); by default they go
to the test's temporary folder.
"""
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_digits_folder

from evit_export.cli import main
from evit_export.core.jsonio import loads_strict
from evit_export.packaging.report_plots import pareto_front

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DEVICES = ("a13-ane-fp16", "a13-cpu1-fp32")  # built-in profiles that run CoreML artifacts


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """m0 × onnx, coreml × fp32, fp16 with accuracy data and two simulated devices."""
    root = tmp_path_factory.mktemp("report")
    data = write_digits_folder(root / "digits", 40, size=32)
    out = root / "sweep"

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--variants", "m0", "--targets", "onnx,coreml", "--precisions", "fp32,fp16",
              "--img-size", "32", "--data", str(data), "--simulate", ",".join(DEVICES), "--jobs", "2",
              "--out", str(out)])
    assert exc.value.code == 0
    return out, loads_strict((out / "results.json").read_text())


def screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("EVIT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def expected_points(results: dict) -> dict:
    """device -> the cells it applies to, from results.json (not from the page)."""
    cells = [c for c in results["cells"] if c["status"] == "done"]
    expected = {"this-machine": {c["id"] for c in cells if (c["latency"] or {}).get("median_ms")}}
    for device in results["config"]["simulate"]:
        expected[device] = {c["id"] for c in cells if device in (c["estimates"] or {})}
    return expected


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(sweep, tmp_path):
    from playwright.sync_api import sync_playwright

    out, results = sweep
    assert all(c["verdict"] == "pass" for c in results["cells"]), [c["reason"] for c in results["cells"]]
    html = (out / "report.html").read_text()
    assert str(out.parent) not in html and "/tmp/" not in html  # no paths of this machine
    # The page must work from anywhere on disk, with nothing beside it.
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    shutil.copy(out / "report.html", alone)
    shots = screenshot_dir(tmp_path)
    expected = expected_points(results)
    assert expected["this-machine"] == {"m0-onnx-fp32", "m0-onnx-fp16"}  # CoreML has no runtime on Linux
    assert expected["a13-ane-fp16"] == {"m0-coreml-fp32", "m0-coreml-fp16"}
    assert expected["a13-cpu1-fp32"] == {"m0-coreml-fp32"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
                errors, requests = [], []
                page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("request", lambda r, requests=requests: requests.append(r.url))
                page.goto(alone.as_uri())
                page.wait_for_load_state("load")
                assert errors == []
                assert requests == [alone.as_uri()]  # self-contained: nothing else is fetched
                check_plots(page, expected)
                check_table(page, results)
                check_colours(page, scheme)
                page.screenshot(path=str(shots / f"report-{scheme}.png"), full_page=True)
                page.close()
        finally:
            browser.close()


def check_plots(page, expected: dict) -> None:
    """Every device's points, once each (one plot per device, or one for all when each
    has few points), and the estimates say they are estimates."""
    figures = page.eval_on_selector_all(
        "figure.pareto", "fs => fs.map(f => [f.dataset.devices, "
        "Array.from(f.querySelectorAll('g[id^=\"point--\"]')).map(g => g.id)])")
    assert sorted(d for devices, _ in figures for d in devices.split(",")) == sorted(expected)
    ids = [i for _, found in figures for i in found]
    assert sorted(ids) == sorted(f"point--{device}--{cell}" for device in expected for cell in expected[device])
    captions = page.locator("figure.pareto figcaption").all_inner_texts()
    assert any("ESTIMATE" in text for text in captions)
    assert "published" in page.locator("#published").locator("xpath=ancestor::div[1]").inner_text().lower()


def check_table(page, results: dict) -> None:
    rows = page.locator("#cells tbody tr")
    assert rows.count() == len(results["cells"])
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.cell)")) == sorted(c["id"] for c in results["cells"])
    header = page.locator("#cells th", has_text="size MB")
    index = header.evaluate("th => th.cellIndex")
    for order in ("ascending", "descending"):
        header.click()
        assert header.get_attribute("aria-sort") == order
        sizes = rows.evaluate_all(f"rs => rs.map(r => parseFloat(r.cells[{index}].dataset.v))")
        assert sizes == sorted(sizes, reverse=order == "descending")
        assert len(set(sizes)) > 1


def check_colours(page, scheme: str) -> None:
    """Plot text follows the page's text colour, which contrasts with the background."""
    def luminance(css: str) -> float:
        r, g, b = [int(v) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3]]
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = page.locator("svg.chart text").first.evaluate("t => getComputedStyle(t).fill")
    assert abs(luminance(bg) - luminance(text)) > 0.6, (scheme, bg, text)
    assert (luminance(bg) < 0.2) == (scheme == "dark")


def test_results_csv_and_json_are_strict(sweep):
    import csv

    out, results = sweep
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(results["cells"]) == 4
    assert {"estimate_ms[a13-ane-fp16]", "parity_top1", "latency_median_ms", "memory_bound_ops"} <= set(rows[0])
    for row in rows:
        assert "nan" not in row.values()
        assert "None" not in row.values()
    coreml = next(c for c in results["cells"] if c["id"] == "m0-coreml-fp32")
    assert "checker" in coreml["latency"]["skipped"]
    assert coreml["estimates"]["a13-ane-fp16"]["kind"] == "estimate"
    assert coreml["estimates"]["a13-ane-fp16"]["provenance"]
    onnx = next(c for c in results["cells"] if c["id"] == "m0-onnx-fp32")
    assert 0 < onnx["memory_bound_time_share"] < 1
    assert onnx["parity"]["images"] == 40


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 60.0), (2.0, 70.0), (1.5, 55.0), (3.0, 69.0), (0.5, 40.0), (2.5, 75.0)]
    assert pareto_front(points) == [4, 0, 1, 5]


def test_demo_report_over_real_artifacts(tmp_path):
    """The demo's report.html: its own artifacts (a digits model exported to ONNX),
    checked, parity on the held-out digits, latency measured here."""
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target
    from evit_export.validation.check import check_artifact
    from evit_export.validation.parity import check_parity

    from evit_export.data import DIGITS_LABELS
    from evit_export.demo import DemoResult, artifact_size, write_demo_report

    deployed, spec = deploy_for_export("m0", None, 10, 32, seed=0, labels=DIGITS_LABELS)
    path = tmp_path / "m0_digits.onnx"
    get_target("onnx").export(deployed, spec, path)
    result = DemoResult(tmp_path / "model.safetensors", None)
    result.artifacts.append({"target": "onnx", "path": path, "size": artifact_size(path),
                             "report": check_artifact(path)})
    result.parity = check_parity([path])
    report = write_demo_report(tmp_path, result, deployed, spec)
    html = report.read_text()
    assert report == tmp_path / "report.html"
    assert str(tmp_path) not in html
    assert html.count("<tr data-cell=") == 1
    assert 'data-devices="this-machine' in html
    assert 'id="point--this-machine--m0-onnx-fp32"' in html
    assert "embedded digits" in html
    assert "demo" in html


# ----------------------------------------------------------------------------- issue 19.16: layout

def synthetic_results(devices: list[str], top1s: list[float], img_size=None) -> dict:
    """A results.json shape (results.new_record) for layout checks: one cell per top-1
    value, measured here and estimated on every device in ``devices``."""
    from evit_export.sweep.results import new_record

    cells = []
    for i, top1 in enumerate(top1s):
        rec = new_record(f"m{i}", "onnx", ("fp32", "fp16")[i % 2])
        rec.update(status="done", verdict="pass", img_size=224, file_size=(2 + i) * 1e6, params=(2 + i) * 1e6,
                   macs=(80 + 40 * i) * 1e6, memory_bound_ops=40 + i, total_ops=100, memory_bound_time_share=0.3,
                   parity={"top1": top1, "delta_top1": 0.0, "agreement": 99.0, "images": 40},
                   latency={"runtime": "onnxruntime", "median_ms": 1.0 + i, "p90_ms": 1.1 + i},
                   estimates={d: {"estimate_ms": (1.0 + i) * (j + 2), "kind": "estimate"}
                              for j, d in enumerate(devices)})
        cells.append(rec)
    return {"config": {"variants": [c["variant"] for c in cells], "targets": ["onnx"], "precisions": ["fp32", "fp16"],
                       "img_size": img_size, "data": "pets", "simulate": devices, "threads": 1},
            "machine": {"description": "test machine", "cpu_flags": ["avx2"]}, "cells": cells}


BOXES = """ids => ids.map(id => { const e = document.getElementById(id);
  if (!e) return null; const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; })"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, html: str, path: Path):
    path.write_text(html)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page


def test_plot_layout_labels_rings_and_legends(browser, tmp_path):
    """Point labels clear the plot titles; points at 100 % sit inside the axes with their
    Pareto rings whole; the memory-bound legend covers no bar; the precision legend
    draws no hollow marker (hollow means estimate); the header names the image size."""
    from evit_export.packaging.report import build_report

    results = synthetic_results(["a13-ane-fp16"], [100.0, 99.5, 100.0, 90.0])
    html = build_report(results)
    assert "image size 224" in html
    assert "image size default" not in html
    page = _open(browser, html, tmp_path / "report.html")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "report-layout.png"), full_page=True)
    for key in ("this-machine", "a13-ane-fp16"):
        ids = [c["id"] for c in results["cells"]]
        title, axes, ring = page.evaluate(BOXES, [f"title--{key}", f"axes--{key}", f"front--{key}"])
        labels = page.evaluate(BOXES, [f"label--{key}--{i}" for i in ids])
        points = page.evaluate(BOXES, [f"point--{key}--{i}" for i in ids])
        assert None not in (title, axes, ring), key
        assert None not in labels + points, key
        assert [i for i, box in zip(ids, labels) if _overlap(box, title)] == [], key
        assert _inside(ring, axes), (key, ring, axes)
        for i, box in zip(ids, points):
            assert _inside(box, axes) and box[1] > axes[1] + 1, (key, i, box, axes)  # not on the border
        fills = page.eval_on_selector_all(f"[id^='legend--{key}--']", "gs => gs.map(g => [g.id, "
                                          "Array.from(g.querySelectorAll('path, use')).map(p => { const s = getComputedStyle(p); "
                                          "return s.fill === 'none' || s.fillOpacity === '0' ? 'none' : s.fill; })])")
        by_entry = dict(fills)
        for prec in ("fp32", "fp16"):
            assert by_entry[f"legend--{key}--{prec}"], by_entry
            assert "none" not in by_entry[f"legend--{key}--{prec}"], by_entry
        if key != "this-machine":
            assert "none" in by_entry[f"legend--{key}--estimate"]  # hollow is kept for "estimate"
    legend = page.evaluate(BOXES, ["legend--share"])[0]
    bars = page.evaluate(BOXES, [f"bar--{c['id']}--{kind}" for c in results["cells"] for kind in ("ops", "time")])
    assert legend is not None
    assert None not in bars
    assert [b for b in bars if _overlap(b, legend)] == []
    page.close()


def test_few_points_per_device_share_one_plot(browser, tmp_path):
    """One point on each of seven devices: one plot holding all of them, not seven near-empty
    panels; with several points per device each keeps its own plot."""
    from evit_export.packaging.report import build_report

    devices = ["a13-ane-fp16", "a13-cpu1-fp32", "pixel4-cpu1-fp32", "d4", "d5", "d6"]
    few = synthetic_results(devices, [71.0])
    twin = few["cells"][0]["estimates"]["a13-ane-fp16"]
    few["cells"].append({**few["cells"][0], "id": "m0-onnx-fp16", "precision": "fp16",
                         "estimates": {"a13-ane-fp16": twin}, "latency": None})  # same latency: labels must not collide
    page = _open(browser, build_report(few), tmp_path / "few.html")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "report-few.png"), full_page=True)
    assert page.locator("figure.pareto").count() == 1
    ids = page.eval_on_selector_all("figure.pareto g[id^='point--']", "gs => gs.map(g => g.id)")
    assert sorted(ids) == sorted([f"point--{d}--m0-onnx-fp32" for d in ["this-machine"] + devices]
                                 + ["point--a13-ane-fp16--m0-onnx-fp16"])
    assert "ESTIMATE" in page.locator("figure.pareto figcaption").inner_text()
    labels = page.evaluate(BOXES, [i.replace("point--", "label--") for i in ids])
    title = page.evaluate(BOXES, ["title--all"])[0]
    assert None not in labels
    assert title is not None
    assert [(a, b) for a in range(len(labels)) for b in range(a) if _overlap(labels[a], labels[b])] == []
    assert [box for box in labels if _overlap(box, title)] == []
    page.close()
    many = synthetic_results(devices[:2], [71.0, 75.0, 80.0])
    page = _open(browser, build_report(many), tmp_path / "many.html")
    assert page.eval_on_selector_all("figure.pareto", "fs => fs.map(f => f.dataset.device)") == \
        ["this-machine"] + devices[:2]
    page.close()


def test_memory_against_latency_plot(browser, tmp_path):
    """Issue 22: the report draws peak resident memory against measured latency, one
    point per measured cell, inside its axes; cells without a measured peak are left out."""
    from evit_export.packaging.report import build_report

    results = synthetic_results([], [70.0, 75.0, 80.0])
    for i, cell in enumerate(results["cells"][:2]):
        cell["latency"].update(peak_rss_bytes=int((30 + 20 * i) * 1e6), p99_ms=2.0 + i)
    page = _open(browser, build_report(results), tmp_path / "report.html")
    ids = page.eval_on_selector_all("figure.memory g[id^='point--memory--']", "gs => gs.map(g => g.id)")
    assert sorted(ids) == ["point--memory--" + c["id"] for c in sorted(results["cells"][:2], key=lambda c: c["id"])]
    axes = page.evaluate(BOXES, ["axes--memory"])[0]
    for box in page.evaluate(BOXES, ids):
        assert _inside(box, axes), (box, axes)
    page.close()


def test_quality_against_speed_plot(browser, tmp_path):
    """Issue 18: the report plots the logits cosine against latency per precision, int8
    points naming the layers kept in float."""
    from evit_export.packaging.report import build_report

    results = synthetic_results([], [70.0, 75.0, 80.0])
    for cell, cosine in zip(results["cells"], (1.0, 0.9995, 0.991)):
        cell["equivalence"] = {"cosine_mean": cosine, "passed": True}
    results["cells"][2].update(precision="int8", int8={"kept_float": ["attention", "stages.2.blocks.3"]})
    page = _open(browser, build_report(results), tmp_path / "report.html")
    ids = page.eval_on_selector_all("figure.quality g[id^='point--quality--']", "gs => gs.map(g => g.id)")
    assert sorted(ids) == sorted("point--quality--" + c["id"] for c in results["cells"])
    assert "float: attention,stages.2.blocks.3" in page.inner_text("figure.quality")
    page.close()
