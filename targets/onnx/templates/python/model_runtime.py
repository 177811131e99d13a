"""The model's runtime for predict.py, written by evit-export for .onnx artifacts:
``Model(path).run(x)`` gives one image's logits; ``input_quantization`` is the input's
(scale, zero point) for an integer input, else None."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Model:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_quantization = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64)[0]
