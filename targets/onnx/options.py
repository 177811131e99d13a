"""ONNX export options: one frozen dataclass, validated once when it is built."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from evit_export.core.errors import UserError

from evit_export.targets.base import PrecisionNotApplicable, TargetOptions, cli_option, enum_choice
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE, check_calibration_source

MIN_OPSET = 13  # Split with sizes as an input, Softmax on the last axis only
TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter's ceiling when torch does not say


class OnnxPrecision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static, calibrated (onnxruntime.quantization)


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

    def __post_init__(self):
        # Strings are accepted from the Python API; the fields hold the enum members.
        object.__setattr__(self, "precision", enum_choice(OnnxPrecision, self.precision, "precision"))
        object.__setattr__(self, "quant_format", enum_choice(QuantFormat, self.quant_format, "quant_format"))
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
