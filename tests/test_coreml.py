"""CoreML target: export (ML Program / NeuralNetwork, image / tensor input, classifier /
logits, compression), the numpy MIL interpreter that checks it on Linux, corruption
detection, fp16 overflow localisation and bad input."""
import json
import shutil
import sys

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from evit_export.core.errors import UserError
from evit_export.data import DIGITS_LABELS
from evit_export.models.reference import deploy_for_export
from evit_export.core.preprocess import normalize, seeded_pixels
from evit_export.targets import get_target
from evit_export.targets.torch_runner import TorchRunner
from evit_export.validation.check import check_artifact

TARGET = get_target("coreml")  # runs tf_safe() before coremltools is imported
from evit_export.targets import PrecisionNotApplicable  # noqa: E402
from evit_export.targets.base import SPEC_KEY  # noqa: E402
from evit_export.targets.coreml import CoreMLOptions, CoreMLRunnerOptions  # noqa: E402
from evit_export.targets.coreml.files import INTEGRITY_KEY, read_model_spec, write_model_spec  # noqa: E402
from evit_export.targets.coreml.mil_interpreter import MILProgram, UnsupportedOpError  # noqa: E402

LABELS = [f"thing {i}" for i in range(1000)]


def export_coreml(model, spec, out, **options):
    """Export through the target with ``CoreMLOptions(**options)``."""
    return TARGET.export(model, spec, out, CoreMLOptions(**options))


@pytest.fixture(scope="module")
def m0(tmp_path_factory):
    """One M0 (seeded realistic weights), exported three ways."""
    d = tmp_path_factory.mktemp("coreml")
    deployed, spec = deploy_for_export("m0", seed=5)
    arts = {
        "fp32_image": export_coreml(deployed, spec, d / "fp32_image.mlpackage", precision="fp32",
                                    labels=LABELS),
        "fp16_image": export_coreml(deployed, spec, d / "fp16_image.mlpackage"),  # the defaults
    }
    return d, deployed, spec, arts


