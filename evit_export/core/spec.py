"""ModelSpec: what a model is, carried by every artifact built from it."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from evit_export.core.errors import UserError

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

    def replace(self, **changes) -> ModelSpec:
        data = asdict(self)
        data.update(changes)
        return ModelSpec(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict, where: str = "spec") -> ModelSpec:
        """A spec read from a file or an artifact's metadata: every field is checked
        (``SpecError`` names the first bad one); unknown keys are ignored."""
        if not isinstance(data, dict):
            raise SpecError(f"{where} is a JSON {type(data).__name__}, not an object: re-export the artifact")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        _check_fields(values, where)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, where: str = "spec") -> ModelSpec:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise SpecError(f"{where} is not valid JSON: re-export the artifact") from None
        return cls.from_dict(data, where)


class SpecError(UserError, ValueError):
    """A spec that does not describe a model (a ``ValueError`` too, for readers that
    treat an unreadable spec as a missing one)."""


INPUT_LAYOUTS = ("NCHW", "NHWC")
INPUT_RANGES = ("normalized", "unit", "pixels")
INPUT_DTYPES = ("float32", "float16", "uint8", "int8")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _finite_json(v, depth: int = 0) -> bool:
    """No NaN/Infinity anywhere (a spec is written back as strict JSON)."""
    if depth > 20:
        return False
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _finite_json(x, depth + 1) for k, x in v.items())
    if isinstance(v, list):
        return all(_finite_json(x, depth + 1) for x in v)
    return v is None or isinstance(v, (str, int, bool))


def _field_problem(key: str, v) -> str | None:
    """Why ``v`` cannot be field ``key`` of a spec, or None."""
    if key == "variant":
        return None if isinstance(v, str) and v.strip() else "must be a variant name such as m0"
    if key in ("num_classes", "img_size"):
        return None if _is_int(v) and 1 <= v <= 1_000_000 else "must be a positive integer"
    if key == "batch":
        return None if v is None or (_is_int(v) and 1 <= v <= 1_000_000) else "must be a positive integer or null"
    if key in ("mean", "std"):
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) for x in v)
        if ok and key == "std" and not all(x > 0 for x in v):
            return "must be three positive numbers"
        return None if ok else "must be three finite numbers"
    if key == "crop_pct":
        return None if _is_number(v) and 0 < v <= 1 else "must be a number in (0, 1]"
    choices = {"input_layout": INPUT_LAYOUTS, "input_range": INPUT_RANGES, "input_dtype": INPUT_DTYPES,
               "interpolation": INTERPOLATIONS}.get(key)
    if choices:
        return None if v in choices else f"must be one of {', '.join(choices)}"
    if key == "precision":
        return None if isinstance(v, str) and v else "must be a precision name such as fp32"
    if key in ("labels", "notes"):
        return None if isinstance(v, list) and all(isinstance(x, str) for x in v) else "must be a list of strings"
    if key == "toolchain":
        ok = isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
        return None if ok else "must map names to version strings"
    if key == "source":
        return None if isinstance(v, dict) and _finite_json(v) else "must be an object of finite JSON values"
    return None


def _check_fields(values: dict, where: str) -> None:
    if "variant" not in values:
        raise SpecError(f"{where} names no variant: re-export the artifact")
    for key, v in values.items():
        problem = _field_problem(key, v)
        if problem:
            shown = json.dumps(v, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise SpecError(f"{where}: {key} = {shown} {problem}; re-export the artifact")
    labels, classes = values.get("labels"), values.get("num_classes", 1000)
    if labels and len(labels) != classes:
        raise SpecError(f"{where}: {len(labels)} labels for {classes} classes; re-export the artifact")


def read_labels(path) -> list[str]:
    """One label per line (blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels file {p} does not exist: pass a text file with one label per line")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"labels file {p} is not UTF-8 text (byte {e.start}): save it as UTF-8, one label "
                        "per line") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UserError(f"labels file {p} is empty: one label per line")
    return labels
