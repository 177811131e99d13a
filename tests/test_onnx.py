"""ONNX target: export, equivalence, corruption, localisation, bad input."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from cli_helpers import assert_one_line_error, assert_usage_error, run_cli
from conftest import make_timm_model
from evit_export.models.reference import deploy_for_export
from evit_export.targets.onnx import OnnxOptions
from evit_export.targets.onnx.exporter import export_onnx


@pytest.fixture(scope="module")
def m0_artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    ref = make_timm_model("m0", seed=7)
    torch.save(ref.state_dict(), d / "m0.pth")
    deployed, spec = deploy_for_export("m0", d / "m0.pth")
    export_onnx(deployed, spec, d / "m0_b1.onnx", OnnxOptions(batch=1))
    export_onnx(deployed, spec, d / "m0_dyn.onnx", OnnxOptions(batch=None))
    return d, ref


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_matches_timm_batch1_and_dynamic(m0_artifacts):
    d, ref = m0_artifacts
    x = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(x).numpy()
    got16 = _ort(d / "m0_dyn.onnx", x.numpy())
    got1 = _ort(d / "m0_b1.onnx", x[:1].numpy())
    tol = 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(got16 - want).max() <= tol
    assert np.abs(got1 - want[:1]).max() <= tol


def test_spec_metadata_and_sidecar(m0_artifacts):
    d, _ = m0_artifacts
    proto = onnx.load(str(d / "m0_b1.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = json.loads(meta["evit_export.core.spec"])
    assert spec["variant"] == "m0" and spec["num_classes"] == 1000 and spec["batch"] == 1
    assert spec["source"]["checkpoint"].endswith("m0.pth")
    side = json.loads((d / "m0_b1.onnx.evit.json").read_text())
    assert side["info"]["simplifier"] == "onnxsim"
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)


def test_check_cli_pass_json(capsys, m0_artifacts):
    d, _ = m0_artifacts
    code, out, err = run_cli(capsys, "check", d / "m0_dyn.onnx", "--json", "-n", "8")
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["top1_agreement"] == 1.0 and report["max_abs"] < 1e-4


def test_corrupted_initializer_fails_and_localizes(capsys, m0_artifacts, tmp_path):
    d, _ = m0_artifacts
    proto = onnx.load(str(d / "m0_b1.onnx"))
    # Change one bias value of the first FFN output conv after the 40th Conv (a weight
    # could sit on a ReLU channel that random weights leave dead for every input).
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    index = next(i for i, n in enumerate(convs) if i >= 40 and "pw2" in n.name)
    target = convs[index].input[2]
    inits = {t.name: t for t in proto.graph.initializer}
    arr = numpy_helper.to_array(inits[target]).copy()
    arr.flat[0] += 0.5
    inits[target].CopyFrom(numpy_helper.from_array(arr, target))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    (tmp_path / "bad.onnx.evit.json").write_text((d / "m0_b1.onnx.evit.json").read_text())
    code, out, err = run_cli(capsys, "check", bad, "-n", "8", "--localize", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert not report["passed"]
    loc = report["localization"]
    # Names a layer at or after the changed weight: the first 40 convs matched.
    assert loc["layer"] is not None and loc["checked"] >= index, loc
    assert loc["layer"].replace(".", "/") in convs[index].name or loc["checked"] > index, loc


def test_fp16_export(tmp_path):
    deployed, spec = deploy_for_export("m0", seed=3)
    art = export_onnx(deployed, spec, tmp_path / "m0_fp16.onnx", OnnxOptions(precision="fp16", batch=None))
    from evit_export.validation.check import check_artifact

    report = check_artifact(art.path, n=16)
    assert report.precision == "fp16"
    assert report.passed and report.cosine_min >= 0.999, report


def _op_histogram(path):
    from collections import Counter

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_int8_qoperator_default_calibration(tmp_path):
    from evit_export.validation.check import check_artifact

    from evit_export.data import DIGITS_LABELS

    # A digits model: check_artifact judges int8 on the held-out digits only when they fit its classes.
    deployed, spec = deploy_for_export("m0", num_classes=10, seed=1, labels=DIGITS_LABELS)
    art = export_onnx(deployed, spec, tmp_path / "m0_int8.onnx", OnnxOptions(precision="int8", calibration_size=48))
    assert art.spec.precision == "int8" and art.info["quant_format"] == "qoperator"
    calibration = art.info["calibration"]
    assert calibration["source"] == "48 images of the embedded digits dataset (training split)"
    assert calibration["count"] == 48 and not calibration["random"]
    assert "48 image" in calibration["warnings"][0]  # below the trusted size: said, not refused
    assert art.path.stat().st_size < 4e6  # int8 weights: fp32 is 9.7 MB
    hist = _op_histogram(art.path)
    kept = art.info["int8"]["kept_float"]  # keep_float="auto": only what held-out images needed
    assert hist["QLinearConv"] > 60 and ("Conv" in hist) == bool(kept)
    report = check_artifact(art.path)  # int8: judged on held-out real images
    assert "held-out" in report.inputs and report.n == 200
    assert report.passed and report.top1_agreement >= 0.95, report


@pytest.mark.slow  # 10 s; QDQ is the non-default format: the default suite tests QOperator int8
def test_int8_qdq_calibration_folder(tmp_path):
    from conftest import write_digits_folder
    from evit_export.data import heldout_images
    from evit_export.targets.torch_runner import TorchRunner
    from evit_export.validation.equivalence import compare_outputs

    root = write_digits_folder(tmp_path / "calib", 40, broken_in="1")  # the broken file is skipped
    deployed, spec = deploy_for_export("m0", seed=1)
    art = export_onnx(deployed, spec, tmp_path / "m0_qdq.onnx",
                      OnnxOptions(precision="int8", quant_format="qdq", calibration_data=root, batch=None))
    # about a fifth of the 41 files (per class, rounded) is held out for the check; the unreadable
    # one is skipped wherever it falls
    calibration = art.info["calibration"]
    assert 6 <= calibration["heldout"] <= 12 and calibration["count"] + calibration["heldout"] in (40, 41)
    hist = _op_histogram(art.path)
    assert hist["QuantizeLinear"] > 50 and hist["DequantizeLinear"] > 50
    held, _, _ = heldout_images(art.spec, 100)
    from evit_export.targets import RunnerOptions, get_target

    with get_target("onnx").open(art.path, options=RunnerOptions(threads=1)) as runner:
        got = runner.run(held)  # dynamic batch: all 100 in one call
    rep = compare_outputs(TorchRunner(deployed, art.spec).run(held), got, "int8")
    assert rep.top1_agreement >= 0.95, rep


def test_other_input_size_padding(tmp_path):
    deployed, spec = deploy_for_export("m1", img_size=160, seed=2)  # 10x10 tokens -> padded windows
    art = export_onnx(deployed, spec, tmp_path / "m1_160.onnx", OnnxOptions(batch=2))
    from evit_export.validation.check import check_artifact

    assert check_artifact(art.path, n=4).passed


def test_ort_format_and_usability(tmp_path):
    deployed, spec = deploy_for_export("m0", seed=1)
    art = export_onnx(deployed, spec, tmp_path / "m0.onnx", OnnxOptions(ort_format=True))
    assert (tmp_path / "m0.ort").stat().st_size > 1_000_000
    side = json.loads((tmp_path / "m0.onnx.evit.json").read_text())
    assert "mobile_usability" in side["info"]["ort"]
    sess = ort.InferenceSession(str(tmp_path / "m0.ort"), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert np.allclose(sess.run(None, {"image": x})[0], _ort(art.path, x), atol=1e-5)


def test_inspect_reports_memory_bound_ops(capsys, m0_artifacts):
    d, _ = m0_artifacts
    code, out, err = run_cli(capsys, "inspect", d / "m0_b1.onnx", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["op_histogram"]["Conv"] > 100 and rep["memory_bound_ops"] > 0
    assert rep["params"] > 2_300_000


def test_inspect_profile_shares_what_onnxruntime_ran(capsys, m0_artifacts):
    """--profile times the graph onnxruntime optimized (NCHWc reorders included), each
    node's median over the calls, as shares that add up to the whole run."""
    d, _ = m0_artifacts
    code, out, err = run_cli(capsys, "inspect", d / "m0_b1.onnx", "--profile", "--json")
    assert code == 0, err
    shares = json.loads(out)["extra"]["time_share"]
    assert abs(sum(shares.values()) - 1) < 0.01
    assert max(shares, key=shares.get) == "Conv" and shares["Conv"] > 0.3
    assert shares["Softmax"] > 0 and shares["FusedMatMul"] > 0  # the attention ran, fused as onnxruntime does


