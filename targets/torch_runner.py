"""The PyTorch reference Runner (the deploy model, or the training model, on CPU)."""
from __future__ import annotations

import numpy as np
import torch

from evit_export.core.preprocess import normalize

from evit_export.targets.base import Runner
from evit_export.models.deploy import DeployFFN, DeployWindowAttention


class TorchRunner(Runner):
    name = "pytorch"

    def __init__(self, model: torch.nn.Module, spec=None):
        super().__init__(spec or model.spec)
        self.model = model.eval()

    @torch.no_grad()
    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize(pixels, self.spec))
        outs = [self.model(x[i:i + 32]) for i in range(0, len(x), 32)]
        return torch.cat(outs).numpy().astype(np.float32)

    @torch.no_grad()
    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Outputs of every Conv2d/Linear and every residual block, in execution order,
        named by module path (the names ``--localize`` reports)."""

        trace: list[tuple[str, np.ndarray]] = []
        hooks = []
        kinds = (torch.nn.Conv2d, torch.nn.Linear, DeployFFN, DeployWindowAttention)
        for name, module in self.model.named_modules():
            if isinstance(module, kinds):
                hooks.append(module.register_forward_hook(
                    lambda m, i, o, name=name: trace.append((name, o.detach().numpy().copy()))))
        try:
            self.model(torch.from_numpy(normalize(pixels, self.spec)))
        finally:
            for h in hooks:
                h.remove()
        return trace
