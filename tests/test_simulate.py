"""Simulated latency: op classes counted from a real forward pass, MACs counted once,
the two cost structures, and estimates labelled with what they rest on."""
import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from evit_export.core.jsonio import loads_strict
from evit_export.models.profile import count_macs, op_records
from evit_export.models.reference import deploy_for_export
from evit_export.validation.latency import estimates_for
from evit_export.validation.latency.profiles import DeviceProfile, builtin_profiles
from evit_export.validation.latency.simulate import FEATURES, MAC_CLASSES, estimate, features_of, model_features


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Features and user profiles go to a temporary cache, not the user's."""
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))


class Mixed(torch.nn.Module):
    """One op of each class, with shapes chosen so every count is known by hand."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)  # 16x16 -> 8x16x16, 3*9 MACs each
        self.bn = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)        # 9 MACs per output
        self.pw = torch.nn.Conv2d(8, 16, 1)                              # 8 MACs per output
        self.grouped = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)   # 4*9 MACs per output
        self.pool = torch.nn.AvgPool2d(3, stride=1, padding=1)           # 9 taps per output
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))  # BN folds and ReLU fuses into the conv
        x = self.pw(self.dw(x))
        x = self.pool(torch.nn.functional.gelu(self.grouped(x)))
        return self.fc(x.mean((2, 3)))


def test_op_classes_from_a_forward_pass():
    feats = model_features(Mixed().eval(), 16)
    n = 16 * 16
    assert feats.macs == {"conv": 8 * n * 27, "depthwise": 8 * n * 9 + 16 * n * 9, "pointwise": 16 * n * 8,
                          "grouped": 16 * n * 36, "matmul": 160}
    assert feats.total_macs == 8 * n * 27 + 8 * n * 9 + 16 * n * 8 + 16 * n * 36 + 160  # pools have no MACs
    # conv, dw, pw, grouped, gelu, pool, mean, linear: BN and ReLU removed, views free.
    assert feats.ops == 8
    assert feats.elements["elementwise"] == 2 * 16 * n + (16 * n + 16)  # gelu in+out, mean in+out
    assert feats.transcendental == {"exp": 0, "erf": 16 * n}  # GELU: erf work per output element
    # Operands streamed by the conv, the 1x1 conv and the linear layer (input, weight,
    # bias, output); depthwise and grouped convs are priced per MAC alone.
    assert feats.gemm_operands == (3 * n + 8 * 27 + 8 * n) + (8 * n + 16 * 8 + 16 + 16 * n) + (10 + 16 + 160 + 10)


def test_macs_counted_once_match_the_paper():
    deployed, _ = deploy_for_export("m0", seed=0)
    records = op_records(deployed, 224)
    feats = features_of(records)
    assert feats.total_macs == count_macs(deployed, 224)
    assert abs(feats.total_macs / 1e6 - 79) < 2
    assert sum(feats.macs[c] for c in MAC_CLASSES) == feats.total_macs  # no windowed pools in M0


def _profile(device_class, **coefficients):
    return DeviceProfile(name=f"test-{device_class}", description="test", device_class=device_class,
                         runtime="test", formats=["onnx"], precisions=["fp32"], coefficients=coefficients,
                         source={"kind": "assumption", "text": "test prices"})


def test_cost_structures_differ_by_device_class():
    feats = model_features(Mixed().eval(), 16)
    values = feats.vector()
    prices = {"conv": 100.0, "elementwise": 1.0, "dispatch": 0.01, "constant": 0.5}
    cpu = estimate(feats, _profile("cpu-interpreter", **prices))
    expected = sum(values[k] * v for k, v in prices.items())
    assert cpu.estimate_ms == pytest.approx(expected, abs=1e-3)
    assert cpu.kind == "estimate"
    accel = estimate(feats, _profile("graph-accelerator", **prices))
    compute, memory = values["conv"] * 100.0, values["elementwise"] * 1.0
    assert accel.estimate_ms == pytest.approx(0.5 + max(compute, memory), abs=1e-3)  # no per-op cost
    assert "dispatch" not in FEATURES or accel.estimate_ms < cpu.estimate_ms


def test_simulate_cli_json(capsys):
    code, out, err = run_cli(capsys, "simulate", "m0", "m5", "timm:mobilenetv3_small_050", "--device",
                             "pixel4-cpu1-fp32", "--device", "a13-ane-fp16", "--json")
    assert code == 0, err
    rows = loads_strict(out)
    assert [(r["model"], r["device"]) for r in rows][:2] == [("m0", "pixel4-cpu1-fp32"), ("m0", "a13-ane-fp16")]
    for r in rows:
        assert r["kind"] == "estimate"
        assert r["img_size"] == 224
        assert r["batch"] == 1
        assert r["estimate_ms"] > 0
        assert r["provenance"]
        assert r["breakdown_ms"]
    pixel = {r["model"]: r for r in rows if r["device"] == "pixel4-cpu1-fp32"}
    assert pixel["m0"]["estimate_ms"] < pixel["m5"]["estimate_ms"]
    # memory is known before the device is bought (issue 22.2): planned at the profile's precision
    ane = {r["model"]: r for r in rows if r["device"] == "a13-ane-fp16"}
    for model in ("m0", "m5"):
        fp32, fp16 = pixel[model]["memory"], ane[model]["memory"]
        assert (fp32["precision"], fp16["precision"]) == ("fp32", "fp16")
        assert fp32["activation_bytes"] == 2 * fp16["activation_bytes"] > 0
        assert fp32["weight_bytes"] == 2 * fp16["weight_bytes"] > 0
    # M0 has 2.3 M parameters, M5 12.4 M (the paper's table): 4 bytes each at fp32
    assert pixel["m0"]["memory"]["weight_bytes"] / 4 == pytest.approx(2.3e6, rel=0.05)
    assert pixel["m5"]["memory"]["weight_bytes"] / 4 == pytest.approx(12.4e6, rel=0.05)
    assert pixel["m0"]["memory"]["activation_bytes"] < pixel["m5"]["memory"]["activation_bytes"]
    # rounded to 2 figures (the profile's ~11 % error on held-out transformers): the parts add up within that
    assert sum(pixel["m5"]["breakdown_ms"].values()) == pytest.approx(pixel["m5"]["estimate_ms"], rel=0.1)
    assert pixel["m0"]["validation"]["loo_median_error"] < pixel["m0"]["validation"]["flops_proportional"][
        "loo_median_error"]

    code, _, err = run_cli(capsys, "simulate", "m9", "--device", "pixel4-cpu1-fp32")
    assert "unknown model" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "simulate", "timm:no_such_net", "--device", "pixel4-cpu1-fp32")
    assert "timm has no model" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "simulate", "m0", "--device", "pixel-99")
    assert "unknown device profile" in assert_one_line_error(code, err)


def test_estimates_only_for_profiles_that_fit_the_artifact():
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    coreml = estimates_for(spec, "coreml", "fp32")
    assert {r["device"] for r in coreml} == {"a13-ane-fp16", "a13-gpu-fp16", "a13-cpu1-fp32"}
    tflite = estimates_for(spec, "tflite", "fp32")
    assert {r["device"] for r in tflite} >= {"pixel4-cpu1-fp32", "iphonexs-cpu1-fp32", "s10-cpu1-fp32"}
    assert estimates_for(spec, "tflite", "int8") == []  # no profile was fitted to int8 measurements
    for r in coreml + tflite:
        assert r["kind"] == "estimate"
        assert r["provenance"]
        assert r["validation_error"]
        json.dumps(r, allow_nan=False)
    ane = next(r for r in coreml if r["device"] == "a13-ane-fp16")
    assert "dispatch" not in ane["breakdown_ms"]  # a whole-graph accelerator pays no per-op cost
    assert builtin_profiles()["a13-cpu1-fp32"].source["kind"] == "derived"


def test_bench_simulate_keeps_estimates_apart(capsys, tmp_path):
    from evit_export.targets.onnx.exporter import export_onnx

    deployed, spec = deploy_for_export("m0", img_size=64, seed=1)
    path = export_onnx(deployed, spec, tmp_path / "m0.onnx").path
    host = _profile("cpu-interpreter", conv=50.0, pointwise=50.0, depthwise=100.0, matmul=50.0, elementwise=0.5,
                    dispatch=0.002)
    host.save(tmp_path / "host.json")
    code, out, err = run_cli(capsys, "bench", path, "--iterations", "3", "--simulate", f"{tmp_path / 'host.json'},all",
                             "--json")
    assert code == 0, err
    rows = loads_strict(out)
    assert [r["kind"] for r in rows] == ["measured", "estimate"]  # 'all': only the profiles that run it
    assert rows[1]["device"] == "test-cpu-interpreter"
    assert rows[1]["p90_ms"] is None
    code, _, err = run_cli(capsys, "bench", path, "--simulate", "pixel-99")
    assert "unknown device profile" in assert_one_line_error(code, err)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    """An fp32 and an fp16 ONNX artifact of a small M0."""
    from evit_export.targets.onnx import OnnxOptions
    from evit_export.targets.onnx.exporter import export_onnx

    folder = tmp_path_factory.mktemp("simulate")
    deployed, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=1)
    fp32 = export_onnx(deployed, spec, folder / "m0.onnx").path
    fp16 = export_onnx(deployed, spec, folder / "m0_fp16.onnx", OnnxOptions(precision="fp16")).path
    return fp32, fp16


def _onnx_profile_in_cache(tmp_path) -> str:
    """A user profile (as devices fit/calibrate caches one) pricing ONNX fp32 artifacts."""
    from evit_export.validation.latency.profiles import user_profile_dir

    profile = _profile("cpu-interpreter", conv=50.0, pointwise=50.0, depthwise=100.0, matmul=50.0,
                       elementwise=0.5, dispatch=0.002)
    profile.name = "host-test-onnx"
    profile.save(user_profile_dir() / "host-test-onnx.json")
    return profile.name


def test_simulate_refuses_a_profile_that_does_not_run_the_artifact(capsys, onnx_pair, tmp_path):
    """Issue 19.5: an .onnx priced on an Android TFLite profile, or an fp16 artifact on an
    fp32-only profile, was the other artifact's figure. One line naming the profiles that
    fit, exit 2, in the CLI and the API, by the rule bench --simulate follows."""
    import evit_export

    fp32, fp16 = onnx_pair
    fitting = _onnx_profile_in_cache(tmp_path)
    code, _, err = run_cli(capsys, "simulate", fp32, "--device", "pixel4-cpu1-fp32")
    line = assert_one_line_error(code, err)
    assert "pixel4-cpu1-fp32" in line, line
    assert "m0.onnx" in line, line
    assert f"use {fitting}" in line, line
    code, _, err = run_cli(capsys, "simulate", fp16, "--device", fitting)
    line = assert_one_line_error(code, err)
    assert "onnx fp16" in line, line
    assert "no profile prices onnx fp16" in line, line
    code, _, err = run_cli(capsys, "bench", fp32, "--simulate", "pixel4-cpu1-fp32")
    assert f"use {fitting}" in assert_one_line_error(code, err)
    with pytest.raises(evit_export.UserError, match=f"not m0.onnx .onnx fp32.: use {fitting}"):
        evit_export.simulate(fp32, "a13-ane-fp16")
    assert evit_export.simulate(fp32, fitting).estimate_ms > 0
    # an architecture (no artifact) has no format: any profile prices it
    code, out, err = run_cli(capsys, "simulate", "m0", "--device", f"pixel4-cpu1-fp32,{fitting}", "--device",
                             "a13-ane-fp16", "--json")
    assert code == 0, err
    assert [r["device"] for r in loads_strict(out)] == ["pixel4-cpu1-fp32", fitting, "a13-ane-fp16"]


def test_estimates_rounded_to_what_their_validation_supports(capsys):
    """Issue 19.6: an assumption printed to 4 decimals (0.3061 ms) and "ESTIMATE ...
    (ESTIMATE)". ~11 % error on held-out transformers: 2 significant figures; an
    unvalidated assumption: 1; an unvalidated derivation: at most 2."""
    from evit_export.validation.latency import format_figures, significant_figures

    profiles = builtin_profiles()
    assert significant_figures(profiles["pixel4-cpu1-fp32"]) == 2
    assert significant_figures(profiles["a13-ane-fp16"]) == 1
    assert significant_figures(profiles["a13-cpu1-fp32"]) == 2
    assert format_figures(0.3061, 1) == "0.3"
    assert format_figures(12.34, 2) == "12"
    assert format_figures(147, 2) == "150"
    code, out, err = run_cli(capsys, "simulate", "m0", "--device", "a13-ane-fp16,pixel4-cpu1-fp32", "--json")
    assert code == 0, err
    ane, pixel = loads_strict(out)
    for row in (ane, pixel):
        figures = row["significant_figures"]
        assert float(f"{row['estimate_ms']:.{figures}g}") == row["estimate_ms"], row
    assert ane["significant_figures"] == 1
    assert pixel["significant_figures"] == 2
    code, out, err = run_cli(capsys, "simulate", "m0", "--device", "a13-ane-fp16")
    assert code == 0, out
    assert "0.3061" not in out, out
    assert "activ. MB" in out and "weights MB" in out, out
    assert f"{ane['memory']['weight_bytes'] / 1e6:.2f}" in out, out
    assert f"{ane['estimate_ms']:g}" in out, out
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    for row in estimates_for(spec, "coreml", "fp16"):
        assert "ESTIMATE" not in row["runtime"].upper(), row  # kind says it; the label says it once
        figures = row["significant_figures"]
        assert float(f"{row['median_ms']:.{figures}g}") == row["median_ms"], row
