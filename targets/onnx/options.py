"""ONNX export options: one frozen dataclass, validated once when it is built."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from evit_export.core.errors import UserError

from evit_export.targets.base import PrecisionNotApplicable, TargetOptions, cli_option, enum_choice
from evit_export.targets.calibration import (DEFAULT_CALIBRATION_SIZE, INT8_MIN_COSINE_MEAN, KEEP_FLOAT_AUTO,
                                             KEEP_FLOAT_NONE, check_calibration_source, parse_keep_float)

MIN_OPSET = 13  # Split with sizes as an input, Softmax on the last axis only
TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter's ceiling when torch does not say


class OnnxPrecision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static, calibrated (onnxruntime.quantization)


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"  # the observed range (measured best or equal on our anchors)
    PERCENTILE = "percentile"  # clip the range at the 99.999th percentile
    ENTROPY = "entropy"  # the range that keeps the histogram's KL divergence least


class WeightBits(StrEnum):
    AUTO = "auto"  # 8 where this CPU has VNNI/AMX (or is not x86), 7 otherwise
    SEVEN = "7"  # safe on every x86 CPU (no u8·s8 saturation), a little coarser
    EIGHT = "8"  # finer; on x86 without VNNI onnxruntime's kernels saturate


class AttentionLayout(StrEnum):
    AUTO = "auto"  # tokens for int8, channels otherwise (measured best for each on onnxruntime's CPU provider)
    CHANNELS = "channels"  # channel-major q/k/v: float matmuls fold the transposes (FusedMatMul)
    TOKENS = "tokens"  # token-major q/v: the transposes cancel against int8's NHWC convolutions

    def resolve(self, precision: "OnnxPrecision") -> str:
        if self != AttentionLayout.AUTO:
            return str(self)
        return str(AttentionLayout.TOKENS if precision == OnnxPrecision.INT8 else AttentionLayout.CHANNELS)


class QuantFormat(StrEnum):
    QOPERATOR = "qoperator"  # QLinearConv/QLinearMatMul: fastest on onnxruntime's CPU provider
    QDQ = "qdq"  # QuantizeLinear/DequantizeLinear pairs: what NNAPI, QNN and TensorRT expect


def parse_batch(text: str) -> int | None:
    """``--batch 4`` or ``--batch dynamic`` (a free batch dimension)."""
    if str(text).strip().lower() == "dynamic":
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"batch={text} is not a number: pass a batch size, or dynamic") from None


def supported_opsets() -> tuple[int, int]:
    import onnx
    import torch.onnx

    hi = min(onnx.defs.onnx_opset_version(), TORCHSCRIPT_MAX_OPSET)
    constants = getattr(torch.onnx, "_constants", None)  # torch names its ceiling only privately
    if constants is not None and hasattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET"):
        hi = min(hi, constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    return MIN_OPSET, hi


@dataclass(frozen=True)
class OnnxOptions(TargetOptions):
    opset: int = cli_option(17, "ONNX opset.", metavar="N")
    batch: int | None = cli_option(1, "Fixed batch size, or 'dynamic' for a free batch dimension.",
                                   metavar="N|dynamic", parse=parse_batch)  # None = a free batch dimension
    precision: OnnxPrecision = cli_option(OnnxPrecision.FP32, "fp32, fp16 or int8 (static, calibrated).")
    simplify: bool = cli_option(True, "Simplify with onnxsim (onnxslim when onnxsim fails).")
    # also write the onnxruntime mobile .ort file beside the .onnx
    ort_format: bool = cli_option(False, "Also write the onnxruntime mobile .ort file.", flag="--ort")
    calibration_data: str | Path | None = None  # int8: image folder, None = embedded digits, "random"
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    quant_format: QuantFormat = cli_option(QuantFormat.QOPERATOR, "int8: qoperator (QLinear ops, fastest on "
                                           "onnxruntime's CPU provider) or qdq (Quantize/Dequantize pairs, for "
                                           "NNAPI/QNN/TensorRT).")
    calibration_method: CalibrationMethod = cli_option(
        CalibrationMethod.MINMAX, "int8: how activation ranges are set from the calibration images: minmax, "
        "percentile or entropy.", metavar="minmax|percentile|entropy")
    keep_float: str = cli_option(
        KEEP_FLOAT_AUTO, "int8: blocks kept in float. auto: the first conv (faster in float in onnxruntime) "
        "and the fewest blocks, counted from the output, that bring held-out images to --min-cosine (and the "
        "check's SQNR and top-1); none: every op int8; or NAMES, comma-"
        "separated (patch_embed.0, stages.2, stages.2.3, head, attention).", metavar="auto|none|NAMES")
    min_cosine: float = cli_option(INT8_MIN_COSINE_MEAN, "int8, keep-float auto: the mean logits cosine on "
                                   "held-out images to reach.", metavar="COSINE")
    attention_layout: AttentionLayout = cli_option(
        AttentionLayout.AUTO, "Attention core layout (same values): channels (float matmuls fold the "
        "transposes), tokens (they cancel against int8's channels-last convolutions), auto: tokens for int8.",
        metavar="auto|channels|tokens")
    weight_bits: WeightBits = cli_option(
        WeightBits.AUTO, "int8: weight bits. auto: 8 where this CPU has VNNI/AMX or is not x86, 7 otherwise "
        "(onnxruntime's u8·s8 kernels saturate with 8-bit weights on x86 without VNNI).", metavar="auto|7|8")

    def __post_init__(self):
        # Strings are accepted from the Python API; the fields hold the enum members.
        object.__setattr__(self, "precision", enum_choice(OnnxPrecision, self.precision, "precision"))
        object.__setattr__(self, "quant_format", enum_choice(QuantFormat, self.quant_format, "quant_format"))
        object.__setattr__(self, "calibration_method",
                           enum_choice(CalibrationMethod, self.calibration_method, "calibration_method"))
        object.__setattr__(self, "weight_bits", enum_choice(WeightBits, self.weight_bits, "weight_bits"))
        object.__setattr__(self, "attention_layout",
                           enum_choice(AttentionLayout, self.attention_layout, "attention_layout"))
        object.__setattr__(self, "keep_float", ",".join(parse_keep_float(self.keep_float)) or KEEP_FLOAT_NONE)
        if not -1 <= self.min_cosine <= 1:
            raise UserError(f"min_cosine={self.min_cosine} is a cosine: give a value in -1..1, e.g. 0.99")
        lo, hi = supported_opsets()
        if not lo <= self.opset <= hi:
            raise UserError(f"opset={self.opset} is not supported here: choose {lo}..{hi}")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1, or None for a free batch dimension")
        if self.calibration_size < 1:
            raise UserError(f"calibration_size={self.calibration_size} must be at least 1")
        check_calibration_source(self.calibration_data, self.precision == OnnxPrecision.INT8,
                                 flag="precision=int8")

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None,
                      calibration_size: int = DEFAULT_CALIBRATION_SIZE, batch: int = 1) -> OnnxOptions:
        if precision not in tuple(OnnxPrecision):
            raise PrecisionNotApplicable(f"ONNX has no {precision} export: choose one of "
                                         f"{', '.join(OnnxPrecision)}")
        int8 = precision == OnnxPrecision.INT8
        return cls(batch=batch, precision=OnnxPrecision(precision),
                   calibration_data=calibration_data if int8 else None, calibration_size=calibration_size)

    def precision_label(self) -> str:
        if self.precision == OnnxPrecision.INT8:
            return f"int8 ({self.quant_format})"
        return str(self.precision)
