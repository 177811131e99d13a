"""``ImageSet``: the preprocessed images of one split, as every source returns them.

Every image goes through ``evit_export.core.preprocess.image_to_pixels`` (resize the
shorter side to img_size / crop_pct, centre crop) exactly once, with the spec the
model is trained or checked with, so training evaluation, parity and every Runner
see the same pixels. Images are held as uint8 (N, 3, S, S): ``image_to_pixels``
yields integer values 0..255, so this is lossless.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """Preprocessed images of one split: uint8 pixels (N,3,S,S), int64 targets."""

    pixels: np.ndarray
    targets: np.ndarray
    classes: list[str]
    source: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    def float_pixels(self) -> np.ndarray:
        """The Runner input convention: float32 RGB 0..255."""
        return self.pixels.astype(np.float32)

    def subset(self, n: int | None) -> ImageSet:
        """The first ``n`` images of a stratified (round-robin over classes) order."""
        if n is None or n >= len(self):
            return self
        order = _round_robin(self.targets)[:n]
        order = np.sort(order)
        return ImageSet(self.pixels[order], self.targets[order], self.classes, self.source,
                        [self.files[i] for i in order] if self.files else [], self.skipped)


def _round_robin(targets: np.ndarray) -> np.ndarray:
    per_class = [list(np.flatnonzero(targets == c)) for c in np.unique(targets)]
    out = []
    while any(per_class):
        for lst in per_class:
            if lst:
                out.append(lst.pop(0))
    return np.asarray(out, dtype=np.int64)
