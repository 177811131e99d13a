"""Device profiles: built-ins say what they rest on, `devices fit` fits and validates,
`devices calibrate` measures reference models on this machine (never EfficientViT)."""
import csv
import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from evit_export.core.jsonio import loads_strict

DATA = Path(__file__).resolve().parents[1] / "validation" / "latency" / "data" / "mobile_tflite_calibration.csv"
PHONES = ("pixel4-cpu1-fp32", "iphonexs-cpu1-fp32", "s10-cpu1-fp32")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_list_shows_provenance_and_error(capsys):
    code, out, err = run_cli(capsys, "devices", "list", "--json")
    assert code == 0, err
    profiles = {p["name"]: p for p in loads_strict(out)}
    for phone in PHONES:
        p = profiles[phone]
        assert p["source"]["kind"] == "fitted"
        assert p["provenance"].startswith("fitted to 38 measurements")
        assert p["source"]["data"] == DATA.name
        assert p["formats"] == ["tflite"]
        v = p["validation"]
        assert v["loo_median_error"] < v["flops_proportional"]["loo_median_error"]
        assert "leave-one-out" in p["error"]
    assert profiles["a13-cpu1-fp32"]["source"]["kind"] == "derived"
    assert "iphonexs-cpu1-fp32" in profiles["a13-cpu1-fp32"]["provenance"]
    for accel in ("a13-ane-fp16", "a13-gpu-fp16"):
        assert profiles[accel]["source"]["kind"] == "assumption"
        assert profiles[accel]["device_class"] == "graph-accelerator"
    assert not any(name.startswith("host") for name, p in profiles.items() if p["origin"] == "built-in")
    code, out, _ = run_cli(capsys, "devices", "list")
    assert code == 0
    assert "pixel4-cpu1-fp32" in out


def _subset_csv(path: Path, models: set[str]) -> Path:
    with open(DATA, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] in models]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


SMALL = {"timm:mobilenetv3_small_050", "timm:mobilenetv3_small_100", "timm:mobilenetv2_050", "timm:regnetx_002",
         "timm:mnasnet_100", "timm:deit_tiny_distilled_patch16_224"}


def test_fit_writes_a_validated_profile(capsys, tmp_path):
    data = _subset_csv(tmp_path / "m.csv", SMALL)
    out = tmp_path / "p.json"
    code, stdout, err = run_cli(capsys, "devices", "fit", data, "--device", "pixel4-cpu1-fp32", "--out", out)
    assert code == 0, err
    assert "leave-one-out" in stdout
    assert "MACs-proportional" in stdout
    profile = loads_strict(out.read_text())
    assert profile["source"]["kind"] == "fitted"
    assert profile["validation"]["rows"] == len(SMALL)
    coef = profile["coefficients"]
    assert all(v >= 0 for v in coef.values())
    # TFLite: one GEMM rate for 1x1 convs and matmuls, one price per element moved.
    assert coef["matmul"] == coef["pointwise"]
    assert coef["layout"] == coef["elementwise"] == coef["gemm_traffic"]
    assert profile["source"]["shared_prices"]["matmul"] == "pointwise"
    assert str(tmp_path) not in out.read_text()  # no path of this machine in a shareable profile

    code, stdout, err = run_cli(capsys, "simulate", "timm:mobilenetv2_050", "--device", out, "--json")
    assert code == 0, err
    measured = next(float(r["ms"]) for r in csv.DictReader(open(data)) if r["model"] == "timm:mobilenetv2_050"
                    and r["device"] == "pixel4-cpu1-fp32")
    assert abs(json.loads(stdout)[0]["estimate_ms"] / measured - 1) < 0.5


def test_fit_bad_input_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("device,model,ms\nx,timm:resnet18,3\n")
    out = tmp_path / "p.json"
    code, _, err = run_cli(capsys, "devices", "fit", bad, "--device", "x", "--out", out)
    assert "img_size" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "devices", "fit", DATA, "--device", "nokia-3310", "--out", out)
    assert "no rows for device" in assert_one_line_error(code, err)
    few = tmp_path / "few.csv"
    few.write_text("device,model,img_size,ms\nx,m0,224,1.5\nx,m5,224,nan\n")
    code, _, err = run_cli(capsys, "devices", "fit", few, "--device", "x", "--out", out)
    assert "at least 3" in assert_one_line_error(code, err)
    assert not out.exists()


