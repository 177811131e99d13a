"""ModelSpec: what a model is, carried by every artifact built from it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_labels(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def toolchain_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("evit-export", "torch"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class ModelSpec:
    variant: str
    num_classes: int = 1000
    img_size: int = 224
    labels: list[str] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # How the artifact's input is laid out and scaled. "normalized": float image,
    # already (x/255 - mean)/std. "unit": float 0..1. "pixels": 0..255.
    input_layout: str = "NCHW"
    input_range: str = "normalized"
    input_dtype: str = "float32"
    # Evaluation preprocessing: resize the shorter side to img_size / crop_pct, centre crop.
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    precision: str = "fp32"
    batch: int | None = 1  # None = dynamic batch
    toolchain: dict[str, str] = field(default_factory=toolchain_versions)
    notes: list[str] = field(default_factory=list)
    # Where the weights came from, so an artifact can be re-checked with no flags:
    # {"checkpoint": path or URL, "sha256": ...} or {"seed": N} for random weights.
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.labels:
            self.labels = default_labels(self.num_classes)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def replace(self, **changes) -> "ModelSpec":
        data = asdict(self)
        data.update(changes)
        return ModelSpec(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))
