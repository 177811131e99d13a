"""TFLite / LiteRT target: real TensorFlow conversion (in the worker process) and real
LiteRT inference, compared with PyTorch / timm."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, assert_usage_error, run_cli
from conftest import make_timm_model

from evit_export.core.preprocess import normalize, seeded_pixels
from evit_export.targets import RunnerOptions, get_target
from evit_export.targets.tflite import TFLiteOptions

ONE_THREAD = RunnerOptions(threads=1)


def _timm_checkpoint(tmp_path_factory, variant="m0", img_size=224, seed=0):
    model = make_timm_model(variant, img_size=img_size, seed=seed)
    path = tmp_path_factory.mktemp(f"ck_{variant}") / f"timm_{variant}.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def fp32_m0(tmp_path_factory):
    """M0 exported from a timm checkpoint through the CLI (the command path users take)."""
    timm_model, ck = _timm_checkpoint(tmp_path_factory)
    out = tmp_path_factory.mktemp("fp32") / "m0.tflite"
    from evit_export.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tflite", "-v", "m0", "-c", str(ck), "--out", str(out)])
    assert exc.value.code == 0
    return timm_model, ck, out


def _timm_logits(model, pixels, spec):
    with torch.no_grad():
        return model(torch.from_numpy(normalize(pixels, spec))).numpy()


def test_fp32_matches_timm_signature_metadata_labels(fp32_m0):
    timm_model, _, out = fp32_m0
    target = get_target("tflite")
    spec = target.read_spec(out)
    assert spec is not None and spec.variant == "m0" and spec.precision == "fp32"
    assert (spec.input_layout, spec.input_range, spec.input_dtype) == ("NHWC", "normalized", "float32")
    pixels = seeded_pixels(8, 224, seed=3)
    with target.open(out, options=ONE_THREAD) as runner:
        got = runner.run(pixels)
    ref = _timm_logits(timm_model, pixels, spec)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    # the named signature, as Android's runSignature sees it
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out))
    sigs = it.get_signature_list()
    assert sigs == {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}
    runner = it.get_signature_runner("serving_default")
    x = normalize(pixels[:1], spec).transpose(0, 2, 3, 1).copy()
    np.testing.assert_allclose(runner(image=x)["logits"], got[:1], rtol=0, atol=1e-5)
    # spec as flatbuffer metadata, m0.labels.txt beside, sidecar with the GPU verdict
    from evit_export.targets.base import SPEC_KEY
    from evit_export.targets.tflite.inspector import read_flatbuffer_metadata

    meta = read_flatbuffer_metadata(out.read_bytes())
    assert json.loads(meta[SPEC_KEY])["variant"] == "m0"
    labels = (out.parent / "m0.labels.txt").read_text().splitlines()
    assert labels == spec.labels and len(labels) == 1000
    side = json.loads((out.parent / "m0.tflite.evit.json").read_text())
    assert side["info"]["gpu_delegate"]["checked"] is True
    assert isinstance(side["info"]["gpu_delegate"]["compatible"], bool)


def test_inspect_and_check_cli(fp32_m0, capsys):
    _, _, out = fp32_m0
    code, stdout, _ = run_cli(capsys, "inspect", out, "--json")
    assert code == 0
    report = json.loads(stdout)
    hist = report["op_histogram"]
    assert hist["CONV_2D"] > 0 and hist["DEPTHWISE_CONV_2D"] > 0 and hist["BATCH_MATMUL"] > 0
    assert "SPLIT_V" not in hist  # XNNPACK does not delegate it (one partition per head)
    assert report["extra"]["xnnpack_partitions"] == 1
    assert report["memory_bound_ops"] > 0
    assert report["inputs"][0]["layout"] == "NHWC"
    assert 2_000_000 < report["params"] < 2_500_000
    code, stdout, _ = run_cli(capsys, "check", out, "-n", "4")
    assert code == 0, stdout


def test_changed_weight_buffer_fails_check_and_localizes(fp32_m0, tmp_path, capsys):
    _, ck, out = fp32_m0
    from evit_export.targets.tflite.inspector import constant_tensors, read_model, write_model

    model = read_model(out.read_bytes())
    # one weight buffer inside the graph: a stage-2 conv kernel (a few kB)
    buffer = next(model.buffers[b] for _, name, b in constant_tensors(model)
                  if len(model.buffers[b].data) > 4096 and "Conv2D" in name)
    weights = np.frombuffer(bytes(buffer.data), np.float32).copy()
    weights[: len(weights) // 4] *= -1.5
    buffer.data = np.frombuffer(weights.tobytes(), np.uint8).copy()
    bad = tmp_path / "m0.tflite"
    bad.write_bytes(write_model(model))
    shutil.copy(out.parent / "m0.tflite.evit.json", tmp_path / "m0.tflite.evit.json")
    code, stdout, _ = run_cli(capsys, "check", bad, "-c", ck, "-n", "4", "--localize")
    assert code == 1, stdout
    assert "first diverging layer" in stdout
    # the clean model localises nowhere
    from evit_export.models.reference import reference_model
    from evit_export.targets.torch_runner import TorchRunner
    from evit_export.validation.localize import localize

    target = get_target("tflite")
    spec = target.read_spec(out)
    ref = TorchRunner(reference_model(spec, str(ck)), spec)
    with target.open(out) as runner:
        loc = localize(ref, runner, seeded_pixels(1, 224, 0), "fp32")
    assert loc.layer is None, loc.describe()
    with target.open(bad, spec=spec) as runner:
        loc = localize(ref, runner, seeded_pixels(1, 224, 0), "fp32")
    assert loc.layer is not None and loc.checked > 0


@pytest.fixture(scope="module")
def m0_deploy():
    from evit_export.models.reference import deploy_for_export

    return deploy_for_export("m0", seed=1)


@pytest.fixture(scope="module")
def digits_calibration(tmp_path_factory):
    """Real images to calibrate on, named explicitly: only the digits model may default to them."""
    from conftest import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("calib"), 48, size=224)


def _export(m0_deploy, out, **options):
    deployed, spec = m0_deploy
    return get_target("tflite").export(deployed, spec, out, TFLiteOptions(**options))


def _compare(artifact, pixels, deployed):
    from evit_export.targets.torch_runner import TorchRunner
    from evit_export.validation.equivalence import compare_outputs

    target = get_target("tflite")
    with target.open(artifact.path, options=ONE_THREAD) as runner:
        got = runner.run(pixels)
    ref = TorchRunner(deployed, artifact.spec).run(pixels)
    return compare_outputs(ref, got, target.precision_family(artifact.spec))


def test_fp16(m0_deploy, tmp_path):
    art = _export(m0_deploy, tmp_path / "m0_fp16.tflite", quantize="fp16")
    assert art.spec.precision == "fp16"
    rep = _compare(art, seeded_pixels(16, 224, 5), m0_deploy[0])
    assert rep.cosine_min >= 0.999 and rep.passed, rep.failures
    assert art.path.stat().st_size < 6e6  # fp16 weights: about half of fp32


def test_int8_calibration_folder_float_io(m0_deploy, tmp_path):
    from conftest import write_digits_folder
    from evit_export.data import heldout_images

    root = write_digits_folder(tmp_path / "calib", 60)  # with one unreadable file: skipped, not fatal
    art = _export(m0_deploy, tmp_path / "m0_int8.tflite", quantize="int8",
                  calibration_data=root, calibration_size=48, keep_float="none")
    info = art.info
    # a fifth of the folder is held out for the check; the unreadable file is skipped wherever it falls
    assert 40 <= info["calibration"]["count"] <= 48 and 9 <= info["calibration"]["heldout"] <= 15
    assert not info["calibration"]["random"] and info["int8"]["full_integer"]
    assert info["io"]["input"]["dtype"] == "float32"
    held, _, _ = heldout_images(art.spec, 100)
    rep = _compare(art, held, m0_deploy[0])
    assert rep.top1_agreement >= 0.95, rep
    report = get_target("tflite").inspect(art.path)
    assert report.op_histogram["CONV_2D"] > 0 and "QUANTIZE" in report.op_histogram
    # Full-integer: XNNPACK leaves int8 BATCH_MATMUL and SOFTMAX to the builtin kernels.
    assert report.extra["xnnpack_partitions"] > 20, report.extra


def test_int8_float_attention_stays_in_xnnpack(m0_deploy, tmp_path, digits_calibration):
    from evit_export.data import heldout_images

    art = _export(m0_deploy, tmp_path / "m0_int8_fa.tflite", quantize="int8", float_attention=True,
                  calibration_data=digits_calibration, calibration_size=48)
    assert art.info["float_attention"] is True and art.spec.precision == "int8"
    assert any("attention core" in note for note in art.spec.notes)
    # the default keep_float (auto) keeps the 3-channel first conv float: XNNPACK runs it faster so
    assert art.info["int8"]["kept_float_for_speed"] == ["patch_embed.0"]
    assert any("patch_embed.0 kept in float because LiteRT" in note for note in art.spec.notes)
    report = get_target("tflite").inspect(art.path)
    assert report.op_histogram["DEQUANTIZE"] >= 48 and report.op_histogram["CONV_2D"] > 0
    assert report.extra["xnnpack_partitions"] < 10, report.extra
    assert art.path.stat().st_size < 4e6  # int8 weights
    held, _, _ = heldout_images(art.spec, 100)
    rep = _compare(art, held, m0_deploy[0])
    assert rep.top1_agreement >= 0.95, rep


def test_int8_uint8_pixels_in_graph(m0_deploy, tmp_path, digits_calibration):
    from evit_export.data import heldout_images

    art = _export(m0_deploy, tmp_path / "m0_u8.tflite", quantize="int8", input_type="uint8",
                  calibration_data=digits_calibration, calibration_size=48)
    io = art.info["io"]
    assert io["input"]["dtype"] == "uint8" and io["output"]["dtype"] == "uint8"
    # raw pixels go in unchanged: scale 1, zero point 0
    assert io["input"]["scale"] == pytest.approx(1.0) and io["input"]["zero_point"] == 0
    assert art.spec.input_range == "pixels" and art.spec.input_dtype == "uint8"
    held, _, _ = heldout_images(art.spec, 100)
    rep = _compare(art, held, m0_deploy[0])
    assert rep.top1_agreement >= 0.95, rep


def test_random_calibration_is_loudly_flagged(tmp_path):
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets.calibration import RANDOM_CALIBRATION_WARNING

    deployed, spec = deploy_for_export("m0", img_size=64, seed=0)
    art = get_target("tflite").export(deployed, spec, tmp_path / "r.tflite",
                                      TFLiteOptions(quantize="int8", calibration_data="random", calibration_size=8,
                                                    analyze=False))
    assert art.info["calibration"]["random"] is True
    assert RANDOM_CALIBRATION_WARNING in get_target("tflite").read_spec(art.path).notes


def test_dynamic_range(m0_deploy, tmp_path):
    from evit_export.data import heldout_images

    art = _export(m0_deploy, tmp_path / "m0_dyn.tflite", quantize="dynamic")
    assert art.spec.precision == "dynamic"
    assert art.path.stat().st_size < 4e6  # int8 weights
    held, _, _ = heldout_images(art.spec, 60)
    rep = _compare(art, held, m0_deploy[0])
    assert rep.top1_agreement >= 0.95, rep


@pytest.mark.parametrize("img_size", [200])
def test_other_input_size_nchw_batch(img_size, tmp_path):
    """13x13 tokens in stage 1: window attention padded to 14x14 (2x2 windows); odd
    sizes in the stride-2 convs; NCHW input with a fixed batch of 2."""
    from evit_export.models.reference import deploy_for_export

    deployed, spec = deploy_for_export("m0", img_size=img_size, seed=2)
    assert deployed.stages[0][0].mixer.pad == 1
    art = get_target("tflite").export(deployed, spec, tmp_path / "m0_200.tflite",
                                      TFLiteOptions(layout="nchw", batch=2))
    assert art.spec.input_layout == "NCHW" and art.spec.batch == 2
    rep = _compare(art, seeded_pixels(5, img_size, 1), deployed)  # odd count: last batch padded
    assert rep.passed, rep.failures


# --------------------------------------------------------------------------- bad input

def _assert_nothing_written(folder: Path):
    assert not [p for p in folder.iterdir() if p.name != "cal"], list(folder.iterdir())


def test_bad_inputs_exit_2_one_line(capsys, tmp_path):
    out = tmp_path / "m.tflite"
    cases = [
        ["--quantize", "int8", "--calibration-data", tmp_path / "missing"],
        ["--input", "uint8"],
        ["--input", "uint8", "--quantize", "fp16"],
        ["--calibration-data", tmp_path],
        ["--float-attention"],
        ["--float-attention", "-q", "int8", "--input", "uint8"],
    ]
    for extra in cases:
        code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", out, "--no-check", *extra)
        assert_one_line_error(code, err)
    # A value outside an option's choices is typer's usage error: exit 2, naming the option.
    for option, value in (("--quantize", "int4"), ("--layout", "nwhc")):
        code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", out, "--no-check", option, value)
        assert_usage_error(code, err, option, value)
    empty = tmp_path / "cal"
    empty.mkdir()
    code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", out, "-q", "int8", "--calibration-data", empty)
    assert "no readable images" in assert_one_line_error(code, err)
    (empty / "a.jpg").write_bytes(b"not an image")
    (empty / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", out, "-q", "int8", "--calibration-data", empty)
    assert "no readable images" in assert_one_line_error(code, err)
    _assert_nothing_written(tmp_path)


def test_unwritable_output(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # its "children" cannot be created, even by root
    code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", blocker / "m.tflite")
    assert_one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # as root, permissions are not enforced
            code, _, err = run_cli(capsys, "tflite", "-v", "m0", "--out", locked / "m.tflite")
            assert_one_line_error(code, err)
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- sweep

@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m0", "m1", "m2", "m3", "m4", "m5"])
@pytest.mark.parametrize("quantize", ["none", "fp16"])
def test_all_variants_against_timm(variant, quantize, tmp_path):
    from evit_export.models import fold, build_model
    from evit_export.validation.equivalence import compare_outputs

    timm_model = make_timm_model(variant, seed=7)
    ck = tmp_path / "timm.pth"
    torch.save(timm_model.state_dict(), ck)
    model = build_model(variant, str(ck))
    deployed = fold(model)
    target = get_target("tflite")
    art = target.export(deployed, model.spec, tmp_path / f"{variant}.tflite", TFLiteOptions(quantize=quantize))
    pixels = seeded_pixels(8, 224, 11)
    with target.open(art.path, options=ONE_THREAD) as runner:
        got = runner.run(pixels)
    ref = _timm_logits(timm_model, pixels, art.spec)
    rep = compare_outputs(ref, got, target.precision_family(art.spec))
    print(f"SWEEP {variant} {art.spec.precision}: max abs {rep.max_abs:.3g} (|ref| {rep.ref_max_abs:.3g}), "
          f"cosine min {rep.cosine_min:.6f}, top-1 {100 * rep.top1_agreement:.0f}%")
    assert rep.passed, rep.failures
