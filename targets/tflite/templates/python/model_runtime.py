"""The model's runtime for predict.py, written by evit-export for .tflite artifacts:
``Model(path).run(x)`` gives one image's logits; ``input_quantization`` is the input's
(scale, zero point) for an integer input, else None."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Model:
    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # older installs
            from tflite_runtime.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        scale, zero_point = self.input["quantization"]
        # The model's own quantisation parameters, not assumed ones.
        self.input_quantization = (scale, zero_point) if scale else None

    def run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float64)
        scale, zero_point = self.output["quantization"]
        return (y - zero_point) * scale if scale else y
