"""TFLite export options: one frozen dataclass, validated once when it is built."""
from __future__ import annotations

from dataclasses import InitVar, dataclass
from enum import StrEnum
from pathlib import Path

from evit_export.core.errors import UserError

from evit_export.targets.base import PrecisionNotApplicable, TargetOptions, cli_option, enum_choice
from evit_export.targets.calibration import (ATTENTION, DEFAULT_CALIBRATION_SIZE, INT8_MIN_COSINE_MEAN,
                                             KEEP_FLOAT_AUTO, KEEP_FLOAT_NONE, check_calibration_source,
                                             parse_keep_float)

DEFAULT_KEEP_FLOAT = f"{ATTENTION},{KEEP_FLOAT_AUTO}"


class Quantize(StrEnum):
    NONE = "fp32"  # no quantization ("none" is still accepted)
    FP16 = "fp16"  # fp16 weights
    DYNAMIC = "dynamic"  # int8 weights, activations quantized on the fly
    INT8 = "int8"  # full-integer, calibrated


class InputType(StrEnum):
    FLOAT = "float"  # the normalized image, like ONNX
    UINT8 = "uint8"  # raw RGB pixels 0..255, normalization in the graph (full-integer only)


class Layout(StrEnum):
    NHWC = "nhwc"
    NCHW = "nchw"


SWEEP_QUANTIZE = {"fp32": Quantize.NONE, "fp16": Quantize.FP16, "int8": Quantize.INT8}


@dataclass(frozen=True)
class TFLiteOptions(TargetOptions):
    # --precision like every format; --quantize / -q (and quantize= in Python) are its old name.
    precision: Quantize = cli_option(Quantize.NONE, "fp32, fp16, dynamic (int8 weights) or int8 (calibrated).",
                                     aliases=("--quantize", "-q"))
    calibration_data: str | Path | None = None  # int8: image folder, None = embedded digits, "random"
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    input_type: InputType = cli_option(InputType.FLOAT, "float (normalized image) or uint8 (raw RGB 0..255, "
                                       "normalization in the graph; needs --precision int8).", flag="--input")
    layout: Layout = cli_option(Layout.NHWC, "Input layout.")
    batch: int = cli_option(1, "Fixed batch size.", metavar="N")  # TFLite models here have a fixed batch
    # int8 only: keep q·kᵀ, softmax and attn·v in float so the whole graph stays inside
    # the XNNPACK delegate; faster on CPU, not full-integer.
    float_attention: bool = cli_option(False, "int8: keep q·kᵀ, softmax and attn·v in float so the whole graph "
                                       "runs inside XNNPACK (faster on CPU; not full-integer, so not for "
                                       "NNAPI / Edge TPU).")
    analyze: bool = True  # run TensorFlow's GPU-delegate compatibility analyzer
    # int8: what stays float. The default keeps the attention core float (XNNPACK runs
    # the whole graph) and then the fewest trailing blocks held-out images need; "none"
    # is strict full-integer (what input_type=uint8 gets, for NNAPI / Edge TPU / Hexagon).
    keep_float: str = cli_option(
        DEFAULT_KEEP_FLOAT, "int8: what stays float. Default attention,auto: the attention core, the first "
        "conv (faster in float), then the fewest blocks counted from the output that bring held-out images to --min-cosine; none: full-integer "
        "(every op int8); or NAMES, comma-separated (patch_embed.0, stages.2, stages.2.3, head, attention).",
        metavar="auto|none|NAMES")
    min_cosine: float = cli_option(INT8_MIN_COSINE_MEAN, "int8, keep-float auto: the mean logits cosine on "
                                   "held-out images to reach.", metavar="COSINE")
    calibration_method: str = cli_option("minmax", "int8: how activation ranges are set. TensorFlow's converter "
                                         "calibrates min/max only.", choices=("minmax",),
                                         metavar="minmax")

    quantize: InitVar[str | None] = None  # precision's old name, still accepted from Python

    def __post_init__(self, quantize=None):
        value = self.precision if quantize is None else quantize
        value = "fp32" if str(value).lower() == "none" else value
        object.__setattr__(self, "precision", enum_choice(Quantize, value, "precision"))
        object.__setattr__(self, "input_type", enum_choice(InputType, self.input_type, "input_type"))
        object.__setattr__(self, "layout", enum_choice(Layout, self.layout, "layout"))
        int8 = self.precision == Quantize.INT8
        if self.input_type == InputType.UINT8 and not int8:
            raise UserError("input_type=uint8 needs full-integer quantization: add precision=int8 "
                            "(or use input_type=float)")
        if self.batch is None or self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1 (TFLite models here have a fixed batch)")
        if self.calibration_size < 1:
            raise UserError(f"calibration_size={self.calibration_size} must be at least 1")
        check_calibration_source(self.calibration_data, int8, flag="precision=int8")
        if self.float_attention and not int8:
            raise UserError("float_attention= only applies to precision=int8: drop it or add precision=int8")
        if self.float_attention and self.input_type == InputType.UINT8:
            raise UserError("float_attention= keeps float ops, but input_type=uint8 is for full-integer models "
                            "(NNAPI / Edge TPU): use input_type=float, or drop float_attention=")
        self._check_keep_float()

    def _check_keep_float(self) -> None:
        if str(self.calibration_method).lower() != "minmax":
            raise UserError(f"calibration_method={self.calibration_method}: TensorFlow's converter calibrates "
                            "min/max only; drop it (ONNX offers percentile and entropy)")
        if not -1 <= self.min_cosine <= 1:
            raise UserError(f"min_cosine={self.min_cosine} is a cosine: give a value in -1..1, e.g. 0.99")
        names = parse_keep_float(self.keep_float)
        if self.input_type == InputType.UINT8:
            if names and self.keep_float != DEFAULT_KEEP_FLOAT:
                raise UserError("keep_float= keeps float ops, but input_type=uint8 is a full-integer model "
                                "(NNAPI / Edge TPU): use input_type=float, or keep_float=none")
            names = ()  # uint8 input: strict full-integer
        if self.float_attention and ATTENTION not in names:
            names = (ATTENTION, *names)
        object.__setattr__(self, "keep_float", ",".join(names) or KEEP_FLOAT_NONE)

    @property
    def full_integer(self) -> bool:
        return self.precision == Quantize.INT8 and self.keep_float == KEEP_FLOAT_NONE

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None,
                      calibration_size: int = DEFAULT_CALIBRATION_SIZE, batch: int = 1) -> TFLiteOptions:
        if precision not in SWEEP_QUANTIZE:
            raise PrecisionNotApplicable(f"TFLite has no {precision} export: choose one of "
                                         f"{', '.join(SWEEP_QUANTIZE)}")
        mode = SWEEP_QUANTIZE[precision]
        return cls(precision=mode, batch=batch, calibration_size=calibration_size,
                   calibration_data=calibration_data if mode == Quantize.INT8 else None)

    def precision_label(self) -> str:
        if self.precision == Quantize.DYNAMIC:
            return "int8 weights (dynamic-range activations)"
        if self.precision == Quantize.INT8 and not self.full_integer:
            return "int8 (some ops in float)" if self.keep_float != ATTENTION else "int8 (attention core in float)"
        return str(self.precision)
