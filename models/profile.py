"""Parameter and MAC counts, and the per-op record of one forward pass.

MACs are counted once, here: ``op_records`` runs the model under a dispatch mode and
asks torch's own FLOP formulas (``torch.utils.flop_counter``: convolution, mm/addmm,
bmm, attention) for each aten op; ``count_macs`` sums them, and the latency simulator
(validation/latency/simulate.py) classifies the same records into op classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from evit_export.models.efficientvit import VARIANTS, EfficientViT
from evit_export.core.errors import UserError


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class OpRecord:
    op: str            # aten op name without overload, e.g. "convolution", "addmm", "bmm"
    macs: int          # multiply-accumulates (torch's FLOP formula / 2), 0 for ops without a formula
    in_elements: int   # elements of the tensor arguments (activations and weights)
    out_elements: int
    groups: int = 1    # convolution only
    kernel: int = 0    # convolution and windowed pooling: kernel height x width
    in_channels: int = 0  # convolution only: input channels
    producer: int = -1    # index of the record that produced the first tensor argument (-1: input/weight)


_WINDOWED_POOLS = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices"}


def _elements(values) -> int:
    return sum(v.numel() for v in tree_flatten(values)[0] if isinstance(v, torch.Tensor))


class _Recorder(TorchDispatchMode):
    """Records every aten op a forward pass dispatches (after autograd, so the ops a
    graph exporter would see), with torch's MAC count for it."""

    def __init__(self):
        super().__init__()
        self.records: list[OpRecord] = []
        self._producers: dict[int, int] = {}
        self._alive: list = []  # keeps outputs alive so their ids stay unique while recording

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        macs = flop_registry[packet](*args, **kwargs, out_val=out) // 2 if packet in flop_registry else 0
        name = packet.__name__.split(".")[-1]
        groups = kernel = channels = 0
        if name == "convolution":
            weight = args[1]
            groups, kernel = int(args[8]), int(weight.shape[2] * weight.shape[3]) if weight.dim() == 4 else 1
            channels = int(args[0].shape[1])
        elif name in _WINDOWED_POOLS:
            size = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
            kernel = int(size[0]) * int(size[-1])
        first = next((a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)), None)
        producer = self._producers.get(id(first), -1) if first is not None else -1
        self.records.append(OpRecord(name, int(macs), _elements((args, kwargs)), _elements(out),
                                     max(groups, 1), kernel, channels, producer))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._producers[id(t)] = len(self.records) - 1
                self._alive.append(t)
        return out


@torch.no_grad()
def op_records(model: torch.nn.Module, img_size: int, batch: int = 1) -> list[OpRecord]:
    """The aten ops of one ``batch x 3 x S x S`` forward of ``model`` (in eval mode)."""
    x = torch.zeros(batch, 3, img_size, img_size)
    recorder = _Recorder()
    with recorder:
        model.eval()(x)
    return recorder.records


def count_macs(model: torch.nn.Module, img_size: int) -> int:
    """Multiply-accumulates of one 1x3xSxS forward (convolutions, linear layers, matmuls)."""
    return sum(r.macs for r in op_records(model, img_size))


def variant_table(num_classes: int = 1000, img_size: int = 224) -> list[dict]:
    if img_size < 32:
        raise UserError(f"img_size={img_size} is too small: EfficientViT needs at least 32 pixels")
    if num_classes < 1:
        raise UserError(f"num_classes={num_classes}: a classifier needs at least 1 class")
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
