"""CoreML export: ML Program (.mlpackage) or NeuralNetwork (.mlmodel) of the deploy graph.

``torch.jit.trace`` of the folded deploy model -> ``coremltools.convert``. With image
input, CoreML's ImageType applies ``x/255 - mean`` per channel and the per-channel
``1/std`` is folded into the first conv (exact: zero padding of ``(x - mean)`` stays
zero after scaling, while folding the mean would not). With the classifier output, a
softmax ends the graph and ``ClassifierConfig`` gives Vision's
``VNClassificationObservation``s.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.interrupt import cancellable
from evit_export.core.spec import ModelSpec

from evit_export.targets.base import SPEC_KEY, Artifact, write_sidecar
from evit_export.targets.coreml.files import coremltools, package_size, seal
from evit_export.targets.coreml.options import (Compression, CoreMLOptions, CoreMLPrecision, InputKind,
                                                ModelFormat, OutputKind)

INPUT_NAME = "image"
LOGITS_NAME = "logits"


def check_labels(labels, spec: ModelSpec) -> None:
    if labels is not None and len(labels) != spec.num_classes:
        raise UserError(f"the labels file has {len(labels)} labels but the model has {spec.num_classes} "
                        f"classes: give exactly one label per class")


def check_out(out: Path, options: CoreMLOptions) -> Path:
    """``out`` if its suffix fits the format and its folder is writable."""
    want = options.format.suffix
    if Path(out).suffix.lower() != want:
        raise UserError(f"out={out} must end in {want} for format={options.format}")
    # An .mlpackage is a folder: an existing one is replaced atomically, like any artifact.
    return check_writable(Path(out), directory=want == ".mlpackage")


def export_coreml(model, spec: ModelSpec, out: Path, options: CoreMLOptions | None = None) -> Artifact:
    """Convert, (compress,) describe and save atomically; ``model`` is the folded deploy model."""
    options = options or CoreMLOptions()
    out = check_out(Path(out), options)
    check_labels(options.labels, spec)
    ct = coremltools()  # heavy imports first: a library may install its own SIGINT handler
    # coremltools' converter swallows KeyboardInterrupt and carries on; inside this block
    # Ctrl-C still stops the export before anything is published (atomic_path checks).
    with cancellable(f"CoreML export of {out.name}"):
        started = time.perf_counter()
        spec = artifact_spec(spec, options, ct.__version__)
        mlmodel = convert(ct, trace(model, spec, options), spec, options)
        info = {"format": str(options.format), "precision": str(options.precision), "compress": str(options.compress),
                "min_ios": options.deployment_ios, "input": str(options.input), "output": str(options.output),
                "batch": options.batch, "convert_seconds": round(time.perf_counter() - started, 2)}
        if options.compress != Compression.NONE:
            # coremltools keeps a converted ML Program as a package on disk already: its size
            # is the uncompressed size (without the metadata added below, a few kB).
            info["size_before_compression"] = package_size(mlmodel.package_path)
            mlmodel = quiet(lambda: compress_weights(mlmodel, options.compress))
        describe_model(mlmodel, spec, options)
        save(mlmodel, out, options.format)
        info["file_size"] = package_size(out)
        if options.compress != Compression.NONE:
            info["size_after_compression"] = info["file_size"]
        info["export_seconds"] = round(time.perf_counter() - started, 2)
    write_sidecar(out, spec, info)
    return Artifact(out, "coreml", spec, info)


def artifact_spec(spec: ModelSpec, options: CoreMLOptions, coremltools_version: str) -> ModelSpec:
    """The spec the artifact carries: its labels, input convention, precision and tools."""
    import torch

    if options.labels is not None:
        spec = spec.replace(labels=list(options.labels))
    if options.input == InputKind.IMAGE:
        spec = spec.replace(input_range="pixels", input_layout="NCHW", input_dtype="uint8")
    else:
        spec = spec.replace(input_range="normalized", input_layout="NCHW", input_dtype="float32")
    spec = spec.replace(precision=options.spec_precision, batch=options.batch)
    spec.toolchain.update({"coremltools": coremltools_version, "torch": torch.__version__.split("+")[0]})
    return spec


def trace(model, spec: ModelSpec, options: CoreMLOptions):
    """TorchScript of the graph CoreML gets: std folded for image input, softmax for a classifier."""
    import torch

    net = model.eval()
    if options.input == InputKind.IMAGE:
        net = fold_std(net, spec.std)
    if options.output == OutputKind.CLASSIFIER:
        net = with_softmax(net)
    example = torch.zeros(options.batch, 3, spec.img_size, spec.img_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace would re-run and compare the model (2/3 of tracing time); the
        # equivalence check after export compares the artifact itself.
        return torch.jit.trace(net.eval(), example, check_trace=False)


def convert(ct, traced, spec: ModelSpec, options: CoreMLOptions):
    """``coremltools.convert`` with the inputs, outputs, target and precision of ``options``."""
    shape = (options.batch, 3, spec.img_size, spec.img_size)
    if options.input == InputKind.IMAGE:
        inputs = [ct.ImageType(name=INPUT_NAME, shape=shape, scale=1 / 255.0, bias=[-m for m in spec.mean],
                               color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
    kwargs = {}
    if options.output == OutputKind.CLASSIFIER:
        kwargs["classifier_config"] = ct.ClassifierConfig(list(spec.labels))
    else:
        kwargs["outputs"] = [ct.TensorType(name=LOGITS_NAME)]
    fp16 = options.precision == CoreMLPrecision.FP16
    if options.format == ModelFormat.MLPROGRAM:
        kwargs["compute_precision"] = ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32
    with validate_once():
        mlmodel = quiet(lambda: ct.convert(traced, inputs=inputs, convert_to=str(options.format),
                                           minimum_deployment_target=getattr(ct.target, f"iOS{options.deployment_ios}"),
                                           **kwargs))
    program = getattr(mlmodel, "_mil_program", None)
    if program is not None:
        program.validate()
    if options.format == ModelFormat.NEURALNETWORK and fp16:
        from coremltools.models.neural_network import quantization_utils

        mlmodel = quiet(lambda: quantization_utils.quantize_weights(mlmodel, nbits=16))
    return mlmodel


def fold_std(model, std):
    """A copy of ``model`` whose first conv takes ``x/255 - mean`` instead of the
    normalized image (weights scaled by 1/std per input channel; bias unchanged)."""
    import torch

    model = copy.deepcopy(model)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    if first.in_channels != 3 or first.groups != 1:
        raise RuntimeError("the first conv of the deploy model is not an RGB conv")
    with torch.no_grad():
        first.weight.div_(torch.tensor(std, dtype=first.weight.dtype).view(1, 3, 1, 1))
    return model


def with_softmax(model):
    """The deploy model followed by a softmax: CoreML classifiers output probabilities.
    (The class is made here so that importing this module does not import torch.)"""
    import torch

    class _WithSoftmax(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return torch.softmax(self.model(x), dim=1)

    return _WithSoftmax(model)


def compress_weights(mlmodel, how: Compression):
    from coremltools.optimize import coreml as cto

    if how == Compression.INT8:
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                               dtype="int8"))
        return cto.linear_quantize_weights(mlmodel, config=cfg)
    cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=6))
    return cto.palettize_weights(mlmodel, config=cfg)


def describe_model(mlmodel, spec: ModelSpec, options: CoreMLOptions) -> None:
    """Descriptions Xcode shows, and the spec and facts in the user metadata."""
    mlmodel.short_description = (f"EfficientViT-{spec.variant.upper()} image classifier ({spec.num_classes} "
                                 f"classes, {spec.img_size}x{spec.img_size}), exported by evit-export")
    mlmodel.author = "evit-export (EfficientViT: Liu et al., CVPR 2023)"
    mlmodel.license = "MIT (EfficientViT reference architecture); weights: see their source"
    mlmodel.version = spec.toolchain.get("evit-export", "0")
    mlmodel.user_defined_metadata.update({
        SPEC_KEY: spec.to_json(), "variant": spec.variant, "img_size": str(spec.img_size),
        "num_classes": str(spec.num_classes), "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
        "precision": spec.precision, "compress": str(options.compress),
        "toolchain": json.dumps(spec.toolchain, sort_keys=True)})
    if options.input == InputKind.IMAGE:
        mlmodel.input_description[INPUT_NAME] = (
            f"RGB image {spec.img_size}x{spec.img_size} (resize shorter side to "
            f"{int(spec.img_size / spec.crop_pct)}, centre crop); normalisation is built in")
    else:
        mlmodel.input_description[INPUT_NAME] = (f"float32 NCHW image, (x/255 - mean)/std with mean "
                                                 f"{list(spec.mean)}, std {list(spec.std)}")
    described = mlmodel.get_spec().description
    if options.output == OutputKind.CLASSIFIER:
        mlmodel.output_description[described.predictedProbabilitiesName] = "class probabilities (softmax)"
        mlmodel.output_description[described.predictedFeatureName] = "most likely class label"
    else:
        mlmodel.output_description[described.output[0].name] = "class logits (no softmax)"


def save(mlmodel, out: Path, fmt: ModelFormat) -> None:
    """Write ``mlmodel`` to ``out`` atomically (an ML Program sealed with its digests)."""
    if fmt == ModelFormat.NEURALNETWORK:  # one protobuf file, weights inline
        with atomic_path(out) as tmp:
            tmp.write_bytes(mlmodel.get_spec().SerializeToString())
        return
    with atomic_path(out, directory=True) as tmp:
        # save() wants the .mlpackage suffix; build in a scratch dir beside the output.
        # named like core.atomic's temporaries, so the next write sweeps one a killed run left
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
        try:
            built = scratch / out.name
            mlmodel.save(str(built))
            seal(built)
            shutil.move(str(built), str(tmp))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def validate_once():
    """coremltools re-validates the whole MIL program after each of its ~100 graph
    passes (a third of M0's conversion time). Skip those; ``convert`` validates the
    final program once instead. (coremltools has no switch for this: patched here.)"""
    try:
        from coremltools.converters.mil.mil.program import Program
    except ImportError:  # pragma: no cover - other coremltools layout: keep its checks
        yield
        return
    original = Program.validate
    Program.validate = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        Program.validate = original


def quiet(fn):
    """Run a coremltools call without its progress bars and version warnings."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn()
    finally:
        logger.setLevel(level)
