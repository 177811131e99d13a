"""``report.html`` of a real sweep, opened in real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; never a browser download).

Set EVIT_SCREENSHOT_DIR to keep the screenshots (light and dark); by default they go
to the test's temporary folder.
"""
import os
import shutil
from pathlib import Path

import pytest

from evit_export.cli import main
from conftest import write_digits_folder
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
    figures = page.eval_on_selector_all(
        "figure.pareto", "fs => fs.map(f => [f.dataset.device, "
        "Array.from(f.querySelectorAll('g[id^=\"point--\"]')).map(g => g.id)])")
    assert [device for device, _ in figures] == list(expected)  # one plot per device
    for device, ids in figures:
        assert sorted(ids) == sorted(f"point--{device}--{cell}" for cell in expected[device])
    assert page.locator("figure.pareto:not([data-device=this-machine]) figcaption").first.inner_text() \
        .startswith("ESTIMATE")
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
        assert sizes == sorted(sizes, reverse=order == "descending") and len(set(sizes)) > 1


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
        assert "nan" not in row.values() and "None" not in row.values()
    coreml = next(c for c in results["cells"] if c["id"] == "m0-coreml-fp32")
    assert "checker" in coreml["latency"]["skipped"]
    assert coreml["estimates"]["a13-ane-fp16"]["kind"] == "estimate"
    assert coreml["estimates"]["a13-ane-fp16"]["provenance"]
    onnx = next(c for c in results["cells"] if c["id"] == "m0-onnx-fp32")
    assert 0 < onnx["memory_bound_time_share"] < 1 and onnx["parity"]["images"] == 40


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 60.0), (2.0, 70.0), (1.5, 55.0), (3.0, 69.0), (0.5, 40.0), (2.5, 75.0)]
    assert pareto_front(points) == [4, 0, 1, 5]


def test_demo_report_over_real_artifacts(tmp_path):
    """The demo's report.html: its own artifacts (a digits model exported to ONNX),
    checked, parity on the held-out digits, latency measured here."""
    from evit_export.data import DIGITS_LABELS
    from evit_export.demo import DemoResult, artifact_size, write_demo_report
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target
    from evit_export.validation.check import check_artifact
    from evit_export.validation.parity import check_parity

    deployed, spec = deploy_for_export("m0", None, 10, 32, seed=0, labels=DIGITS_LABELS)
    path = tmp_path / "m0_digits.onnx"
    get_target("onnx").export(deployed, spec, path)
    result = DemoResult(tmp_path / "model.safetensors", None)
    result.artifacts.append({"target": "onnx", "path": path, "size": artifact_size(path),
                             "report": check_artifact(path)})
    result.parity = check_parity([path])
    report = write_demo_report(tmp_path, result, deployed, spec)
    html = report.read_text()
    assert report == tmp_path / "report.html" and str(tmp_path) not in html
    assert html.count("<tr data-cell=") == 1 and 'data-device="this-machine" data-points="1"' in html
    assert 'id="point--this-machine--m0-onnx-fp32"' in html
    assert "embedded digits" in html and "demo" in html
