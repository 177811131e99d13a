"""Parameter and MAC counts (conv, linear and attention matmuls)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from evit_export.models.efficientvit import VARIANTS, EfficientViT


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: torch.nn.Module, img_size: int) -> int:
    """Multiply-accumulates of one 1x3xSxS forward: torch's FLOP counter covers
    convolutions, linear layers and matmuls, at 2 FLOPs per MAC."""
    x = torch.zeros(1, 3, img_size, img_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def variant_table(num_classes: int = 1000, img_size: int = 224) -> list[dict]:
    rows = []
    for name, cfg in VARIANTS.items():
        model = EfficientViT(name, num_classes=num_classes, img_size=img_size).eval()
        rows.append({
            "name": name,
            "timm_name": f"efficientvit_{name}",
            "params": count_params(model),
            "macs": count_macs(model, img_size),
            "img_size": img_size,
            "num_classes": num_classes,
            "paper_top1": cfg.paper_top1,
            "paper_top5": cfg.paper_top5,
            "embed_dim": list(cfg.embed_dim),
            "depth": list(cfg.depth),
            "num_heads": list(cfg.num_heads),
            "kernels": list(cfg.kernels),
        })
    return rows
