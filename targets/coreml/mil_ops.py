"""numpy implementations of the MIL ops an exported EfficientViT uses.

Each op takes its resolved parameters (``p``: input name -> numpy array, python
value, or list for tuple inputs such as ``concat.values``) and returns its outputs
computed in float32 (or the input's own dtype for pure data movement). The
interpreter then stores each output in the dtype the program declares for it:
that is where fp16 rounding happens, op by op, as CoreML's fp16 execution does.

Semantics follow the MIL op definitions shipped with coremltools
(``coremltools/converters/mil/mil/ops/defs``). They are written out here because
coremltools has no numpy evaluator for ops on variable inputs (its value inference
runs on constants only). Compressed weights (``constexpr_*``) need no code here: the
interpreter expands them with coremltools' own ``decompress``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _axis(axis, rank: int) -> int:
    axis = int(np.asarray(axis))
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------------------- conv

def _conv_pads(p, x_shape, k_shape, strides, dilations) -> list[int]:
    pad_type = str(p.get("pad_type", "valid"))
    n = len(k_shape)
    if pad_type == "valid":
        return [0] * (2 * n)
    if pad_type == "custom":
        return _ints(p["pad"])
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(x_shape, k_shape, strides, dilations):
            eff = (k - 1) * d + 1
            total = max((-(-size // s) - 1) * s + eff - size, 0)
            before = total // 2 if pad_type == "same" else (total + 1) // 2
            pads += [before, total - before]
        return pads
    raise ValueError(f"conv pad_type {pad_type!r} is not a MIL pad type")


def _depthwise(x, w, Ho, Wo, sh, sw, dh, dw, cache):
    """Depthwise conv (one filter per channel). Large kernels or small maps: gather the
    windows and do one batched product; otherwise one multiply-add per kernel tap."""
    B, C = x.shape[:2]
    kh, kw = w.shape[2:]
    if kh * kw >= 16 or Ho * Wo <= 64:
        win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :Ho, :Wo]
        cols = np.ascontiguousarray(win).reshape(B, C, Ho * Wo, kh * kw)
        wk = cache.get("wk")
        if wk is None:
            wk = cache["wk"] = np.ascontiguousarray(w[:, 0].reshape(C, kh * kw, 1))
        return np.matmul(cols, wk).reshape(B, C, Ho, Wo)
    y = np.zeros((B, C, Ho, Wo), np.float32)
    for i in range(kh):
        for j in range(kw):
            view = x[:, :, i * dh: i * dh + (Ho - 1) * sh + 1: sh, j * dw: j * dw + (Wo - 1) * sw + 1: sw]
            y += view * w[:, 0, i, j][None, :, None, None]
    return y


def _conv_plan(p, x_shape, cache) -> tuple:
    """Weights and geometry of a conv, worked out on its first call (all constant)."""
    w = f32(p["weight"])
    if len(x_shape) != 4 or w.ndim != 4:
        raise NotImplementedError("conv: only 2-D convolutions (rank-4 x and weight) are implemented")
    groups = int(p.get("groups", 1))
    strides = _ints(p.get("strides", [1, 1]))
    dil = _ints(p.get("dilations", [1, 1]))
    pads = _conv_pads(p, x_shape[2:], w.shape[2:], strides, dil)
    bias = p.get("bias")
    bias = None if bias is None else f32(bias).reshape(1, -1, 1, 1)
    cache["w"] = w
    cache["plan"] = (tuple(x_shape), w, groups, strides, dil, pads, bias)
    return cache["plan"]


def conv(p, cache):
    xin = p["x"]
    plan = cache.get("plan")
    if plan is None or plan[0] != xin.shape:
        plan = _conv_plan(p, xin.shape, cache)
    _, w, groups, (sh, sw), (dh, dw), (pt, pb, pl, pr), bias = plan
    kh, kw = w.shape[2:]
    if pt or pb or pl or pr:
        # zero-padded fp32 copy in one pass (also the fp16 -> fp32 conversion)
        B, C, H, W = xin.shape
        x = np.zeros((B, C, H + pt + pb, W + pl + pr), np.float32)
        x[:, :, pt:pt + H, pl:pl + W] = xin
    else:
        x = f32(xin)
    B, C, H, W = x.shape
    Ho = (H - ((kh - 1) * dh + 1)) // sh + 1
    Wo = (W - ((kw - 1) * dw + 1)) // sw + 1
    cout = w.shape[0]
    cin_g = w.shape[1]
    if cin_g * groups != C:
        raise ValueError(f"conv: weight expects {cin_g * groups} input channels, x has {C}")
    if groups == 1 and kh == kw == 1:
        xs = x[:, :, ::sh, ::sw][:, :, :Ho, :Wo] if (sh, sw) != (1, 1) else x
        w2 = cache.get("w2")
        if w2 is None:
            w2 = cache["w2"] = np.ascontiguousarray(w.reshape(cout, C))
        y = np.matmul(w2, xs.reshape(B, C, Ho * Wo)).reshape(B, cout, Ho, Wo)
    elif cin_g == 1 and cout == groups:
        y = _depthwise(x, w, Ho, Wo, sh, sw, dh, dw, cache)
    elif groups == 1:
        # one (Cout x Cin) GEMM per kernel tap over the strided input view
        y = np.zeros((B, cout, Ho * Wo), np.float32)
        for i in range(kh):
            for j in range(kw):
                view = x[:, :, i * dh: i * dh + (Ho - 1) * sh + 1: sh, j * dw: j * dw + (Wo - 1) * sw + 1: sw]
                y += np.matmul(w[:, :, i, j], view.reshape(B, C, Ho * Wo))
        y = y.reshape(B, cout, Ho, Wo)
    else:
        win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :Ho, :Wo]  # B, C, Ho, Wo, kh, kw
        cout_g = cout // groups
        parts = []
        for g in range(groups):
            cols = win[:, g * cin_g:(g + 1) * cin_g].transpose(0, 2, 3, 1, 4, 5).reshape(B * Ho * Wo, -1)
            wg = w[g * cout_g:(g + 1) * cout_g].reshape(cout_g, -1)
            parts.append((cols @ wg.T).reshape(B, Ho, Wo, cout_g))
        y = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    if bias is not None:
        y += bias
    return [y]


# --------------------------------------------------------------------------- linear algebra

def matmul(p, cache):
    x, y = f32(p["x"]), f32(p["y"])
    if bool(p.get("transpose_x", False)) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool(p.get("transpose_y", False)) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return [np.matmul(x, y)]


def linear(p, cache):
    w = cache.get("wt")
    if w is None:
        w = cache["wt"] = np.ascontiguousarray(f32(p["weight"]).T)
    y = f32(p["x"]) @ w
    if p.get("bias") is not None:
        y = y + f32(p["bias"])
    return [y]


# --------------------------------------------------------------------------- elementwise

def _binary(fn):
    def op(p, cache):
        return [fn(f32(p["x"]), f32(p["y"]))]
    return op


add = _binary(np.add)
sub = _binary(np.subtract)
mul = _binary(np.multiply)
real_div = _binary(np.divide)
maximum = _binary(np.maximum)
minimum = _binary(np.minimum)


def relu(p, cache):
    return [np.maximum(f32(p["x"]), 0)]


def sigmoid(p, cache):
    x = f32(p["x"])
    with np.errstate(over="ignore"):
        return [1.0 / (1.0 + np.exp(-x))]


def softmax(p, cache):
    x = f32(p["x"])
    axis = int(p.get("axis", -1))
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return [e / e.sum(axis=axis, keepdims=True)]


def reduce_mean(p, cache):
    x = f32(p["x"])
    axes = p.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(_ints(axes))
    return [x.mean(axis=axes, keepdims=bool(p.get("keep_dims", False)))]


def batch_norm(p, cache):
    x = f32(p["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = f32(p["mean"]).reshape(shape), f32(p["variance"]).reshape(shape)
    eps = float(p.get("epsilon", 1e-5))
    y = (x - mean) / np.sqrt(var + eps)
    if p.get("gamma") is not None:
        y = y * f32(p["gamma"]).reshape(shape)
    if p.get("beta") is not None:
        y = y + f32(p["beta"]).reshape(shape)
    return [y]


def cast(p, cache):
    from coremltools.converters.mil.mil import types  # loaded already: the interpreter reads the program with it

    dtype = str(p["dtype"])
    try:
        target = types.string_to_nptype(dtype)
    except KeyError:
        raise NotImplementedError(f"cast to {dtype!r} is not implemented") from None
    x = np.asarray(p["x"])
    if np.issubdtype(target, np.integer) and x.dtype.kind == "f":
        x = np.trunc(x)  # MIL casts float -> int toward zero
    with np.errstate(over="ignore", invalid="ignore"):
        return [x.astype(target)]


# --------------------------------------------------------------------------- data movement

def reshape(p, cache):
    x = np.asarray(p["x"])
    shape = _ints(p["shape"])
    if len(shape) == x.ndim:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def transpose(p, cache):
    return [np.transpose(np.asarray(p["x"]), _ints(p["perm"]))]


def split(p, cache):
    x = np.asarray(p["x"])
    axis = _axis(p["axis"], x.ndim)
    if p.get("split_sizes") is not None:
        sizes = _ints(p["split_sizes"])
    else:
        n = int(p["num_splits"])
        size = -(-x.shape[axis] // n)
        sizes = [size] * (n - 1) + [x.shape[axis] - size * (n - 1)]
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


def concat(p, cache):
    values = [np.asarray(v) for v in p["values"]]
    axis = _axis(p["axis"], values[0].ndim)
    if bool(p.get("interleave", False)):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return [stacked.reshape(shape)]
    dtype = np.result_type(*values)
    return [np.concatenate([v.astype(dtype, copy=False) for v in values], axis=axis)]


def slice_by_index(p, cache):
    x = np.asarray(p["x"])
    rank = x.ndim
    begin, end = _ints(p["begin"]), _ints(p["end"])
    stride = _ints(p["stride"]) if p.get("stride") is not None else [1] * rank
    bmask = [bool(v) for v in np.asarray(p["begin_mask"]).reshape(-1)] if p.get("begin_mask") is not None \
        else [False] * rank
    emask = [bool(v) for v in np.asarray(p["end_mask"]).reshape(-1)] if p.get("end_mask") is not None \
        else [False] * rank
    smask = [bool(v) for v in np.asarray(p["squeeze_mask"]).reshape(-1)] if p.get("squeeze_mask") is not None \
        else [False] * rank
    index = []
    for i in range(rank):
        if smask[i]:
            index.append(begin[i])
            continue
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        index.append(slice(b, e, stride[i]))
    return [x[tuple(index)]]


def expand_dims(p, cache):
    x = np.asarray(p["x"])
    axes = sorted(_axis(a, x.ndim + len(_ints(p["axes"]))) for a in _ints(p["axes"]))
    for a in axes:
        x = np.expand_dims(x, a)
    return [x]


def squeeze(p, cache):
    x = np.asarray(p["x"])
    if p.get("axes") is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(_axis(a, x.ndim) for a in _ints(p["axes"])))]


def pad(p, cache):
    x = np.asarray(p["x"])
    pads = _ints(p["pad"])
    mode = str(p.get("mode", "constant"))
    n = len(pads) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pads[2 * i], pads[2 * i + 1]) for i in range(n)]
    if mode == "constant":
        value = float(p.get("constant_val", 0.0))
        return [np.pad(x, widths, mode="constant", constant_values=value)]
    if mode in ("reflect", "replicate"):
        return [np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")]
    raise NotImplementedError(f"pad mode {mode!r} is not implemented")


def identity(p, cache):
    return [np.asarray(p["x"])]


OPS = {
    "conv": conv, "matmul": matmul, "linear": linear,
    "add": add, "sub": sub, "mul": mul, "real_div": real_div, "maximum": maximum, "minimum": minimum,
    "relu": relu, "sigmoid": sigmoid, "softmax": softmax, "reduce_mean": reduce_mean,
    "batch_norm": batch_norm, "cast": cast,
    "reshape": reshape, "transpose": transpose, "split": split, "concat": concat,
    "slice_by_index": slice_by_index, "expand_dims": expand_dims, "squeeze": squeeze, "pad": pad,
    "identity": identity,
}
