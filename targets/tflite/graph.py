"""EfficientViT as a native NHWC TensorFlow graph, built from the folded deploy weights.

Two halves, split by process boundary (see ``worker.py``):

- ``make_plan(deployed)`` runs beside PyTorch: it walks the deploy model and writes a
  JSON-able plan (layer kinds, conv strides/paddings, attention sizes) plus a flat
  dict of numpy weights. It imports nothing from TensorFlow.
- ``build_function(plan, weights, ...)`` runs in the TensorFlow worker and returns a
  ``tf.function`` over a fixed input shape. It imports nothing from torch.

Why the graph looks the way it does (each choice measured on XNNPACK, 1 thread):
- NHWC throughout, so a (B, r, r, C) token grid *is* (B, r*r, C) tokens: the
  attention's reshapes are free views and need no transposes. q·kᵀ is one
  BATCH_MATMUL with adj_y, attn·v another.
- Window partition / reverse are a 4-D transpose each ((B·nh, w, nw, w·C) with
  perm 0,2,1,3) instead of the 6-D permute of the NCHW graph.
- Stride-2 3x3 convs whose PyTorch padding (1 on every side) differs from TFLite's
  SAME (even input sizes pad bottom/right only) get an explicit top/left PAD and
  VALID padding; XNNPACK folds that PAD into the convolution.
- With a pixel input (``input_range="pixels"``), 1/(255·std) is folded into the
  first conv's weights (exact) and the mean stays an input-side subtraction
  (mean does not commute with zero padding).
"""
from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------- plan (torch side)

def _conv_meta(conv) -> dict:
    return {"stride": int(conv.stride[0]), "padding": int(conv.padding[0]), "groups": int(conv.groups),
            "kernel": int(conv.kernel_size[0]), "in": int(conv.in_channels), "out": int(conv.out_channels)}


def make_plan(deployed) -> tuple[dict, dict[str, np.ndarray]]:
    """(plan, weights) for ``build_function``; ``deployed`` is a DeployEfficientViT."""
    import torch
    from torch import nn

    from evit_export.models.deploy import DeployBlock, DeployPatchMerging

    convs = {name: _conv_meta(m) for name, m in deployed.named_modules() if isinstance(m, nn.Conv2d)}
    stages = []
    for si, stage in enumerate(deployed.stages):
        layers = []
        for li, layer in enumerate(stage):
            prefix = f"stages.{si}.{li}"
            if isinstance(layer, DeployBlock):
                mixer = layer.mixer
                attn = mixer.attn
                layers.append({
                    "kind": "block", "prefix": prefix,
                    "attn": {"heads": attn.num_heads, "key_dim": attn.key_dim, "val_dim": attn.val_dim,
                             "head_in": attn.head_in, "res": attn.res, "dim": mixer.dim,
                             "partitioned": bool(mixer.partitioned), "H": mixer.H, "W": mixer.W,
                             "window": mixer.window, "pad": mixer.pad, "nh": mixer.nh, "nw": mixer.nw}})
            elif isinstance(layer, DeployPatchMerging):
                layers.append({"kind": "patch_merging", "prefix": prefix})
            else:  # residual pair: folded depthwise conv + FFN
                layers.append({"kind": "pair", "prefix": prefix})
        stages.append(layers)
    weights = {k: v.detach().cpu().to(torch.float32).numpy().copy() for k, v in deployed.state_dict().items()}
    plan = {"img_size": int(deployed.img_size), "num_classes": int(deployed.num_classes),
            "variant": deployed.variant, "convs": convs, "stages": stages,
            "patch_embed": [f"patch_embed.{i}" for i in (0, 2, 4, 6)]}
    return plan, weights


# --------------------------------------------------------------------------- graph (TF side)

