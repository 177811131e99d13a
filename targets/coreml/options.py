"""CoreML export and runner options: frozen dataclasses, validated once when built.

Importing this module imports no coremltools (the CLI builds options, and so fails
on a bad combination, before anything slow happens)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from evit_export.core.errors import UserError

from evit_export.core.spec import read_labels
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE
from evit_export.targets.base import PrecisionNotApplicable, RunnerOptions, TargetOptions, cli_option, enum_choice

MLPROGRAM_MIN_IOS = 15  # ML Programs arrived in iOS 15
COMPRESS_MIN_IOS = 16  # constexpr_* weight ops (compressed weights) arrived in iOS 16
NEURALNETWORK_IOS = (13, 14)
MLPROGRAM_IOS = (15, 16, 17, 18)


class CoreMLPrecision(StrEnum):
    FP16 = "fp16"
    FP32 = "fp32"
    # int8 weights on fp16 activations (CoreML has no int8 activations): what every other
    # format's --precision int8 means for CoreML; becomes FP16 + Compression.INT8.
    INT8 = "int8"


class ModelFormat(StrEnum):
    MLPROGRAM = "mlprogram"  # .mlpackage, iOS 15+
    NEURALNETWORK = "neuralnetwork"  # .mlmodel, iOS 13/14

    @property
    def suffix(self) -> str:
        return ".mlpackage" if self is ModelFormat.MLPROGRAM else ".mlmodel"


class InputKind(StrEnum):
    IMAGE = "image"  # a CVPixelBuffer as is; x/255 - mean and 1/std built in
    TENSOR = "tensor"  # normalized float NCHW


class OutputKind(StrEnum):
    CLASSIFIER = "classifier"  # labels + probabilities (Vision's VNClassificationObservation)
    LOGITS = "logits"


class Compression(StrEnum):
    NONE = "none"
    INT8 = "int8"  # weight-only, linear symmetric per channel
    PALETTIZE6 = "palettize6"  # 6-bit k-means look-up table

    @property
    def spec_precision(self) -> str | None:
        """The ModelSpec precision a compressed artifact records (None: the precision's own)."""
        return {Compression.INT8: "int8-weights", Compression.PALETTIZE6: "palettize6"}.get(self)


class ComputeUnits(StrEnum):
    """coremltools.ComputeUnit names (lower case here; the CLI takes any case)."""
    ALL = "all"
    CPU_ONLY = "cpu_only"
    CPU_AND_GPU = "cpu_and_gpu"
    CPU_AND_NE = "cpu_and_ne"


class RunnerOutput(StrEnum):
    LOGITS = "logits"  # of a classifier: the logits feeding its final softmax (tight fp32 checks)
    PROBABILITIES = "probabilities"  # of a classifier: its declared probabilities


@dataclass(frozen=True)
class CoreMLOptions(TargetOptions):
    precision: CoreMLPrecision = cli_option(CoreMLPrecision.FP16, "Compute precision; int8 = int8 weights on "
                                            "fp16 activations (CoreML has no int8 activations).")
    # None: the lowest the format and compression allow
    min_ios: int | None = cli_option(None, "15 to 18 (ML Program; 16+ with --compress), 13 or 14 (neuralnetwork); "
                                     "default: the lowest allowed.", metavar="VERSION")
    format: ModelFormat = cli_option(ModelFormat.MLPROGRAM, "mlprogram (.mlpackage) or neuralnetwork (.mlmodel, "
                                     "iOS 13/14).")
    input: InputKind = cli_option(InputKind.IMAGE, "image (pass a CVPixelBuffer as is) or tensor (normalized float "
                                  "NCHW).")
    output: OutputKind = cli_option(OutputKind.CLASSIFIER, "classifier (labels + probabilities, for Vision) or "
                                    "logits.")
    # default: the spec's own (class_0, ...)
    labels: tuple[str, ...] | None = cli_option(None, "Text file, one label per line (default class_0...).",
                                                metavar="FILE", parse=read_labels)
    compress: Compression = cli_option(Compression.NONE, "Weight compression: int8 (linear) or palettize6 "
                                       "(6-bit look-up table).")
    batch: int = cli_option(1, "Fixed batch size.", metavar="N")

    def __post_init__(self):
        # Strings are accepted from the Python API; the fields hold the enum members.
        for name, kind, flag in (("precision", CoreMLPrecision, "--precision"), ("format", ModelFormat, "--format"),
                                 ("input", InputKind, "--input"), ("output", OutputKind, "--output"),
                                 ("compress", Compression, "--compress")):
            object.__setattr__(self, name, enum_choice(kind, getattr(self, name), flag))
        if self.precision == CoreMLPrecision.INT8:
            if self.compress not in (Compression.NONE, Compression.INT8):
                raise UserError(f"--precision int8 means int8 weights; --compress {self.compress} asks for other "
                                "weights: drop one of them")
            object.__setattr__(self, "precision", CoreMLPrecision.FP16)
            object.__setattr__(self, "compress", Compression.INT8)
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        self._check_batch()
        self.deployment_ios  # noqa: B018 - validates min_ios against format and compression

    def _check_batch(self) -> None:
        if self.batch < 1:
            raise UserError(f"--batch {self.batch} must be at least 1")
        if self.batch > 1 and (self.output == OutputKind.CLASSIFIER or self.input == InputKind.IMAGE):
            raise UserError(f"--batch {self.batch} needs --input tensor --output logits: CoreML image inputs and "
                            "classifiers take one image per prediction (Vision batches requests itself)")

    @property
    def deployment_ios(self) -> int:
        """The iOS version the artifact is built for: ``min_ios``, or the lowest allowed."""
        compressed = self.compress != Compression.NONE
        if self.format == ModelFormat.NEURALNETWORK:
            if compressed:
                raise UserError(f"--compress {self.compress} needs --format mlprogram: weight compression "
                                "(coremltools.optimize) works on ML Programs only")
            if self.min_ios is not None and self.min_ios not in NEURALNETWORK_IOS:
                raise UserError(f"--min-ios {self.min_ios} does not fit --format neuralnetwork (iOS 13/14): pass "
                                "--min-ios 13 or 14, or use --format mlprogram for iOS 15+")
            return self.min_ios or NEURALNETWORK_IOS[0]
        if self.min_ios is None:
            return COMPRESS_MIN_IOS if compressed else MLPROGRAM_MIN_IOS
        if self.min_ios < MLPROGRAM_MIN_IOS:
            raise UserError(f"--min-ios {self.min_ios} is too low for an ML Program (needs iOS 15+): pass "
                            "--min-ios 15 or higher, or --format neuralnetwork for iOS 13/14")
        if self.min_ios not in MLPROGRAM_IOS:
            raise UserError(f"--min-ios {self.min_ios} is not supported: choose one of 15, 16, 17, 18")
        if compressed and self.min_ios < COMPRESS_MIN_IOS:
            raise UserError(f"--compress {self.compress} needs --min-ios 16 or higher (compressed weight ops "
                            "arrived in iOS 16)")
        return self.min_ios

    @property
    def spec_precision(self) -> str:
        """The precision the artifact's ModelSpec records: fp16, fp32, int8-weights, palettize6."""
        return self.compress.spec_precision or str(self.precision)

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                      batch: int = 1) -> "CoreMLOptions":
        """fp32, fp16, or int8 = weight-only int8 compression with fp16 activations (CoreML
        has no int8 activations; weight-only quantization needs no calibration data, so
        ``calibration_data``/``calibration_size`` are unused). Batches above 1 need a
        tensor input and logits output."""
        io = {} if batch == 1 else {"input": InputKind.TENSOR, "output": OutputKind.LOGITS}
        if precision in tuple(CoreMLPrecision):  # int8: int8 weights on fp16 activations
            return cls(precision=CoreMLPrecision(precision), batch=batch, **io)
        raise PrecisionNotApplicable(f"CoreML has no {precision} export: choose fp32, fp16 or int8 (int8 weights)")

    def precision_label(self) -> str:
        if self.compress == Compression.INT8:
            return f"int8 weights ({self.precision} activations)"
        if self.compress == Compression.PALETTIZE6:
            return f"6-bit palettized weights ({self.precision} activations)"
        return str(self.precision)


@dataclass(frozen=True)
class CoreMLRunnerOptions(RunnerOptions):
    """RunnerOptions plus what only CoreML runners take."""

    # MLModel.predict (macOS) or the MIL interpreter; None: native where it runs
    native: bool | None = cli_option(None, "Check with MLModel.predict (macOS) or with the MIL interpreter; default: "
                                     "native on macOS.")
    compute_units: ComputeUnits = cli_option(ComputeUnits.ALL, "Native check: the CoreML compute units.")
    output: RunnerOutput = RunnerOutput.LOGITS  # interpreter, classifier artifacts
    verify_integrity: bool = True  # compare program and weights with the digests sealed at export

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "compute_units", enum_choice(ComputeUnits, self.compute_units, "--compute-units"))
        object.__setattr__(self, "output", enum_choice(RunnerOutput, self.output, "output"))

    @classmethod
    def of(cls, options: RunnerOptions | None) -> "CoreMLRunnerOptions":
        """``options`` as CoreML runner options (shared fields kept, the rest defaults)."""
        if isinstance(options, cls):
            return options
        if options is None:
            return cls()
        return cls(threads=options.threads, batch=options.batch)
