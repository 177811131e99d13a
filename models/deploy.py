"""Deploy form of EfficientViT: BatchNorm folded, export-friendly graph.

What changes relative to the training form, and why:
- Conv+BN and BN+Linear are folded (``fuse()`` of each module); the distillation
  head, if any, is averaged into one Linear (exact: both heads are linear).
- A residual depthwise 3x3 conv ``x + dw(x)`` becomes one depthwise conv with +1 on
  the centre tap (exact, and one Add fewer per block).
- The attention scale is folded into the query depthwise conv (weights and bias),
  and each head's relative-position bias is gathered once into a constant.
- Every reshape uses sizes fixed from the config at build time; only the batch
  dimension is left free (-1), so tracers and converters see static shapes.
- The attention core has two layouts (``attention_layout``), equal in value:
  ``channels`` keeps q, k, v channel-major and lets the runtime fold qᵀ and attnᵀ into
  its matmul (onnxruntime's FusedMatMul does, in float); ``tokens`` makes q and v
  token-major with a channels-last permute, the one transpose a channels-last runtime
  cancels against its own layout change (onnxruntime runs int8 convolutions NHWC, and
  QLinearMatMul cannot fold a transpose: 166 transposes in M0's int8 graph become 37).
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from evit_export.models.efficientvit import (FFN, CascadedGroupAttention, ConvNorm, EfficientViT, EfficientViTBlock,
                           LocalWindowAttention, PatchMerging, Residual, SqueezeExcite,
                           stage_resolutions)


@torch.no_grad()
def fold_residual_dw(conv_norm: ConvNorm) -> nn.Conv2d:
    """``x + dw(x)`` as a single depthwise conv (identity = +1 at the centre tap)."""
    conv = conv_norm.fuse()
    k = conv.kernel_size
    conv.weight[:, 0, k[0] // 2, k[1] // 2] += 1.0
    return conv


class DeployFFN(nn.Module):
    """x + pw2(relu(pw1(x)))"""

    def __init__(self, ffn: FFN):
        super().__init__()
        self.pw1 = ffn.pw1.fuse()
        self.pw2 = ffn.pw2.fuse()

    def forward(self, x):
        return x + self.pw2(F.relu(self.pw1(x)))


CHANNELS, TOKENS = "channels", "tokens"
ATTENTION_LAYOUTS = (CHANNELS, TOKENS)


class DeployAttention(nn.Module):
    """Cascaded group attention over fixed-size (res x res) token grids."""

    def __init__(self, cga: CascadedGroupAttention):
        super().__init__()
        self.layout = CHANNELS
        self.num_heads = cga.num_heads
        self.key_dim = cga.key_dim
        self.val_dim = cga.val_dim
        self.res = cga.resolution
        self.tokens = cga.resolution * cga.resolution
        self.head_in = cga.qkvs[0].conv.in_channels
        self.qkvs = nn.ModuleList(m.fuse() for m in cga.qkvs)
        dws = []
        for m in cga.dws:
            dw = m.fuse()
            with torch.no_grad():
                dw.weight.mul_(cga.scale)
                dw.bias.mul_(cga.scale)
            dws.append(dw)
        self.dws = nn.ModuleList(dws)
        self.proj = cga.proj[1].fuse()
        table = cga.bias_table().detach().clone()
        for i in range(self.num_heads):
            self.register_buffer(f"bias{i}", table[i].contiguous())

    def forward(self, x):
        # the cascade: each head reads its own channel chunk plus the previous head's output
        head = self._head_tokens if self.layout == TOKENS else self._head_channels
        chunks = torch.split(x, self.head_in, dim=1)
        outs = []
        feat = chunks[0]
        for i in range(self.num_heads):
            if i > 0:
                feat = feat + chunks[i]
            out, feat = head(i, feat)
            outs.append(out)
        if self.layout == TOKENS:
            # joined and ReLU'd token-major, so the ReLU follows the Concat directly:
            # onnxruntime's quantizer folds a ReLU into its producer's output range, and
            # behind a Transpose (which keeps its input's range) the ReLU would be lost
            r = self.res
            y = F.relu(torch.cat(outs, dim=2)).reshape(-1, r, r, self.val_dim * self.num_heads)
            return self.proj(y.permute(0, 3, 1, 2))
        return self.proj(F.relu(torch.cat(outs, dim=1)))

    def _head_channels(self, i: int, feat):
        """One head, q/k/v channel-major (d, n): (output to join, next head's input)."""
        n, kd, vd = self.tokens, self.key_dim, self.val_dim
        q, k, v = torch.split(self.qkvs[i](feat), [kd, kd, vd], dim=1)
        q = self.dws[i](q).reshape(-1, kd, n)
        attn = torch.softmax(torch.matmul(q.transpose(1, 2), k.reshape(-1, kd, n)) + getattr(self, f"bias{i}"),
                             dim=-1)
        out = torch.matmul(v.reshape(-1, vd, n), attn.transpose(1, 2)).reshape(-1, vd, self.res, self.res)
        return out, out

    def _head_tokens(self, i: int, feat):
        """Same values, q and v token-major (n, d): attn = q·k and out = attn·v need no
        transpose; the channels-last permutes cancel in an NHWC runtime."""
        n, kd, vd, r = self.tokens, self.key_dim, self.val_dim, self.res
        q, k, v = torch.split(self.qkvs[i](feat), [kd, kd, vd], dim=1)
        q = self.dws[i](q).permute(0, 2, 3, 1).reshape(-1, n, kd)
        attn = torch.softmax(torch.matmul(q, k.reshape(-1, kd, n)) + getattr(self, f"bias{i}"), dim=-1)
        out = torch.matmul(attn, v.permute(0, 2, 3, 1).reshape(-1, n, vd))
        return out, out.reshape(-1, r, r, vd).permute(0, 3, 1, 2)


class DeployWindowAttention(nn.Module):
    """x + attention, partitioning a (H, W) grid into static windows when needed."""

    def __init__(self, lwa: LocalWindowAttention, resolution: int):
        super().__init__()
        self.attn = DeployAttention(lwa.attn)
        self.dim = lwa.attn.proj[1].conv.out_channels
        self.H = self.W = resolution
        self.window = lwa.window_resolution
        self.partitioned = resolution > lwa.window_resolution
        self.pad = (-resolution) % self.window if self.partitioned else 0
        self.nh = self.nw = (resolution + self.pad) // self.window if self.partitioned else 1

    def forward(self, x):
        if not self.partitioned:
            return x + self.attn(x)
        C, w, nh, nw = self.dim, self.window, self.nh, self.nw
        y = F.pad(x, (0, self.pad, 0, self.pad)) if self.pad else x
        y = y.reshape(-1, C, nh, w, nw, w).permute(0, 2, 4, 1, 3, 5).reshape(-1, C, w, w)
        y = self.attn(y)
        y = y.reshape(-1, nh, nw, C, w, w).permute(0, 3, 1, 4, 2, 5).reshape(-1, C, nh * w, nw * w)
        if self.pad:
            y = y[:, :, : self.H, : self.W]
        return x + y


class DeployBlock(nn.Sequential):
    def __init__(self, block: EfficientViTBlock, resolution: int):
        super().__init__()
        self.dw0 = fold_residual_dw(block.dw0.m)
        self.ffn0 = DeployFFN(block.ffn0.m)
        self.mixer = DeployWindowAttention(block.mixer.m, resolution)
        self.dw1 = fold_residual_dw(block.dw1.m)
        self.ffn1 = DeployFFN(block.ffn1.m)


class DeploySqueezeExcite(nn.Module):
    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1 = copy.deepcopy(se.fc1)
        self.fc2 = copy.deepcopy(se.fc2)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class DeployPatchMerging(nn.Module):
    def __init__(self, pm: PatchMerging):
        super().__init__()
        self.conv1 = pm.conv1.fuse()
        self.conv2 = pm.conv2.fuse()
        self.se = DeploySqueezeExcite(pm.se)
        self.conv3 = pm.conv3.fuse()

    def forward(self, x):
        return self.conv3(self.se(F.relu(self.conv2(F.relu(self.conv1(x))))))


def _deploy_residual_pair(seq: nn.Sequential) -> nn.Sequential:
    dw: Residual = seq[0]
    ffn: Residual = seq[1]
    return nn.Sequential(fold_residual_dw(dw.m), DeployFFN(ffn.m))


class DeployEfficientViT(nn.Module):
    """Folded EfficientViT for a fixed input size; input is the normalized NCHW image."""

    def __init__(self, model: EfficientViT):
        super().__init__()
        pe = model.patch_embed
        self.patch_embed = nn.Sequential(pe.conv1.fuse(), nn.ReLU(), pe.conv2.fuse(), nn.ReLU(),
                                         pe.conv3.fuse(), nn.ReLU(), pe.conv4.fuse())
        resolutions = stage_resolutions(model.img_size)
        stages = []
        for i, stage in enumerate(model.stages):
            layers = []
            if not isinstance(stage.downsample, nn.Identity):
                ds = stage.downsample
                layers += [_deploy_residual_pair(ds.res1), DeployPatchMerging(ds.patchmerge),
                           _deploy_residual_pair(ds.res2)]
            layers += [DeployBlock(b, resolutions[i]) for b in stage.blocks]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        head = model.head.fuse()
        if model.distillation:
            dist = model.head_dist.fuse()
            with torch.no_grad():
                head.weight.copy_((head.weight + dist.weight) / 2)
                head.bias.copy_((head.bias + dist.bias) / 2)
        self.head = head
        self.img_size = model.img_size
        self.num_classes = model.num_classes
        self.variant = model.cfg.name

    def forward(self, x):
        x = self.stages(self.patch_embed(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def fold(model: EfficientViT) -> DeployEfficientViT:
    """Deploy form of a trained model (eval mode, no BatchNorm left); idempotent."""
    if isinstance(model, DeployEfficientViT):
        return model.eval()
    was_training = model.training
    model.eval()
    deployed = DeployEfficientViT(model).eval()
    model.train(was_training)
    for p in deployed.parameters():
        p.requires_grad_(False)
    spec = getattr(model, "spec", None)
    if spec is not None:
        deployed.spec = spec
    return deployed


@contextlib.contextmanager
def attention_layout(model: DeployEfficientViT, layout: str):
    """Trace ``model`` with its attention in ``layout`` (``channels`` or ``tokens``);
    the model is put back as it was on leaving."""
    if layout not in ATTENTION_LAYOUTS:
        raise ValueError(f"attention layout {layout!r}: choose from {', '.join(ATTENTION_LAYOUTS)}")
    modules = [m for m in model.modules() if isinstance(m, DeployAttention)]
    before = [m.layout for m in modules]
    for m in modules:
        m.layout = layout
    try:
        yield model
    finally:
        for m, old in zip(modules, before):
            m.layout = old