def _tf_padding(size: int, k: int, s: int, p: int):
    """TF padding for a PyTorch conv (k, s, p) on ``size``: 'SAME'/'VALID', or explicit
    (top, bottom) that must be applied with a PAD before a VALID conv."""
    out = (size + 2 * p - k) // s + 1
    bottom = max(0, (out - 1) * s + k - size - p)
    if p == 0 and bottom == 0:
        return "VALID", None
    total = max((out - 1) * s + k - size, 0)
    if (total // 2, total - total // 2) == (p, bottom):
        return "SAME", None
    return "VALID", (p, bottom)


def _split_qkv(qkv, kd: int, vd: int):
    """q, k, v channel groups. XNNPACK delegates an even SPLIT (up to 4 outputs) but
    not SPLIT_V, which would cut the graph into one delegate partition per head
    (measured: 3.3 ms instead of 2.x ms for M0); uneven groups use static slices."""
    import tensorflow as tf

    if kd == vd:
        return tf.split(qkv, 3, axis=-1)
    return qkv[..., :kd], qkv[..., kd:2 * kd], qkv[..., 2 * kd:]


class GraphBuilder:
    """Turns a plan + weights into TF ops on NHWC tensors."""

    def __init__(self, plan: dict, weights: dict[str, np.ndarray]):
        self.plan = plan
        self.w = weights

    # -- primitives
    def conv(self, x, name: str, relu: bool = False, in_scale: np.ndarray | None = None):
        import tensorflow as tf

        meta = self.plan["convs"][name]
        w = self.w[f"{name}.weight"]
        b = self.w[f"{name}.bias"]
        if in_scale is not None:
            w = w * in_scale.reshape(1, -1, 1, 1)
        k, s, p, g = meta["kernel"], meta["stride"], meta["padding"], meta["groups"]
        size = int(x.shape[1])
        padding, explicit = _tf_padding(size, k, s, p)
        if explicit is not None:
            top, bottom = explicit
            x = tf.pad(x, [[0, 0], [top, bottom], [top, bottom], [0, 0]])
        if g == 1:
            kernel = tf.constant(np.ascontiguousarray(w.transpose(2, 3, 1, 0)))
            y = tf.nn.conv2d(x, kernel, strides=s, padding=padding)
        elif g == meta["in"] == meta["out"]:
            kernel = tf.constant(np.ascontiguousarray(w.transpose(2, 3, 0, 1)))
            y = tf.nn.depthwise_conv2d(x, kernel, strides=[1, s, s, 1], padding=padding)
        else:  # not in this model family
            raise ValueError(f"grouped conv {name} (groups={g}) is not supported")
        y = tf.nn.bias_add(y, tf.constant(b))
        return tf.nn.relu(y) if relu else y

    def ffn(self, x, prefix: str):
        return x + self.conv(self.conv(x, f"{prefix}.pw1", relu=True), f"{prefix}.pw2")

    def attention(self, x, prefix: str, a: dict):
        """Cascaded group attention on (Bw, r, r, C) windows."""
        import tensorflow as tf

        heads, kd, vd, r = a["heads"], a["key_dim"], a["val_dim"], a["res"]
        n = r * r
        bw = int(x.shape[0])
        chunks = tf.split(x, heads, axis=-1) if heads > 1 else [x]
        outs = []
        feat = chunks[0]
        for i in range(heads):
            if i > 0:
                feat = feat + chunks[i]
            qkv = self.conv(feat, f"{prefix}.qkvs.{i}")
            q, k, v = _split_qkv(qkv, kd, vd)
            q = self.conv(q, f"{prefix}.dws.{i}")
            q = tf.reshape(q, [bw, n, kd])
            k = tf.reshape(k, [bw, n, kd])
            v = tf.reshape(v, [bw, n, vd])
            logits = tf.matmul(q, k, transpose_b=True) + tf.constant(self.w[f"{prefix}.bias{i}"])
            probs = tf.nn.softmax(logits, axis=-1)
            feat = tf.reshape(tf.matmul(probs, v), [bw, r, r, vd])
            outs.append(feat)
        cat = tf.concat(outs, axis=-1) if heads > 1 else outs[0]
        return self.conv(tf.nn.relu(cat), f"{prefix}.proj")

    def window_attention(self, x, prefix: str, a: dict):
        import tensorflow as tf

        if not a["partitioned"]:
            return x + self.attention(x, f"{prefix}.attn", a)
        b = int(x.shape[0])
        c, w, nh, nw, pad = a["dim"], a["window"], a["nh"], a["nw"], a["pad"]
        y = tf.pad(x, [[0, 0], [0, pad], [0, pad], [0, 0]]) if pad else x
        # (B, nh*w, nw*w, C) -> (B*nh, w, nw, w*C) -> (B*nh, nw, w, w*C) -> (B*nh*nw, w, w, C)
        y = tf.reshape(y, [b * nh, w, nw, w * c])
        y = tf.transpose(y, [0, 2, 1, 3])
        y = tf.reshape(y, [b * nh * nw, w, w, c])
        y = self.attention(y, f"{prefix}.attn", a)
        y = tf.reshape(y, [b * nh, nw, w, w * c])
        y = tf.transpose(y, [0, 2, 1, 3])
        y = tf.reshape(y, [b, nh * w, nw * w, c])
        if pad:
            y = y[:, : a["H"], : a["W"], :]
        return x + y

    def block(self, x, layer: dict):
        p = layer["prefix"]
        x = self.conv(x, f"{p}.dw0")
        x = self.ffn(x, f"{p}.ffn0")
        x = self.window_attention(x, f"{p}.mixer", layer["attn"])
        x = self.conv(x, f"{p}.dw1")
        return self.ffn(x, f"{p}.ffn1")

    def patch_merging(self, x, prefix: str):
        import tensorflow as tf

        x = self.conv(x, f"{prefix}.conv1", relu=True)
        x = self.conv(x, f"{prefix}.conv2", relu=True)
        s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        s = self.conv(s, f"{prefix}.se.fc1", relu=True)
        s = tf.sigmoid(self.conv(s, f"{prefix}.se.fc2"))
        return self.conv(x * s, f"{prefix}.conv3")

    def forward(self, x, input_range: str, mean, std):
        """``x``: NHWC float, normalized or pixels 0..255 per ``input_range``."""
        import tensorflow as tf

        in_scale = None
        if input_range == "pixels":
            mean255 = (np.asarray(mean, np.float32) * 255.0).reshape(1, 1, 1, 3)
            x = x - tf.constant(mean255)
            in_scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
        elif input_range != "normalized":
            raise ValueError(f"input_range {input_range!r} is not supported by the TFLite graph")
        # Each block's ops carry its deploy-model name (``stages.2.3/...``): the names
        # keep_float and the per-layer report use, the same as the ONNX graph's.
        pe = self.plan["patch_embed"]
        for i, name in enumerate(pe):
            with tf.name_scope(name):
                x = self.conv(x, name, relu=i < len(pe) - 1, in_scale=in_scale if i == 0 else None)
        for stage in self.plan["stages"]:
            for layer in stage:
                with tf.name_scope(layer["prefix"]):
                    x = self._layer(x, layer)
        with tf.name_scope("head"):
            x = tf.reduce_mean(x, axis=[1, 2])
            w = self.w["head.weight"]
            return tf.matmul(x, tf.constant(np.ascontiguousarray(w.T))) + tf.constant(self.w["head.bias"])

    def _layer(self, x, layer: dict):
        if layer["kind"] == "block":
            return self.block(x, layer)
        if layer["kind"] == "patch_merging":
            return self.patch_merging(x, layer["prefix"])
        x = self.conv(x, f"{layer['prefix']}.0")
        return self.ffn(x, f"{layer['prefix']}.1")


def build_function(plan: dict, weights: dict[str, np.ndarray], *, batch: int = 1, layout: str = "NHWC",
                   input_range: str = "normalized", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   input_name: str = "image", output_name: str = "logits"):
    """(concrete function, owning tf.Module): a fixed-batch ``tf.function`` returning
    {output_name: logits}. The converter needs the owner to emit a SignatureDef."""
    import tensorflow as tf

    size = plan["img_size"]
    shape = [batch, size, size, 3] if layout == "NHWC" else [batch, 3, size, size]
    builder = GraphBuilder(plan, weights)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)], autograph=False)
    def classify(image):
        x = tf.transpose(image, [0, 2, 3, 1]) if layout == "NCHW" else image
        return {output_name: builder.forward(x, input_range, mean, std)}

    owner = tf.Module()
    owner.classify = classify
    return classify.get_concrete_function(), owner
