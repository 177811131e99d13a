"""CoreML target: ML Program (.mlpackage) or NeuralNetwork (.mlmodel) export of the
deploy graph, and a Runner that evaluates it.

Export: ``torch.jit.trace`` of the folded deploy model -> ``coremltools.convert``.
With image input, CoreML's ImageType applies ``x/255 - mean`` per channel and the
per-channel ``1/std`` is folded into the first conv (exact: zero padding of
``(x - mean)`` stays zero after scaling, while folding the mean would not).
With the classifier output, a softmax ends the graph and ``ClassifierConfig``
gives Vision's ``VNClassificationObservation``s.

Runner: ``MLModel.predict`` on macOS; everywhere else (and with ``native=False``)
the numpy MIL interpreter of ``mil_interpreter.py``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import platform
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.preprocess import to_model_input
from evit_export.core.spec import ModelSpec

from evit_export.targets.base import (SPEC_KEY, Artifact, GraphReport, Runner, Target, TensorInfo, pad_batch, run_in_batches,
                   write_sidecar)

INTEGRITY_KEY = "evit_export.integrity"
INPUT_NAME = "image"
LOGITS_NAME = "logits"
FORMATS = ("mlprogram", "neuralnetwork")
PRECISIONS = ("fp16", "fp32")
COMPRESSIONS = ("none", "int8", "palettize6")
MIN_IOS = (13, 14, 15, 16, 17, 18)
MLPROGRAM_MIN_IOS = 15
COMPRESS_MIN_IOS = 16  # constexpr_* weight ops


def _ct():
    from evit_export.core.import_order import tf_safe

    tf_safe()
    import coremltools as ct

    return ct


# --------------------------------------------------------------------------- export

def check_labels(labels, spec: ModelSpec) -> None:
    if labels is not None and len(labels) != spec.num_classes:
        raise UserError(f"the labels file has {len(labels)} labels but the model has {spec.num_classes} "
                        f"classes: give exactly one label per class")


def check_out(out: Path, fmt: str) -> Path:
    want = ".mlpackage" if fmt == "mlprogram" else ".mlmodel"
    if out.suffix.lower() != want:
        raise UserError(f"--out {out} must end in {want} for --format {fmt}")
    return check_writable(out)


def validate_options(fmt: str, precision: str, min_ios: int | None, input_kind: str, output: str,
                     compress: str, batch: int) -> int:
    """Check the export options (no model needed); return the deployment target's iOS."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt} is unknown: choose mlprogram or neuralnetwork")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision} is not available for CoreML: choose fp16 or fp32")
    if input_kind not in ("image", "tensor"):
        raise UserError(f"--input {input_kind} is unknown: choose image or tensor")
    if output not in ("classifier", "logits"):
        raise UserError(f"--output {output} is unknown: choose classifier or logits")
    if compress not in COMPRESSIONS:
        raise UserError(f"--compress {compress} is unknown: choose none, int8 or palettize6")
    if batch < 1:
        raise UserError(f"--batch {batch} must be at least 1")
    if batch > 1 and (output == "classifier" or input_kind == "image"):
        raise UserError(f"--batch {batch} needs --input tensor --output logits: CoreML image inputs and "
                        "classifiers take one image per prediction (Vision batches requests itself)")
    if fmt == "neuralnetwork":
        if compress != "none":
            raise UserError(f"--compress {compress} needs --format mlprogram: weight compression "
                            "(coremltools.optimize) works on ML Programs only")
        if min_ios is not None and min_ios not in (13, 14):
            raise UserError(f"--min-ios {min_ios} does not fit --format neuralnetwork (iOS 13/14): pass "
                            "--min-ios 13 or 14, or use --format mlprogram for iOS 15+")
        return min_ios or 13
    if min_ios is None:
        return COMPRESS_MIN_IOS if compress != "none" else MLPROGRAM_MIN_IOS
    if min_ios not in MIN_IOS:
        raise UserError(f"--min-ios {min_ios} is not supported: choose one of 15, 16, 17, 18")
    if min_ios < MLPROGRAM_MIN_IOS:
        raise UserError(f"--min-ios {min_ios} is too low for an ML Program (needs iOS 15+): pass "
                        "--min-ios 15 or higher, or --format neuralnetwork for iOS 13/14")
    if compress != "none" and min_ios < COMPRESS_MIN_IOS:
        raise UserError(f"--compress {compress} needs --min-ios 16 or higher (compressed weight ops "
                        "arrived in iOS 16)")
    return min_ios


