"""Realistic random weights for tests and demos.

The official init sets several BatchNorm gammas to zero (residual branches start
as identity), which makes whole branches vanish and hides wiring bugs. These
weights give every branch and every bias table a visible, seeded contribution.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights at PyTorch's default scale, with every BatchNorm randomised
    (gamma in [0.5, 1.5], beta and running mean ~ N(0, 0.1), running var in
    [0.5, 1.5]) and attention bias tables ~ N(0, 0.2)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = module.num_features
            module.weight.copy_(uniform(n, 0.5, 1.5))
            module.bias.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_var.copy_(uniform(n, 0.5, 1.5))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            # Same bound as PyTorch's default (kaiming_uniform with a=sqrt(5)).
            bound = module.weight[0].numel() ** -0.5
            module.weight.copy_(uniform(module.weight.shape, -bound, bound))
            if module.bias is not None:
                module.bias.copy_(uniform(module.bias.shape, -bound, bound))
    for name, p in model.named_parameters():
        if name.endswith("attention_biases"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model
