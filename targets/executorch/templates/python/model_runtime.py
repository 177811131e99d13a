"""The model's runtime for predict.py, written by evit-export for ExecuTorch (.pte)
artifacts: ``Model(path).run(x)`` gives one image's logits; ``input_quantization`` is
None (the program takes the normalised float image)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Model:
    def __init__(self, path: Path):
        from executorch.runtime import Runtime

        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.batch = int(self.method.metadata.input_tensor_meta(0).sizes()[0])
        self.input_quantization = None

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = np.ascontiguousarray(x, np.float32)
        if len(x) < self.batch:  # a fixed-batch program: repeat the image, keep the first answer
            x = np.concatenate([x, np.repeat(x[-1:], self.batch - len(x), axis=0)])
        return np.asarray(self.method.execute((torch.from_numpy(x),))[0].numpy(), np.float64)[0]
