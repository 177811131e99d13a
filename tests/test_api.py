"""The Python API (``import evit_export``): real signatures, a cheap import, errors that
name Python parameters, and one end-to-end run on a seeded M0 exported to ONNX."""
import inspect
import subprocess
import sys

import pytest

import evit_export
from evit_export.core.jsonio import dumps_strict, loads_strict

API = ("load_model", "fold", "export", "check", "parity", "bench", "simulate", "package")
DIGITS = [str(i) for i in range(10)]


@pytest.mark.parametrize("name", API)
def test_api_functions_have_real_signatures(name):
    fn = getattr(evit_export, name)
    params = inspect.signature(fn).parameters.values()
    assert not [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)], name
    assert fn.__module__ == "evit_export.api", name
    assert len(inspect.getdoc(fn)) > 60, name


def test_layers_below_the_api_have_real_signatures():
    from evit_export.validation.check import check_artifact
    from evit_export.validation.parity import check_parity

    for fn in (check_artifact, check_parity):
        params = list(inspect.signature(fn).parameters.values())
        assert not [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        # everything after the artifact(s) is keyword-only: no 11 positional arguments again
        assert all(p.kind == p.KEYWORD_ONLY for p in params[1:]), fn.__name__


def test_import_is_cheap_and_lazy():
    code = ("import sys, evit_export\n"
            "heavy = ('torch', 'numpy', 'onnx', 'onnxruntime', 'tensorflow', 'coremltools', 'typer')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "print(evit_export.UserError.__module__, evit_export.ModelSpec.__module__)\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["[]", "evit_export.core.errors evit_export.core.spec", "False"]
    assert set(API) <= set(dir(evit_export))
    with pytest.raises(AttributeError):
        evit_export.no_such_function  # noqa: B018


@pytest.fixture(scope="module")
def seeded_m0():
    return evit_export.load_model("m0", img_size=64, num_classes=10, labels=DIGITS, seed=0)


def test_end_to_end_onnx(seeded_m0, tmp_path):
    """export -> check -> parity on a few digits -> bench, all through ``evit_export``."""
    artifact = evit_export.export(seeded_m0, "onnx", out=tmp_path / "m0.onnx")
    assert artifact.path == tmp_path / "m0.onnx"
    assert artifact.spec.img_size == 64

    report = evit_export.check(artifact.path, n=8)
    assert report.passed, report.failures
    assert report.max_abs <= 1e-4 * max(1.0, report.ref_max_abs)
    assert report.top1_agreement == 1.0
    assert report.runtime == "onnxruntime"
    assert report.inputs.startswith("8 seeded random images")
    loads_strict(dumps_strict(report.to_dict()))

    parity = evit_export.parity([artifact.path], limit=40)
    assert parity.images == 40
    assert parity.classes == DIGITS
    row = parity.artifacts[0]
    assert row.agreement == 100.0
    assert row.delta_top1 == 0.0
    assert parity.passed
    assert parity.reference.top1 < 50  # random weights: the digits are not learned, and nobody claims so

    (latency,) = evit_export.bench([artifact.path], threads=1, iterations=5)
    assert latency.runtime == "onnxruntime"
    assert latency.kind == "measured"
    assert latency.batch == 1
    assert 0 < latency.min_ms <= latency.median_ms <= latency.p90_ms
    assert latency.iterations >= 5


def test_tolerances_are_overridable(seeded_m0, tmp_path):
    artifact = evit_export.export(seeded_m0, "onnx", out=tmp_path / "m0.onnx")
    strict = evit_export.check(artifact.path, n=4, tolerances=evit_export.ToleranceOverrides(max_abs_scale=1e-12))
    assert not strict.passed
    assert "max abs error" in strict.failures[0]
    assert "1e-12" in strict.tolerance


def test_api_errors_name_python_parameters(seeded_m0, tmp_path):
    artifact = evit_export.export(seeded_m0, "onnx", out=tmp_path / "m0.onnx")
    cases = [
        (lambda: evit_export.check(artifact.path, variant="m1"), "variant="),
        (lambda: evit_export.check(artifact.path, n=0), "n=0"),
        (lambda: evit_export.ToleranceOverrides(min_top1=95), "min_top1=95"),
        (lambda: evit_export.check(tmp_path / "missing.onnx"), "does not exist"),
    ]
    for call, expected in cases:
        with pytest.raises(evit_export.UserError) as err:
            call()
        message = str(err.value)
        assert expected in message, message
        assert "--" not in message, message


def test_int8_of_a_non_digits_model_needs_real_images():
    """Issue 14: only a digits model may be judged on the embedded digits by default."""
    from evit_export.core.spec import ModelSpec
    from evit_export.validation.check import comparison_inputs

    spec = ModelSpec("m0", num_classes=3, img_size=64, labels=["cat", "dog", "fox"], precision="int8")
    with pytest.raises(evit_export.UserError, match="images=DIR"):
        comparison_inputs(spec, "int8")
    digits = ModelSpec("m0", num_classes=10, img_size=64, labels=DIGITS, precision="int8")
    pixels, described = comparison_inputs(digits, "int8")
    assert pixels.shape == (200, 3, 64, 64)
    assert "held-out digits" in described


def test_simulate_is_an_estimate(seeded_m0, tmp_path):
    from evit_export.validation.latency.profiles import all_profiles

    artifact = evit_export.export(seeded_m0, "onnx", out=tmp_path / "m0.onnx")
    device = sorted(all_profiles())[0]  # a profile of another format: refused for the artifact (issue 19.5)
    with pytest.raises(evit_export.UserError, match=device):
        evit_export.simulate(artifact.path, device)
    estimate = evit_export.simulate("m0", device, img_size=64)  # an architecture: any profile prices it
    assert estimate.kind == "estimate"
    assert estimate.device == device
    assert estimate.img_size == 64
    assert estimate.batch == 1
    assert estimate.estimate_ms > 0
    assert sum(estimate.breakdown_ms.values()) >= estimate.estimate_ms * 0.5  # the breakdown explains it
    with pytest.raises(evit_export.UserError, match="unknown device profile"):
        evit_export.simulate(artifact.path, "no-such-phone")


def test_strict_json(tmp_path):
    """What every report, --json output and JSON file goes through (issue 14)."""
    import numpy as np

    from evit_export.core.jsonio import write_json_atomic

    data = {"nan": float("nan"), "row": [np.float32(np.inf), 1.5, -float("inf")], "array": np.array([1.0, np.nan]),
            "n": np.int64(3), "pair": (1, 2)}
    assert loads_strict(dumps_strict(data)) == {"nan": None, "row": [None, 1.5, None], "array": [1.0, None],
                                                "n": 3, "pair": [1, 2]}
    for text in ("NaN", '{"x": Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError):
            loads_strict(text)
    with pytest.raises(ValueError):  # a NaN smuggled in through default= is refused, not written
        dumps_strict({"x": object()}, default=lambda o: float("nan"))
    path = write_json_atomic(tmp_path / "out.json", data)
    assert loads_strict(path.read_text())["row"][1] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
