"""Top-k accuracy and softmax, written once for training, validation, parity and packages.

Ties are broken towards the lower class index (a stable sort), so two callers that
score the same logits always agree, whichever framework produced them.
"""
from __future__ import annotations

import numpy as np


def _as_numpy(values) -> np.ndarray:
    # torch tensors (CPU or GPU, with or without grad) without importing torch here
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def topk_correct(logits, targets, k: int) -> np.ndarray:
    """Per sample: is the target among the ``k`` highest logits? Bool array (N,).

    ``logits`` (N, C) and ``targets`` (N,): numpy arrays or torch tensors. ``k`` larger
    than C counts every sample as correct, as top-5 on a 2-class model should.
    """
    scores = _as_numpy(logits)
    labels = _as_numpy(targets).astype(np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"logits (N, C) and targets (N,) expected, got {scores.shape} and {labels.shape}")
    k = max(1, min(int(k), scores.shape[1]))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (a batch of logits, or one image's)."""
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)
