"""Simulated latency: labelled as an estimate, consistent with model size."""
import json

from cli_helpers import assert_one_line_error, run_cli
from evit_export.models.reference import deploy_for_export
from evit_export.validation.latency.simulate import PROFILES, estimate_latency, graph_ops


def test_estimates_scale_with_model_and_are_labelled():
    small, spec = deploy_for_export("m0", seed=0)
    big, _ = deploy_for_export("m5", seed=0)
    macs = sum(m for _, _, m, _ in graph_ops(small, 224))
    assert abs(macs / 1e6 - 79) < 2  # the captured graph has the model's real work
    for device in PROFILES:
        a, b = estimate_latency(small, 224, device), estimate_latency(big, 224, device)
        assert a.kind == "estimate" and a.assumptions
        assert 0 < a.estimate_ms < b.estimate_ms
        assert abs(a.compute_bound_ms + a.memory_bound_ms + a.overhead_ms - a.estimate_ms) < 0.01


def test_bench_simulate_cli(capsys, tmp_path):
    from evit_export.targets.onnx.exporter import export_onnx

    deployed, spec = deploy_for_export("m0", img_size=128, seed=1)
    path = export_onnx(deployed, spec, tmp_path / "m0.onnx").path
    code, out, err = run_cli(capsys, "bench", path, "--iterations", "3", "--simulate", "a13-ane-fp16", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["measured", "estimate"]
    assert "ESTIMATE" in rows[1]["runtime"]
    code, _, err = run_cli(capsys, "bench", path, "--simulate", "pixel-99")
    assert "unknown device profile" in assert_one_line_error(code, err)