def test_bad_input(capsys, m0_artifacts, tmp_path):
    d, _ = m0_artifacts
    cases = [
        (["onnx", "--variant", "m8", "--out", tmp_path / "a.onnx"], "unknown variant"),
        (["onnx", "--variant", "m0", "--opset", "3", "--out", tmp_path / "a.onnx"], "--opset"),
        (["onnx", "--variant", "m0", "--out", "/proc/forbidden/a.onnx"], "output"),
        (["onnx", "-v", "m0", "--calibration-data", tmp_path, "--out", tmp_path / "a.onnx"], "--precision int8"),
        (["onnx", "-v", "m0", "--precision", "int8", "--calibration-data", tmp_path / "nope",
          "--out", tmp_path / "a.onnx"], "does not exist"),
    ]
    notonnx = tmp_path / "x.onnx"
    notonnx.write_bytes(b"\x00garbage" * 10)
    cases.append((["check", notonnx], "not an ONNX model"))
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(d / "m0_b1.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    cases.append((["check", foreign], "--variant"))
    cases.append((["check", tmp_path / "model.bin"], "does not exist"))
    mobile = tmp_path / "m0.ort"  # onnxruntime's mobile format: no target claims it
    mobile.write_bytes(b"\x00" * 64)
    cases.append((["check", mobile], "not an artifact evit-export knows"))
    for args, needle in cases:
        code, _, err = run_cli(capsys, *args)
        assert needle in assert_one_line_error(code, err), (args, err)
    # A value outside an option's choices is typer's usage error: exit 2, naming the option.
    for option, value in (("--precision", "int4"), ("--quant-format", "qint")):
        code, _, err = run_cli(capsys, "onnx", "-v", "m0", "--precision", "int8", option, value,
                               "--out", tmp_path / "a.onnx")
        assert_usage_error(code, err, option, value)
    # A foreign ONNX file checks fine once told what it is.
    code, _, err = run_cli(capsys, "check", foreign, "--variant", "m0", "--checkpoint", d / "m0.pth", "-n", "4")
    assert code == 0, err


def test_failed_export_keeps_existing_artifact(tmp_path, monkeypatch):
    deployed, spec = deploy_for_export("m0", seed=1)
    out = tmp_path / "m0.onnx"
    export_onnx(deployed, spec, out)
    before = out.read_bytes()
    def boom(proto, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("simulated failure while writing")

    monkeypatch.setattr(onnx, "save", boom)
    with pytest.raises(RuntimeError):
        export_onnx(deployed, spec, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m0.onnx.evit.json"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m0", "m1", "m2", "m3", "m4", "m5"])
def test_all_variants_match_timm(variant, tmp_path):
    ref = make_timm_model(variant, seed=21)
    torch.save(ref.state_dict(), tmp_path / "ck.pth")
    deployed, spec = deploy_for_export(variant, tmp_path / "ck.pth")
    for batch in (1, 16):
        art = export_onnx(deployed, spec, tmp_path / f"{variant}_{batch}.onnx", OnnxOptions(batch=batch))
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            want = ref(x).numpy()
        got = _ort(art.path, x.numpy())
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