def _with_softmax(model):
    """The deploy model followed by a softmax: CoreML classifiers output probabilities."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return torch.softmax(self.model(x), dim=1)

    return WithSoftmax(model)


def _fold_std(model, std) -> "torch.nn.Module":
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


def _versions(ct) -> dict:
    import torch

    return {"coremltools": ct.__version__, "torch": torch.__version__.split("+")[0]}


def _package_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_coreml(model, spec: ModelSpec, out: Path, precision: str = "fp16", min_ios: int | None = None,
                  fmt: str = "mlprogram", input_kind: str = "image", output: str = "classifier",
                  labels: list[str] | None = None, compress: str = "none", batch: int = 1) -> Artifact:
    import torch

    min_ios = validate_options(fmt, precision, min_ios, input_kind, output, compress, batch)
    check_labels(labels, spec)
    out = check_out(Path(out), fmt)
    ct = _ct()

    if labels is not None:
        spec = spec.replace(labels=list(labels))
    family = {"none": precision, "int8": "int8-weights", "palettize6": "palettize6"}[compress]
    if input_kind == "image":
        spec = spec.replace(input_range="pixels", input_layout="NCHW", input_dtype="uint8")
    else:
        spec = spec.replace(input_range="normalized", input_layout="NCHW", input_dtype="float32")
    spec = spec.replace(precision=family, batch=batch)
    spec.toolchain.update(_versions(ct))

    size = spec.img_size
    net = model.eval()
    if input_kind == "image":
        net = _fold_std(net, spec.std)
    if output == "classifier":
        net = _with_softmax(net)
    started = time.perf_counter()
    example = torch.zeros(batch, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace would re-run and compare the model (2/3 of tracing time); the
        # equivalence check after export compares the artifact itself.
        traced = torch.jit.trace(net.eval(), example, check_trace=False)
    shape = (batch, 3, size, size)
    if input_kind == "image":
        inputs = [ct.ImageType(name=INPUT_NAME, shape=shape, scale=1 / 255.0,
                               bias=[-m for m in spec.mean], color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
    kwargs = {}
    if output == "classifier":
        kwargs["classifier_config"] = ct.ClassifierConfig(list(spec.labels))
    else:
        kwargs["outputs"] = [ct.TensorType(name=LOGITS_NAME)]
    target = getattr(ct.target, f"iOS{min_ios}")
    if fmt == "mlprogram":
        kwargs["compute_precision"] = (ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
    with _validate_once():
        mlmodel = _quiet(lambda: ct.convert(traced, inputs=inputs, convert_to=fmt,
                                            minimum_deployment_target=target, **kwargs))
    program = getattr(mlmodel, "_mil_program", None)
    if program is not None:
        program.validate()
    if fmt == "neuralnetwork" and precision == "fp16":
        from coremltools.models.neural_network import quantization_utils

        mlmodel = _quiet(lambda: quantization_utils.quantize_weights(mlmodel, nbits=16))
    convert_seconds = time.perf_counter() - started

    info = {"format": fmt, "precision": precision, "compress": compress, "min_ios": min_ios,
            "input": input_kind, "output": output, "batch": batch,
            "convert_seconds": round(convert_seconds, 2)}
    if compress != "none":
        with tempfile.TemporaryDirectory() as d:
            plain = Path(d) / "plain.mlpackage"
            mlmodel.save(str(plain))
            info["size_before_compression"] = _package_size(plain)
        mlmodel = _quiet(lambda: _compress(ct, mlmodel, compress))
    _set_metadata(mlmodel, spec, input_kind, output, compress)

    with atomic_path(out, directory=(fmt == "mlprogram")) as tmp:
        if fmt == "mlprogram":
            # save() wants the .mlpackage suffix; build in a scratch dir beside the output.
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            try:
                built = scratch / out.name
                mlmodel.save(str(built))
                _seal(built)
                shutil.move(str(built), str(tmp))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:  # a NeuralNetwork .mlmodel is one protobuf file, weights inline
            tmp.write_bytes(mlmodel.get_spec().SerializeToString())
    info["file_size"] = _package_size(out)
    if compress != "none":
        info["size_after_compression"] = info["file_size"]
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    write_sidecar(out, spec, info)
    return Artifact(out, "coreml", spec, info)


@contextlib.contextmanager
def _validate_once():
    """coremltools re-validates the whole MIL program after each of its ~100 graph
    passes (a third of M0's conversion time). Skip those; export_coreml validates the
    final program once instead."""
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


def _quiet(fn):
    """Run a coremltools call without its progress bars and version warnings."""
    import io
    import logging

    level = logging.getLogger("coremltools").level
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn()
    finally:
        logging.getLogger("coremltools").setLevel(level)


def _compress(ct, mlmodel, how: str):
    from coremltools.optimize import coreml as cto

    if how == "int8":
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                               dtype="int8"))
        return cto.linear_quantize_weights(mlmodel, config=cfg)
    cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=6))
    return cto.palettize_weights(mlmodel, config=cfg)


def _set_metadata(mlmodel, spec: ModelSpec, input_kind: str, output: str, compress: str) -> None:
    name = f"EfficientViT-{spec.variant.upper()}"
    mlmodel.short_description = (f"{name} image classifier ({spec.num_classes} classes, "
                                 f"{spec.img_size}x{spec.img_size}), exported by evit-export")
    mlmodel.author = "evit-export (EfficientViT: Liu et al., CVPR 2023)"
    mlmodel.license = "MIT (EfficientViT reference architecture); weights: see their source"
    mlmodel.version = spec.toolchain.get("evit-export", "0")
    meta = mlmodel.user_defined_metadata
    meta[SPEC_KEY] = spec.to_json()
    meta["variant"] = spec.variant
    meta["img_size"] = str(spec.img_size)
    meta["num_classes"] = str(spec.num_classes)
    meta["mean"] = json.dumps(list(spec.mean))
    meta["std"] = json.dumps(list(spec.std))
    meta["precision"] = spec.precision
    meta["compress"] = compress
    meta["toolchain"] = json.dumps(spec.toolchain, sort_keys=True)
    desc = mlmodel.input_description
    if input_kind == "image":
        desc[INPUT_NAME] = (f"RGB image {spec.img_size}x{spec.img_size} (resize shorter side to "
                            f"{int(spec.img_size / spec.crop_pct)}, centre crop); normalisation is built in")
    else:
        desc[INPUT_NAME] = (f"float32 NCHW image, (x/255 - mean)/std with mean {list(spec.mean)}, "
                            f"std {list(spec.std)}")
    described = mlmodel.get_spec().description
    names = [o.name for o in described.output]
    if output == "classifier":
        mlmodel.output_description[described.predictedProbabilitiesName] = "class probabilities (softmax)"
        mlmodel.output_description[described.predictedFeatureName] = "most likely class label"
    else:
        mlmodel.output_description[names[0]] = "class logits (no softmax)"


def _seal(package: Path) -> None:
    """Record digests of the program and its weights in the model's own metadata, so
    ``check`` notices a changed weight.bin or an edited program even without the sidecar."""
    from evit_export.targets.coreml.mil_interpreter import program_digests, read_model_spec, write_model_spec

    proto, model_file = read_model_spec(package)
    proto.description.metadata.userDefined[INTEGRITY_KEY] = json.dumps(program_digests(proto, package),
                                                                       sort_keys=True)
    write_model_spec(proto, model_file)


# --------------------------------------------------------------------------- runner

def _native_available() -> bool:
    return platform.system() == "Darwin"


def _native_default() -> bool:
    """Native CoreML where it exists, unless EVIT_EXPORT_COREML_NATIVE=0 asks for the
    interpreter (for ``evit-export check``, which has no CoreML-specific flags)."""
    import os

    setting = os.environ.get("EVIT_EXPORT_COREML_NATIVE", "").strip().lower()
    if setting in ("0", "false", "no"):
        return False
    return _native_available()


class CoreMLRunner(Runner):
    """Evaluates a CoreML artifact: ``MLModel.predict`` on macOS (``native``), else the
    numpy MIL interpreter. With the interpreter and a classifier artifact, ``run``
    returns the logits feeding the final softmax (``output="logits"``, tight fp32
    checks) or the declared probabilities (``output="probabilities"``)."""

    def __init__(self, path: Path, spec: ModelSpec, native: bool | None = None, compute_units: str = "ALL",
                 output: str = "logits", verify_integrity: bool = True, threads: int | None = None):
        super().__init__(spec)
        self.threads = threads
        self.path = Path(path)
        self.native = _native_default() if native is None else native
        if self.native and not _native_available():
            raise UserError("native CoreML prediction needs macOS: drop --native to use the MIL interpreter")
        self.integrity_failures: list[str] = []
        if self.native:
            ct = _ct()
            units = getattr(ct.ComputeUnit, compute_units.upper(), None)
            if units is None:
                raise UserError(f"compute units {compute_units} unknown: choose ALL, CPU_ONLY, CPU_AND_GPU, "
                                "CPU_AND_NE")
            self.name = f"coreml ({compute_units.upper()})"
            self.model = ct.models.MLModel(str(path), compute_units=units)
            self.output_kind = "logits" if self._is_logits_model() else "probabilities"
            self.batch = spec.batch
            return
        from evit_export.targets.coreml.mil_interpreter import MILProgram

        self.name = "mil-interpreter"
        self.deployment_runtime = False
        self.program = MILProgram.load(self.path, lenient=True)
        self.integrity_failures = [f"corrupt weights: {p}" for p in self.program.problems]
        if verify_integrity:
            self.integrity_failures = self.program.verify_integrity(INTEGRITY_KEY)
        self.batch = self.program.batch
        self.classifier = self.program.classify_op is not None
        self.logits_var = self.program.logits_before_softmax() if self.classifier else None
        if output not in ("logits", "probabilities"):
            raise ValueError(output)
        if self.classifier and output == "logits" and self.logits_var is not None:
            self.output_kind = "logits"
        elif self.classifier:
            self.output_kind = "probabilities"
        else:
            self.output_kind = "logits"

    def _is_logits_model(self) -> bool:
        return self.model.get_spec().description.predictedProbabilitiesName == ""

    def _feed(self, pixels: np.ndarray) -> np.ndarray:
        x = to_model_input(pixels, self.spec)
        # An image input reaches the program as the float pixel values of an 8-bit buffer.
        return x.astype(np.float32)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        if self.native:
            return run_in_batches(self._predict_native, pixels, self.batch).astype(np.float32)
        with self._limits():
            return run_in_batches(self._interpret, pixels, self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        """Inference only (inputs converted and split into artifact batches beforehand)."""
        if self.native:
            return super().timed_call(pixels)
        x = self._feed(pixels)
        size = self.batch or len(x)
        parts = [pad_batch(x[start:start + size], size) for start in range(0, len(x), size)]

        def call():
            with self._limits():
                for part in parts:
                    self.program.run({INPUT_NAME: part})
        return call

    def _limits(self):
        """numpy's BLAS threads for the interpreter: 1 unless asked (small GEMMs lose
        more to thread hand-offs than they gain, badly so on a busy machine)."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return contextlib.nullcontext()
        return threadpool_limits(self.threads or 1)

    def _interpret(self, part: np.ndarray) -> np.ndarray:
        x = self._feed(part)
        if self.output_kind == "logits" and self.classifier:
            values = self.program.run({INPUT_NAME: x}, keep=[self.logits_var])
            return values[self.logits_var].astype(np.float32)
        outs = self.program.run({INPUT_NAME: x})
        if self.classifier:
            return outs[self.program.classify_op.outputs[1][0]].astype(np.float32)
        return next(iter(outs.values())).astype(np.float32)

    def _predict_native(self, part: np.ndarray) -> np.ndarray:
        """MLModel.predict on one artifact batch: a PIL image per prediction for image
        inputs (batch 1), the whole float batch for tensor inputs."""
        from PIL import Image

        desc = self.model.get_spec().description
        if self.spec.input_range == "pixels":
            feeds = [{INPUT_NAME: Image.fromarray(np.clip(np.rint(img.transpose(1, 2, 0)), 0, 255)
                                                  .astype(np.uint8), "RGB")} for img in part]
        else:
            feeds = [{INPUT_NAME: to_model_input(part, self.spec)}]
        rows = []
        for feed in feeds:
            res = self.model.predict(feed)
            if desc.predictedProbabilitiesName:
                probs = res[desc.predictedProbabilitiesName]
                rows.append(np.array([[probs[label] for label in self.spec.labels]], np.float32))
            else:
                out = np.asarray(res[desc.output[0].name], np.float32)
                rows.append(out.reshape(-1, out.shape[-1]))
        return np.concatenate(rows)

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        if self.native:
            raise NotImplementedError("native CoreML cannot expose intermediate tensors: use --no-native")
        x = self._feed(pixels[:1])
        if self.batch and len(x) != self.batch:
            x = np.repeat(x, self.batch, axis=0)
        with self._limits():
            trace = self.program.trace({INPUT_NAME: x})
        return [(name, arr[:1] if arr.ndim and arr.shape[0] == self.batch and self.batch > 1 else arr)
                for name, arr in trace]