def _real_images(folder, rng):
    """A few photo-like PNG/JPEGs: gradients, shapes, noise, and hard-edged colour
    bands that stay on the crop border (the pixels mean-folding would get wrong)."""
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir()
    for i, (w, h) in enumerate([(320, 256), (256, 256), (300, 420), (230, 240)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 17.0 + i)], -1)
        img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(0.8))
        arr = np.asarray(img).copy()
        arr[:, : w // 6] = (255, 0, 0) if i % 2 else (0, 0, 0)  # saturated left band
        arr[-h // 6:, :] = (255, 255, 255) if i % 2 else (0, 0, 255)  # and bottom band
        Image.fromarray(arr).save(folder / (f"img{i}.png" if i % 2 else f"img{i}.jpg"), quality=95)
    return folder


# ---------------------------------------------------------------- equivalence

def test_fp32_image_package_matches_pytorch_on_real_images(m0, tmp_path):
    d, _, _, arts = m0
    images = _real_images(tmp_path / "photos", np.random.default_rng(0))
    report = check_artifact(arts["fp32_image"].path, images=images, n=4)
    assert report.runtime == "mil-interpreter"
    assert report.precision == "fp32"
    assert report.passed, report.failures
    assert report.max_abs <= 1e-4 * max(1.0, report.ref_max_abs)
    assert report.top1_agreement == 1.0
    assert "4 images" in report.inputs


def test_image_input_border_pixels_and_folded_std(m0):
    """Frames of 0 and 255 around the image: exactly where ``x - mean`` and zero padding
    interact. The package must match the tensor-input PyTorch reference there too."""
    _, deployed, spec, arts = m0
    pixels = seeded_pixels(3, 224, seed=1)
    pixels[0, :, :3, :] = 0.0
    pixels[0, :, :, -3:] = 255.0
    pixels[1, :, :, :] = 255.0
    pixels[1, :, 100:120, 100:120] = 0.0
    pixels[2, 0, :, :2] = 255.0
    pixels[2, 1:, :, :2] = 0.0
    want = TorchRunner(deployed, spec).run(pixels)
    with TARGET.open(arts["fp32_image"].path) as runner:
        assert runner.output_kind == "logits"
        got = runner.run(pixels)
        trace = runner.tensors(pixels[:1])
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    # The package's first conv sees x/255 - mean (ImageType scale and bias), not the
    # normalized image: 1/std went into the conv weights.
    first_conv = next(i for i, (name, _) in enumerate(trace) if name.startswith("conv:"))
    conv_input = trace[first_conv - 1][1]
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    assert np.allclose(conv_input, pixels[:1] / 255.0 - mean, atol=1e-6)


def test_fp16_default_package(m0):
    _, _, _, arts = m0
    art = arts["fp16_image"]
    assert art.path.suffix == ".mlpackage"
    assert art.spec.precision == "fp16"
    assert art.info["input"] == "image"
    assert art.info["output"] == "classifier"
    assert art.info["min_ios"] == 15
    report = check_artifact(art.path, n=64)
    assert report.passed, report
    assert report.cosine_min >= 0.999, report
    assert report.top1_agreement >= 0.99, report
    # every activation of the program is fp16 apart from the input/output casts
    prog = MILProgram.load(art.path)
    dtypes = [dt for step in prog.steps for _, dt in step.outputs if dt is not None and dt != np.object_]
    assert sum(dt == np.float16 for dt in dtypes) > 0.95 * len(dtypes)


def test_classifier_output_labels_and_metadata(m0):
    _, deployed, spec, arts = m0
    path = arts["fp32_image"].path
    proto, _ = read_model_spec(path)
    desc = proto.description
    assert proto.WhichOneof("Type") == "mlProgram"
    assert desc.input[0].type.WhichOneof("Type") == "imageType"
    assert desc.predictedFeatureName == "classLabel"
    assert desc.predictedProbabilitiesName
    meta = desc.metadata
    assert "EfficientViT-M0" in meta.shortDescription
    assert meta.author
    assert meta.license
    assert meta.versionString
    user = dict(meta.userDefined)
    stored = json.loads(user[SPEC_KEY])
    assert stored["labels"][:2] == ["thing 0", "thing 1"]
    assert stored["input_range"] == "pixels"
    assert json.loads(user["mean"]) == list(spec.mean)
    assert user["variant"] == "m0"
    assert user["img_size"] == "224"
    assert "coremltools" in json.loads(user["toolchain"])
    assert INTEGRITY_KEY in user
    assert TARGET.read_spec(path).labels == LABELS
    # The declared classifier outputs: probabilities in class order and the label.
    pixels = seeded_pixels(2, 224, seed=3)
    with TARGET.open(path, options=CoreMLRunnerOptions(output="probabilities")) as runner:
        assert runner.output_kind == "probabilities"
        probs = runner.run(pixels)
        outs = runner.program.run({"image": pixels[:1]})
    ref = TorchRunner(deployed, spec).run(pixels)
    soft = np.exp(ref - ref.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    assert np.abs(probs - soft).max() < 1e-5
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert list(outs["classLabel"]) == [LABELS[int(ref[0].argmax())]]
    io = TARGET.describe(path)
    assert io["inputs"][0].dtype == "image"
    assert {t.value_range for t in io["outputs"]} == {"probabilities", "class label"}


def test_tensor_input_logits_other_size(tmp_path):
    """Tensor input, logits output, 160x160 (10x10 tokens: windows padded to 14x14)."""
    deployed, spec = deploy_for_export("m1", img_size=160, seed=2)
    art = export_coreml(deployed, spec, tmp_path / "m1_160.mlpackage", precision="fp32", input="tensor",
                        output="logits")
    assert art.spec.input_range == "normalized"
    io = TARGET.describe(art.path)
    assert io["inputs"][0].shape == [1, 3, 160, 160]
    assert io["outputs"][0].value_range == "logits"
    report = check_artifact(art.path, n=4)
    assert report.passed, report
    assert report.max_abs <= 1e-4 * max(1, report.ref_max_abs), report
    hist = TARGET.inspect(art.path).op_histogram
    assert hist["pad"] >= 1
    assert hist["slice_by_index"] >= 1
    assert "classify" not in hist


# ---------------------------------------------------------------- inspect

def test_inspect_coreml(capsys, m0):
    _, _, _, arts = m0
    code, out, err = run_cli(capsys, "inspect", arts["fp16_image"].path, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["target"] == "coreml"
    assert rep["op_histogram"]["conv"] == 116
    assert "const" not in rep["op_histogram"]
    assert rep["memory_bound_ops"] > 200
    assert 2_300_000 < rep["params"] < 2_400_000
    on_disk = sum(p.stat().st_size for p in arts["fp16_image"].path.rglob("*") if p.is_file())
    assert rep["file_size"] == on_disk
    assert rep["inputs"][0]["dtype"] == "image"


# ---------------------------------------------------------------- corruption

def _copy(src, dst):
    shutil.copytree(src, dst)
    side = src.with_name(src.name + ".evit.json")
    shutil.copy(side, dst.with_name(dst.name + ".evit.json"))
    return dst


def _main_ops(package):
    """(spec proto, model file, the main function's op list) of a saved ML Program, to edit."""
    proto, model_file = read_model_spec(package)
    fn = proto.mlProgram.functions["main"]
    return proto, model_file, fn.block_specializations[fn.opset].operations


def _weight_bin(pkg):
    return pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _flip_middle(pkg, count=32):
    data = bytearray(_weight_bin(pkg).read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0xFF
    _weight_bin(pkg).write_bytes(bytes(data))


def test_weight_bin_byte_flip_fails_check(capsys, m0, tmp_path):
    _, _, _, arts = m0
    bad = _copy(arts["fp16_image"].path, tmp_path / "flipped.mlpackage")
    _flip_middle(bad)
    code, out, err = run_cli(capsys, "check", bad, "-n", "8", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert any("weight.bin differs" in f for f in report["failures"])
    # The interpreter evaluates the damaged weights (the seal is an extra check)...
    pixels = seeded_pixels(2, 224, seed=0)
    with TARGET.open(arts["fp16_image"].path) as intact, \
            TARGET.open(bad, options=CoreMLRunnerOptions(verify_integrity=False)) as damaged:
        assert not intact.integrity_failures()
        assert not damaged.integrity_failures()
        assert np.abs(damaged.run(pixels) - intact.run(pixels)).max() > 0
    # ... and in fp32, where the tolerance is tight, the numbers alone fail it. (In fp16
    # this flip only silences one hidden FFN channel: within fp16 noise, so only the
    # seal can tell.)
    bad32 = _copy(arts["fp32_image"].path, tmp_path / "flipped32.mlpackage")
    _flip_middle(bad32)
    assert not check_artifact(bad32, n=8, runner_options=CoreMLRunnerOptions(verify_integrity=False)).passed


def test_weight_bin_corrupt_blob_header_fails_check(capsys, m0, tmp_path):
    _, _, _, arts = m0
    bad = _copy(arts["fp16_image"].path, tmp_path / "header.mlpackage")
    proto, _ = read_model_spec(bad)
    block = proto.mlProgram.functions["main"].block_specializations[proto.mlProgram.functions["main"].opset]
    offsets = [op.attributes["val"].blobFileValue.offset for op in block.operations
               if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"]
    data = bytearray(_weight_bin(bad).read_bytes())
    data[offsets[5]] ^= 0xFF  # the blob's sentinel
    _weight_bin(bad).write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "check", bad, "-n", "4", "--json")
    assert code == 1, err
    assert any("corrupt weights" in f for f in json.loads(out)["failures"])


def test_swapped_conv_weights_fail_check(capsys, m0, tmp_path):
    _, _, _, arts = m0
    bad = _copy(arts["fp32_image"].path, tmp_path / "swapped.mlpackage")
    proto, model_file, ops = _main_ops(bad)
    consts = {op.outputs[0].name: op for op in ops if op.type == "const"}
    by_shape = {}
    for op in ops:
        if op.type != "conv":
            continue
        w = consts.get(op.inputs["weight"].arguments[0].name)
        if w is None or w.attributes["val"].WhichOneof("value") != "blobFileValue":
            continue
        shape = tuple(d.constant.size for d in w.outputs[0].type.tensorType.dimensions)
        by_shape.setdefault(shape, []).append(w)
    pair = next(ws for shape, ws in by_shape.items() if len(ws) >= 2 and shape[2:] == (1, 1))
    a, b = pair[0].attributes["val"].blobFileValue, pair[-1].attributes["val"].blobFileValue
    a.offset, b.offset = b.offset, a.offset
    write_model_spec(proto, model_file)
    code, out, err = run_cli(capsys, "check", bad, "-n", "8", "--json")
    assert code == 1, err
    failures = json.loads(out)["failures"]
    assert any("ML Program differs" in f for f in failures)
    assert any("max abs error" in f for f in failures)  # the numbers disagree as well


# ---------------------------------------------------------------- fp16 overflow

@pytest.mark.slow  # 16 s; check --localize is tested by default on ONNX, TFLite and ExecuTorch artifacts
def test_fp16_overflow_is_localized(capsys, tmp_path):
    """An FFN whose hidden activations are scaled by 1e5 (and its output conv by 1e-5):
    the same function in fp32, but the hidden conv overflows fp16 (max 65504)."""
    from evit_export.models.checkpoint import save_project_checkpoint

    deployed, spec = deploy_for_export("m0", img_size=64, seed=4)
    ffn = deployed.stages[1][0][1]
    with torch.no_grad():
        ffn.pw1.weight.mul_(1e5)
        ffn.pw1.bias.mul_(1e5)
        ffn.pw2.weight.mul_(1e-5)
    ck = save_project_checkpoint(deployed, spec, tmp_path / "overflow.safetensors", extra={"folded": True})
    deployed2, spec2 = deploy_for_export(checkpoint=ck)
    x = torch.from_numpy(normalize(seeded_pixels(2, 64), spec2))
    assert torch.isfinite(deployed2(x)).all()  # fine in fp32
    out = tmp_path / "overflow.mlpackage"
    export_coreml(deployed2, spec2, out, precision="fp16")
    code, stdout, err = run_cli(capsys, "check", out, "-n", "4", "--localize", "--json")
    assert code == 1, err
    report = json.loads(stdout)
    assert any("non-finite" in f for f in report["failures"])
    loc = report["localization"]
    assert loc["layer"] == "stages.1.0.1.pw1", loc
    assert loc["first_nonfinite"].startswith("conv:"), loc
    # ... and that conv is the one computing pw1 in the program (the first inf there).
    prog = MILProgram.load(out)
    trace = prog.trace({"image": seeded_pixels(1, 64)})
    first_bad = next(name for name, arr in trace if not np.isfinite(arr).all())
    assert first_bad == loc["first_nonfinite"]


# ---------------------------------------------------------------- formats and compression

@pytest.mark.slow  # 15 s; the legacy format: ML Programs are the default and tested by default
def test_neuralnetwork_format(capsys, tmp_path):
    deployed, spec = deploy_for_export("m0", seed=1)
    art = export_coreml(deployed, spec, tmp_path / "m0.mlmodel", format="neuralnetwork")
    assert art.path.is_file()
    assert art.info["min_ios"] == 13
    proto, _ = read_model_spec(art.path)
    assert proto.WhichOneof("Type") == "neuralNetworkClassifier"
    assert proto.specificationVersion <= 4
    assert TARGET.read_spec(art.path).variant == "m0"
    rep = TARGET.inspect(art.path)
    assert rep.op_histogram["convolution"] == 116
    assert rep.memory_bound_ops > 0
    # The interpreter evaluates ML Programs only: a clear one-line error, exit 2.
    code, _, err = run_cli(capsys, "check", art.path, "-n", "2")
    assert "ML Programs only" in assert_one_line_error(code, err)


def test_int8_compression_cli(capsys, tmp_path):
    """A digits-labelled M0: int8 artifacts are judged on real images, and the export
    command's check has the held-out digits for a digits model only."""
    out = tmp_path / "m0_int8.mlpackage"
    labels = tmp_path / "digits.txt"
    labels.write_text("\n".join(DIGITS_LABELS) + "\n")
    code, stdout, err = run_cli(capsys, "coreml", "-v", "m0", "--seed", "2", "--num-classes", "10", "--labels", labels,
                                "--compress", "int8", "-o", out, "-n", "16")
    assert code == 0, err
    assert "weight compression int8" in stdout
    assert "PASS" in stdout
    info = json.loads(out.with_name(out.name + ".evit.json").read_text())["info"]
    assert info["min_ios"] == 16
    assert info["size_after_compression"] < 0.6 * info["size_before_compression"]
    assert TARGET.read_spec(out).precision == "int8-weights"
    assert TARGET.inspect(out).op_histogram["constexpr_affine_dequantize"] > 50


def test_options_for_sweep_precisions():
    """The sweep's precisions as CoreML options: int8 is weight-only int8 on fp16
    activations; batches above 1 take tensors and give logits; int4 does not exist."""
    fp32, fp16, int8 = (CoreMLOptions.for_precision(p) for p in ("fp32", "fp16", "int8"))
    assert (fp32.precision, fp32.compress, fp32.deployment_ios) == ("fp32", "none", 15)
    assert fp16.precision_label() == "fp16"
    assert fp16.spec_precision == "fp16"
    assert (int8.precision, int8.compress, int8.deployment_ios) == ("fp16", "int8", 16)
    assert int8.precision_label() == "int8 weights (fp16 activations)"
    assert int8.spec_precision == "int8-weights"
    batched = CoreMLOptions.for_precision("fp16", batch=4)
    assert (batched.batch, batched.input, batched.output) == (4, "tensor", "logits")
    with pytest.raises(PrecisionNotApplicable, match="int4"):
        CoreMLOptions.for_precision("int4")
    spec = deploy_for_export("m0", img_size=64, seed=0)[1]
    assert TARGET.precision_family(spec.replace(precision="int8-weights")) == "int8"
    assert TARGET.precision_family(spec.replace(precision="palettize6")) == "int8"
    assert TARGET.precision_family(spec.replace(precision="fp16")) == "fp16"


# ---------------------------------------------------------------- bad input

def test_bad_input(capsys, m0, tmp_path):
    _, _, _, arts = m0
    two = tmp_path / "two.txt"
    two.write_text("cat\ndog\n")
    notpkg = tmp_path / "folder.mlpackage"
    notpkg.mkdir()
    (notpkg / "readme.txt").write_text("hello")
    filepkg = tmp_path / "file.mlpackage"
    filepkg.write_bytes(b"not a folder")
    cases = [
        (["coreml", "-v", "m0", "--labels", two, "-o", tmp_path / "a.mlpackage"], "2 labels"),
        (["coreml", "-v", "m0", "--min-ios", "14", "-o", tmp_path / "a.mlpackage"], "too low for an ML Program"),
        (["coreml", "-v", "m0", "--format", "neuralnetwork", "--compress", "int8", "-o", tmp_path / "a.mlmodel"],
         "needs --format mlprogram"),
        (["coreml", "-v", "m0", "--compress", "int8", "--min-ios", "15", "-o", tmp_path / "a.mlpackage"],
         "--min-ios 16"),
        (["coreml", "-v", "m0", "--format", "neuralnetwork", "-o", tmp_path / "a.mlpackage"], ".mlmodel"),
        (["coreml", "-v", "m0", "--batch", "4", "-o", tmp_path / "a.mlpackage"], "--input tensor --output logits"),
        (["check", notpkg], "not an mlpackage"),
        (["inspect", notpkg], "not an mlpackage"),
        (["check", filepkg], "not an mlpackage"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(capsys, *args)
        assert needle in assert_one_line_error(code, err), (args, err)
    # A precision CoreML lacks: typer's usage error from the command line (exit 2, no
    # traceback), the options' one-line error from the Python API.
    code, _, err = run_cli(capsys, "coreml", "-v", "m0", "--precision", "int4", "-o", tmp_path / "a.mlpackage")
    assert code == 2, err
    assert "--precision" in err, err
    assert "int4" in err, err
    assert "Traceback" not in err, err
    with pytest.raises(UserError, match=r"--precision\W+int4"):
        CoreMLOptions(precision="int4")
    assert not (tmp_path / "a.mlpackage").exists()
    if sys.platform != "darwin":
        with pytest.raises(UserError, match="needs macOS"):
            TARGET.open(arts["fp16_image"].path, options=CoreMLRunnerOptions(native=True))


def test_unsupported_op_fails_loudly(capsys, m0, tmp_path):
    _, _, _, arts = m0
    bad = _copy(arts["fp32_image"].path, tmp_path / "gelu.mlpackage")
    proto, model_file, ops = _main_ops(bad)
    index = next(i for i, op in enumerate(ops) if op.type == "relu")
    ops[index].type = "gelu"
    ops[index].inputs["mode"].arguments.add().value.CopyFrom(ops[0].attributes["val"])
    write_model_spec(proto, model_file)
    with pytest.raises(UnsupportedOpError) as exc:
        MILProgram.load(bad)
    message = str(exc.value)
    assert "'gelu'" in message and f"op #{index}" in message and ops[index].outputs[0].name in message
    code, _, err = run_cli(capsys, "check", bad, "-n", "2")
    assert "'gelu'" in assert_one_line_error(code, err)


# ---------------------------------------------------------------- interpreter ops

def _mb_package(tmp_path, build, shapes, precision="fp32"):
    """Save a hand-written MIL program as an .mlpackage (no graph passes)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    prog = mb.program(input_specs=[mb.TensorSpec(shape=s) for s in shapes], opset_version=ct.target.iOS15)(build)
    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       minimum_deployment_target=ct.target.iOS15,
                       compute_precision=ct.precision.FLOAT32)
    path = tmp_path / f"prog_{len(list(tmp_path.iterdir()))}.mlpackage"
    model.save(str(path))
    return MILProgram.load(path)


def test_interpreter_ops_against_torch(tmp_path):
    import torch.nn.functional as F
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 6, 2, 3)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 1.5, 4).astype(np.float32)

    def build(x, y):
        c1 = mb.conv(x=x, weight=w1, bias=b1, groups=2, pad_type="same", strides=[1, 1], dilations=[2, 1])
        c2 = mb.conv(x=c1, weight=w2, pad_type="custom", pad=[1, 0, 2, 1], strides=[2, 1])
        bn = mb.batch_norm(x=c2, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3)
        p = mb.pad(x=bn, pad=[0, 1, 2, 0], mode="constant", constant_val=0.5)
        s = mb.slice_by_index(x=p, begin=[0, 1, 0, 1], end=[0, 3, 4, 0], stride=[1, 1, 2, 1],
                              begin_mask=[True, False, False, False], end_mask=[True, False, False, True])
        r = mb.reshape(x=s, shape=[2, 2, -1])
        m = mb.matmul(x=r, y=y, transpose_x=True, transpose_y=False)
        parts = mb.split(x=m, num_splits=2, axis=0)
        cat = mb.concat(values=[parts[1], parts[0]], axis=2, interleave=True)
        e = mb.expand_dims(x=cat, axes=[0])
        q = mb.squeeze(x=e, axes=[0])
        sm = mb.softmax(x=mb.sub(x=q, y=0.25), axis=1)
        red = mb.reduce_mean(x=sm, axes=[-1], keep_dims=False)
        return mb.sigmoid(x=mb.mul(x=red, y=3.0)), mb.relu(x=mb.transpose(x=q, perm=[2, 0, 1]))

    prog = _mb_package(tmp_path, build, [(2, 4, 7, 6), (2, 2, 3)])
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    y = rng.standard_normal((2, 2, 3)).astype(np.float32)
    got = prog.run({prog_input: v for prog_input, v in zip(prog.inputs, (x, y))})

    t = torch.from_numpy
    c1 = F.conv2d(F.pad(t(x), (1, 1, 2, 2)), t(w1), t(b1), groups=2, dilation=(2, 1))
    c2 = F.conv2d(F.pad(c1, (2, 1, 1, 0)), t(w2), stride=(2, 1))
    bn = F.batch_norm(c2, t(mean), t(var), t(gamma), t(beta), eps=1e-3)
    p = F.pad(bn, (2, 0, 0, 1), value=0.5)
    s = p[:, 1:3, 0:4:2, 1:]
    r = s.reshape(2, 2, -1)
    m = r.transpose(1, 2) @ t(y)
    a, b = m[1:], m[:1]
    cat = torch.stack([a, b], dim=3).reshape(1, m.shape[1], 2 * m.shape[2])
    sm = torch.softmax(cat - 0.25, dim=1)
    want0 = torch.sigmoid(sm.mean(-1) * 3.0)
    want1 = torch.relu(cat.permute(2, 0, 1))
    outs = [got[name] for name in prog.outputs]
    assert np.allclose(outs[0], want0.numpy(), atol=1e-5)
    assert np.allclose(outs[1], want1.numpy(), atol=1e-5)


def test_fp16_semantics_round_each_op_and_overflow(tmp_path):
    from coremltools.converters.mil import Builder as mb

    def build(x):
        h = mb.cast(x=x, dtype="fp16")
        big = mb.mul(x=h, y=np.float16(300.0))  # 300 * 300 = 90000 > 65504: inf in fp16
        sq = mb.mul(x=big, y=big)
        small = mb.add(x=h, y=np.float16(1e-4))  # rounds away in fp16 near 1
        return mb.cast(x=sq, dtype="fp32"), mb.cast(x=small, dtype="fp32"), mb.cast(x=h, dtype="int32")

    prog = _mb_package(tmp_path, build, [(3,)])
    x = np.array([1.0, 0.3, -2.7], np.float32)
    trace = prog.trace({next(iter(prog.inputs)): x})
    outs = prog.run({next(iter(prog.inputs)): x})
    sq, small, as_int = (outs[name] for name in prog.outputs)
    assert np.isinf(sq[0])
    assert np.isfinite(sq[1])
    assert small[0] == 1.0  # 1 + 1e-4 is 1 in fp16
    assert small[1] == np.float32(np.float16(np.float16(0.3) + np.float16(1e-4)))
    assert list(as_int) == [1, 0, -2]  # toward zero
    assert all(arr.dtype == np.float16 for name, arr in trace if name.startswith("mul:"))


# ---------------------------------------------------------------- the sweep

@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m0", "m1", "m2", "m3", "m4", "m5"])
def test_all_variants_fp32_and_fp16(variant, tmp_path):
    deployed, spec = deploy_for_export(variant, seed=11)
    rows = {}
    for precision in ("fp32", "fp16"):
        art = export_coreml(deployed, spec, tmp_path / f"{variant}_{precision}.mlpackage", precision=precision)
        report = check_artifact(art.path, n=64)
        rows[precision] = report
        print(f"{variant} {precision}: convert {art.info['convert_seconds']} s, max abs {report.max_abs:.3g} "
              f"(|ref| {report.ref_max_abs:.3g}), cosine min {report.cosine_min:.7f}, "
              f"top-1 {100 * report.top1_agreement:.1f}%")
        assert report.passed, report.failures
    assert rows["fp16"].cosine_min >= 0.999
    assert rows["fp16"].top1_agreement >= 0.99


@pytest.mark.slow
def test_palettize6(tmp_path):
    # digits labels: compressed weights are judged like int8, on the held-out digits
    deployed, spec = deploy_for_export("m0", num_classes=10, seed=2, labels=DIGITS_LABELS)
    art = export_coreml(deployed, spec, tmp_path / "p6.mlpackage", compress="palettize6")
    assert art.info["size_after_compression"] < 0.5 * art.info["size_before_compression"]
    assert TARGET.inspect(art.path).op_histogram["constexpr_lut_to_dense"] > 50
    report = check_artifact(art.path, n=16)
    print(f"palettize6: {art.info['size_before_compression']} -> {art.info['size_after_compression']} bytes, "
          f"cosine min {report.cosine_min:.5f}, top-1 {100 * report.top1_agreement:.1f}%")
    assert report.passed, report.failures
