"""TFLite export options: one frozen dataclass, validated once when it is built."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from evit_export.core.errors import UserError

from evit_export.targets.base import PrecisionNotApplicable, TargetOptions, cli_option, enum_choice
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE, check_calibration_source


class Quantize(StrEnum):
    NONE = "none"  # fp32
    FP16 = "fp16"  # fp16 weights
    DYNAMIC = "dynamic"  # int8 weights, activations quantized on the fly
    INT8 = "int8"  # full-integer, calibrated


class InputType(StrEnum):
    FLOAT = "float"  # the normalized image, like ONNX
    UINT8 = "uint8"  # raw RGB pixels 0..255, normalization in the graph (full-integer only)


class Layout(StrEnum):
    NHWC = "nhwc"
    NCHW = "nchw"


# The spec's precision label for each quantize mode.
PRECISION = {Quantize.NONE: "fp32", Quantize.FP16: "fp16", Quantize.DYNAMIC: "dynamic", Quantize.INT8: "int8"}
SWEEP_QUANTIZE = {"fp32": Quantize.NONE, "fp16": Quantize.FP16, "int8": Quantize.INT8}


@dataclass(frozen=True)
class TFLiteOptions(TargetOptions):
    # The command line calls it --precision like every format (fp32 = no quantization).
    quantize: Quantize = cli_option(Quantize.NONE, "fp32, fp16, dynamic (int8 weights) or int8 (calibrated).",
                                    flag="--precision", aliases=("--quantize", "-q"),
                                    choices=("fp32", "fp16", "dynamic", "int8"))
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

    def __post_init__(self):
        quantize = "none" if str(self.quantize).lower() == "fp32" else self.quantize
        object.__setattr__(self, "quantize", enum_choice(Quantize, quantize, "quantize"))
        object.__setattr__(self, "input_type", enum_choice(InputType, self.input_type, "input_type"))
        object.__setattr__(self, "layout", enum_choice(Layout, self.layout, "layout"))
        int8 = self.quantize == Quantize.INT8
        if self.input_type == InputType.UINT8 and not int8:
            raise UserError("input_type=uint8 needs full-integer quantization: add quantize=int8 (or use input_type=float)")
        if self.batch is None or self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1 (TFLite models here have a fixed batch)")
        if self.calibration_size < 1:
            raise UserError(f"calibration_size={self.calibration_size} must be at least 1")
        check_calibration_source(self.calibration_data, int8, flag="quantize=int8")
        if self.float_attention and not int8:
            raise UserError("float_attention= only applies to quantize=int8: drop it or add quantize=int8")
        if self.float_attention and self.input_type == InputType.UINT8:
            raise UserError("float_attention= keeps float ops, but input_type=uint8 is for full-integer models "
                            "(NNAPI / Edge TPU): use input_type=float, or drop float_attention=")

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None,
                      calibration_size: int = DEFAULT_CALIBRATION_SIZE, batch: int = 1) -> TFLiteOptions:
        if precision not in SWEEP_QUANTIZE:
            raise PrecisionNotApplicable(f"TFLite has no {precision} export: choose one of "
                                         f"{', '.join(SWEEP_QUANTIZE)}")
        quantize = SWEEP_QUANTIZE[precision]
        return cls(quantize=quantize, batch=batch, calibration_size=calibration_size,
                   calibration_data=calibration_data if quantize == Quantize.INT8 else None)

    @property
    def precision(self) -> str:
        """The spec's precision label: fp32 | fp16 | dynamic | int8."""
        return PRECISION[self.quantize]

    def precision_label(self) -> str:
        if self.quantize == Quantize.DYNAMIC:
            return "int8 weights (dynamic-range activations)"
        if self.quantize == Quantize.INT8 and self.float_attention:
            return "int8 (attention core in float)"
        return self.precision