# --------------------------------------------------------------------------- target

class CoreMLTarget(Target):
    name = "coreml"
    suffixes = (".mlpackage", ".mlmodel")

    def export(self, model, spec, out, **options) -> Artifact:
        return export_coreml(model, spec, Path(out), **options)

    def _proto(self, path: Path):
        from evit_export.targets.coreml.mil_interpreter import read_model_spec

        return read_model_spec(Path(path))[0]

    def embedded_spec_text(self, path: Path) -> str | None:
        return self._proto(path).description.metadata.userDefined.get(SPEC_KEY) or None

    def open(self, path: Path, spec: ModelSpec | None = None, threads: int | None = None, native=None,
             compute_units: str = "ALL", output: str = "logits", verify_integrity: bool = True,
             **_) -> Runner:
        return CoreMLRunner(Path(path), self.require_spec(path, spec), native=native, compute_units=compute_units, output=output,
                            verify_integrity=verify_integrity, threads=threads)

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        proto = self._proto(path)
        spec = self.read_spec(path)

        def info(feature, role):
            kind = feature.type.WhichOneof("Type")
            if kind == "imageType":
                t = feature.type.imageType
                color = {10: "grayscale", 20: "RGB", 30: "BGR"}.get(t.colorSpace, str(t.colorSpace))
                return TensorInfo(feature.name, [1, 3, int(t.height), int(t.width)], "image", "NCHW",
                                  f"{color} 8-bit image (0..255); x/255 - mean and 1/std built in")
            if kind == "multiArrayType":
                t = feature.type.multiArrayType
                dtype = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}.get(
                    t.dataType, str(t.dataType))
                shape = [int(s) for s in t.shape]
                if role == "input":
                    rng = ("normalized ((x/255 - mean)/std), mean/std in metadata"
                           if spec is None or spec.input_range == "normalized" else spec.input_range)
                    return TensorInfo(feature.name, shape, dtype, "NCHW", rng)
                return TensorInfo(feature.name, shape, dtype, "NC", "logits")
            if kind == "dictionaryType":
                return TensorInfo(feature.name, [None], "dict[str,float]", "NC", "probabilities")
            if kind == "stringType":
                return TensorInfo(feature.name, [], "string", "-", "class label")
            return TensorInfo(feature.name, [], kind or "?", "-", "")

        return {"inputs": [info(f, "input") for f in proto.description.input],
                "outputs": [info(f, "output") for f in proto.description.output]}

    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        from evit_export.targets.coreml.mil_interpreter import program_summary

        path = Path(path)
        proto = self._proto(path)
        kind = proto.WhichOneof("Type")
        extra: dict = {"model_type": kind, "specification_version": proto.specificationVersion}
        if kind == "mlProgram":
            hist, params, more = program_summary(proto, path)
            extra.update(more)
        else:
            hist, params = _nn_summary(proto)
        report = GraphReport("coreml", hist, params, _package_size(path), extra)
        if profile:
            report.extra["note"] = "--profile is not available for CoreML artifacts (no Linux runtime)"
        return report


def _nn_summary(proto) -> tuple[Counter, int]:
    """Layer histogram and weight count of a NeuralNetwork (.mlmodel) spec."""
    nn = getattr(proto, proto.WhichOneof("Type"))
    hist: Counter = Counter()
    params = 0
    for layer in getattr(nn, "layers", []):
        kind = layer.WhichOneof("layer")
        body = getattr(layer, kind)
        if kind == "activation":  # name it by its function (relu, sigmoid, ...)
            hist[body.WhichOneof("NonlinearityType").lower()] += 1
        else:
            hist[kind] += 1
        for field in ("weights", "bias"):
            w = getattr(body, field, None)
            if w is not None and hasattr(w, "floatValue"):
                params += len(w.floatValue) or len(w.float16Value) // 2
    return hist, params
