"""EfficientViT M0–M5 (Liu et al., CVPR 2023), training form.

Module and parameter names follow timm's ``efficientvit_msra`` layout
(``patch_embed.convN``, ``stages.N.downsample``/``blocks``, ``conv``/``bn``/``linear``)
so timm state dicts load with no renaming; the official model-zoo layout is
renamed in ``checkpoint.py``. Each foldable module carries its own ``fuse()``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VariantConfig:
    name: str
    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    kernels: tuple[int, ...]
    paper_top1: float
    paper_top5: float
    key_dim: tuple[int, int, int] = (16, 16, 16)
    window_size: tuple[int, int, int] = (7, 7, 7)


# Table 1 of the paper / the official configs.
VARIANTS: dict[str, VariantConfig] = {
    cfg.name: cfg
    for cfg in (
        VariantConfig("m0", (64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5), 63.2, 85.2),
        VariantConfig("m1", (128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3), 68.4, 88.7),
        VariantConfig("m2", (128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3), 70.8, 90.2),
        VariantConfig("m3", (128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5), 73.4, 91.4),
        VariantConfig("m4", (128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3), 74.3, 91.8),
        VariantConfig("m5", (192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3), 77.1, 93.4),
    )
}


def canonical_variant(name: str) -> str:
    """Accept ``m0``, ``efficientvit_m0``, ``EfficientViT_M0`` (any case)."""
    key = str(name).strip().lower()
    for prefix in ("efficientvit_", "efficientvit-", "efficientvit"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key not in VARIANTS:
        from evit_export.core.errors import UserError

        raise UserError(
            f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)} "
            "(also accepted as efficientvit_m0 or EfficientViT_M0)"
        )
    return key


def stage_resolutions(img_size: int) -> tuple[int, int, int]:
    """Token-grid side of each stage: four stride-2 convs, then two stride-2 subsamples."""
    r = img_size
    for _ in range(4):
        r = (r - 1) // 2 + 1
    r1 = r
    r2 = (r1 - 1) // 2 + 1
    r3 = (r2 - 1) // 2 + 1
    return r1, r2, r3


class ConvNorm(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv, bn = self.conv, self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        scale = bn.weight * inv_std
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, groups=conv.groups, bias=True,
                          device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class NormLinear(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=std)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        bn, linear = self.bn, self.linear
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        fused = nn.Linear(linear.in_features, linear.out_features,
                          device=linear.weight.device, dtype=linear.weight.dtype)
        fused.weight.copy_(linear.weight * scale[None, :])
        fused.bias.copy_(linear.weight @ shift + linear.bias)
        return fused


class Residual(nn.Module):
    def __init__(self, m: nn.Module, drop: float = 0.0):
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x):
        if self.training and self.drop > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device).ge_(self.drop)
            return x + self.m(x) * keep.div(1 - self.drop)
        return x + self.m(x)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class SqueezeExcite(nn.Module):
    """SE with reduction 0.25 (rounded to a multiple of 8), biases on both 1x1 convs."""

    def __init__(self, channels: int, ratio: float = 0.25):
        super().__init__()
        reduced = max(8, int(channels * ratio + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = dim * 4
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = ConvNorm(hidden, out_dim)

    def forward(self, x):
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def attention_offset_index(resolution: int) -> torch.Tensor:
    """(N, N) index into the per-head bias table; offsets numbered in first-seen order,
    which is the row-major |dy|, |dx| grid of side ``resolution``."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    n = len(points)
    return torch.tensor(idxs, dtype=torch.long).view(n, n)


class CascadedGroupAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: int, kernels: tuple[int, ...]):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.val_dim = int(attn_ratio * key_dim)
        self.resolution = resolution
        head_in = dim // num_heads
        self.qkvs = nn.ModuleList(
            ConvNorm(head_in, 2 * key_dim + self.val_dim) for _ in range(num_heads))
        self.dws = nn.ModuleList(
            ConvNorm(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim)
            for i in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.val_dim * num_heads, dim, bn_weight_init=0.0))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", attention_offset_index(resolution), persistent=False)

    def bias_table(self) -> torch.Tensor:
        """(heads, N, N) additive attention bias."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x):
        B, C, H, W = x.shape
        bias = self.bias_table()
        chunks = x.chunk(self.num_heads, dim=1)
        outs = []
        feat = chunks[0]
        for i in range(self.num_heads):
            if i > 0:
                feat = feat + chunks[i]
            feat = self.qkvs[i](feat)
            q, k, v = feat.split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            q = self.dws[i](q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k) * self.scale + bias[i]
            attn = attn.softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(B, self.val_dim, H, W)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, int, int]:
    """(B, C, H, W) -> (B*nH*nW, C, w, w), zero-padding bottom/right to a multiple of w."""
    B, C, H, W = x.shape
    pad_b, pad_r = (-H) % window, (-W) % window
    if pad_b or pad_r:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    nh, nw = (H + pad_b) // window, (W + pad_r) // window
    x = x.reshape(B, C, nh, window, nw, window).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B * nh * nw, C, window, window), nh, nw


def window_reverse(x: torch.Tensor, window: int, nh: int, nw: int, H: int, W: int) -> torch.Tensor:
    C = x.shape[1]
    x = x.reshape(-1, nh, nw, C, window, window).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(-1, C, nh * window, nw * window)
    return x[:, :, :H, :W]


class LocalWindowAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: int, window_resolution: int, kernels: tuple[int, ...]):
        super().__init__()
        self.resolution = resolution
        self.window_resolution = window_resolution
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, attn_ratio,
                                           min(window_resolution, resolution), kernels)

    def forward(self, x):
        H, W = x.shape[2], x.shape[3]
        if H <= self.window_resolution and W <= self.window_resolution:
            return self.attn(x)
        wins, nh, nw = window_partition(x, self.window_resolution)
        return window_reverse(self.attn(wins), self.window_resolution, nh, nw, H, W)


class EfficientViTBlock(nn.Module):
    """Sandwich: DW -> FFN -> cascaded group attention -> DW -> FFN, each residual."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: int, window_resolution: int, kernels: tuple[int, ...]):
        super().__init__()
        self.dw0 = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn0 = Residual(FFN(dim, dim * 2))
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, num_heads, attn_ratio, resolution,
                                                   window_resolution, kernels))
        self.dw1 = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn1 = Residual(FFN(dim, dim * 2))

    def forward(self, x):
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class Subsample(nn.Sequential):
    """DW+FFN residuals, inverted-residual patch merging with SE, DW+FFN residuals."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.res1 = nn.Sequential(Residual(ConvNorm(in_dim, in_dim, 3, 1, 1, groups=in_dim)),
                                  Residual(FFN(in_dim, in_dim * 2)))
        self.patchmerge = PatchMerging(in_dim, out_dim)
        self.res2 = nn.Sequential(Residual(ConvNorm(out_dim, out_dim, 3, 1, 1, groups=out_dim)),
                                  Residual(FFN(out_dim, out_dim * 2)))


class Stage(nn.Module):
    def __init__(self, in_dim: int, dim: int, key_dim: int, num_heads: int, depth: int,
                 resolution: int, window_resolution: int, kernels: tuple[int, ...], subsample: bool):
        super().__init__()
        self.downsample = Subsample(in_dim, dim) if subsample else nn.Identity()
        attn_ratio = dim / (key_dim * num_heads)
        self.blocks = nn.Sequential(*[
            EfficientViTBlock(dim, key_dim, num_heads, attn_ratio, resolution, window_resolution, kernels)
            for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Sequential):
    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv1 = ConvNorm(in_chans, dim // 8, 3, 2, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvNorm(dim // 8, dim // 4, 3, 2, 1)
        self.relu2 = nn.ReLU()
        self.conv3 = ConvNorm(dim // 4, dim // 2, 3, 2, 1)
        self.relu3 = nn.ReLU()
        self.conv4 = ConvNorm(dim // 2, dim, 3, 2, 1)


class EfficientViT(nn.Module):
    def __init__(self, variant: str = "m0", num_classes: int = 1000, img_size: int = 224,
                 in_chans: int = 3, distillation: bool = False, drop_path: float = 0.0):
        super().__init__()
        cfg = VARIANTS[canonical_variant(variant)]
        self.cfg = cfg
        self.num_classes = num_classes
        self.img_size = img_size
        self.distillation = distillation
        self.patch_embed = PatchEmbed(in_chans, cfg.embed_dim[0])
        resolutions = stage_resolutions(img_size)
        stages = []
        for i in range(3):
            stages.append(Stage(cfg.embed_dim[max(i - 1, 0)], cfg.embed_dim[i], cfg.key_dim[i],
                                cfg.num_heads[i], cfg.depth[i], resolutions[i], cfg.window_size[i],
                                cfg.kernels, subsample=i > 0))
        self.stages = nn.Sequential(*stages)
        self.num_features = cfg.embed_dim[-1]
        self.head = NormLinear(self.num_features, num_classes)
        if distillation:
            self.head_dist = NormLinear(self.num_features, num_classes)
        if drop_path > 0:
            for m in self.modules():
                if isinstance(m, Residual):
                    m.drop = drop_path

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = NormLinear(self.num_features, num_classes)
        if self.distillation:
            self.head_dist = NormLinear(self.num_features, num_classes)

    def no_weight_decay_keywords(self) -> tuple[str, ...]:
        return ("attention_biases", "bn.")

    def forward_features(self, x):
        return self.stages(self.patch_embed(x))

    def forward(self, x):
        x = self.forward_features(x).mean((2, 3))
        if self.distillation:
            a, b = self.head(x), self.head_dist(x)
            return (a + b) / 2 if not self.training else (a, b)
        return self.head(x)
