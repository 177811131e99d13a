"""ExecuTorch export options: one frozen dataclass, validated once when it is built."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from evit_export.targets.base import PrecisionNotApplicable, TargetOptions, cli_option, enum_choice
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE, check_calibration_source

from evit_export.core.errors import UserError


class ExecuTorchPrecision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"  # weights and activations in half precision inside the delegate; fp32 in and out
    INT8 = "int8"  # PT2E static quantization with the XNNPACK quantizer, calibrated


class Backend(StrEnum):
    XNNPACK = "xnnpack"  # Android / iOS / Linux / macOS CPUs
    COREML = "coreml"  # Apple devices only: exported here, runnable only on a Mac or an iPhone


@dataclass(frozen=True)
class ExecuTorchOptions(TargetOptions):
    precision: ExecuTorchPrecision = cli_option(ExecuTorchPrecision.FP32,
                                                "fp32, fp16 or int8 (static, calibrated, XNNPACK quantizer).")
    batch: int = cli_option(1, "Fixed batch size of the program.", metavar="N")
    backend: Backend = cli_option(Backend.XNNPACK, "Delegate: xnnpack (every CPU) or coreml (Apple devices "
                                  "only; exported here, runnable only on a Mac).")
    calibration_data: str | Path | None = None  # int8: image folder, None = embedded digits, "random"
    calibration_size: int = DEFAULT_CALIBRATION_SIZE

    def __post_init__(self):
        object.__setattr__(self, "precision", enum_choice(ExecuTorchPrecision, self.precision, "precision"))
        object.__setattr__(self, "backend", enum_choice(Backend, self.backend, "backend"))
        if self.batch is None or self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1 (ExecuTorch programs here have a fixed batch)")
        if self.calibration_size < 1:
            raise UserError(f"calibration_size={self.calibration_size} must be at least 1")
        if self.backend == Backend.COREML and self.precision == ExecuTorchPrecision.INT8:
            raise UserError("backend=coreml with precision=int8 is not offered: the XNNPACK quantizer's int8 "
                            "is for the CPU; use backend=xnnpack, or precision=fp16 for CoreML")
        check_calibration_source(self.calibration_data, self.precision == ExecuTorchPrecision.INT8,
                                 flag="precision=int8")

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None,
                      calibration_size: int = DEFAULT_CALIBRATION_SIZE, batch: int = 1) -> ExecuTorchOptions:
        if precision not in tuple(ExecuTorchPrecision):
            raise PrecisionNotApplicable(f"ExecuTorch has no {precision} export: choose one of "
                                         f"{', '.join(ExecuTorchPrecision)}")
        int8 = precision == ExecuTorchPrecision.INT8
        return cls(precision=ExecuTorchPrecision(precision), batch=batch,
                   calibration_data=calibration_data if int8 else None, calibration_size=calibration_size)

    def precision_label(self) -> str:
        label = "int8 (static, per-channel weights)" if self.precision == ExecuTorchPrecision.INT8 else str(
            self.precision)
        return label if self.backend == Backend.XNNPACK else f"{label}, CoreML delegate"