def test_calibrate_refuses_efficientvit(capsys):
    code, _, err = run_cli(capsys, "devices", "calibrate", "--models", "timm:efficientvit_m0")
    assert "EfficientViT must stay out" in assert_one_line_error(code, err)


def test_calibrate_small_reference_set(capsys, tmp_path, private_cache):
    out = tmp_path / "host.json"
    code, stdout, err = run_cli(capsys, "devices", "calibrate", "--runtime", "onnxruntime", "--threads", "1",
                                "--models", "timm:mobilenetv3_small_050,timm:regnetx_002,timm:resnet18@64",
                                "--out", out, "--json")
    assert code == 0, err
    result = loads_strict(stdout)
    profile = result["profile"]
    assert profile["name"] == "host-onnxruntime-1t"
    assert profile["formats"] == ["onnx"]
    assert "CPU flags" in profile["description"]
    assert profile["source"]["kind"] == "fitted"
    assert [r["model"] for r in result["per_row"]] == ["timm:mobilenetv3_small_050", "timm:regnetx_002",
                                                       "timm:resnet18"]
    assert all(r["measured_ms"] > 0 for r in result["per_row"])
    assert (private_cache / "devices" / "host-onnxruntime-1t.json").is_file()
    assert out.is_file()
    code, stdout, err = run_cli(capsys, "simulate", "m0", "--img-size", "64", "--device", "host-onnxruntime-1t",
                                "--json")
    assert code == 0, err
    assert loads_strict(stdout)[0]["estimate_ms"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("phone", PHONES)
def test_shipped_phone_profiles_refit_from_the_csv(capsys, tmp_path, phone):
    """`devices fit` on the shipped CSV reproduces the shipped profile, and its leave-one-out
    figures beat MACs-proportional."""
    out = tmp_path / "p.json"
    code, _, err = run_cli(capsys, "devices", "fit", DATA, "--device", phone, "--out", out)
    assert code == 0, err
    fitted = loads_strict(out.read_text())
    shipped = loads_strict((DATA.parents[1] / "profiles" / f"{phone}.json").read_text())
    assert fitted["coefficients"] == pytest.approx(shipped["coefficients"], rel=1e-3, abs=1e-6)
    v = fitted["validation"]
    assert v["loo_median_error"] < 0.15
    assert v["loo_rank_corr"] >= 0.9
    assert v["held_out_transformers"]["median_error"] < v["flops_proportional"]["loo_median_error"]
    held, base = v["held_out_transformers"], v["flops_proportional"]["held_out_transformers"]
    assert held["median_error"] <= 0.15
    assert held["median_error"] < base["median_error"]


@pytest.mark.slow
def test_full_calibration_predicts_efficientvit_on_this_host(capsys, tmp_path):
    """The host acceptance: calibrate on timm models, then M0-M5 at 224 px within a median
    15% of onnxruntime on the project's own exports, in the right order."""
    import statistics

    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.onnx.exporter import export_onnx
    from evit_export.validation.latency.calibrate import time_onnx_models

    code, _, err = run_cli(capsys, "devices", "calibrate", "--runtime", "onnxruntime", "--threads", "1")
    assert code == 0, err
    code, out, err = run_cli(capsys, "simulate", *[f"m{i}" for i in range(6)], "--device", "host-onnxruntime-1t",
                             "--json")
    assert code == 0, err
    estimates = [r["estimate_ms"] for r in loads_strict(out)]
    paths = []
    for i in range(6):
        deployed, spec = deploy_for_export(f"m{i}", seed=0)
        paths.append((export_onnx(deployed, spec, tmp_path / f"m{i}.onnx").path, 224))
    measured = time_onnx_models(paths, threads=1)  # as calibration measures
    errors = [abs(e / m - 1) for e, m in zip(estimates, measured)]
    assert statistics.median(errors) <= 0.15, (estimates, measured)
    assert sorted(range(6), key=estimates.__getitem__) == sorted(range(6), key=measured.__getitem__)
