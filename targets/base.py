"""The one protocol every export target implements, and what it returns.

A target turns a deploy model + ModelSpec into an artifact file (``export``),
opens an artifact as a ``Runner`` (``open``), and reads back what the artifact is
(``read_spec``, ``describe``, ``inspect``). Equivalence, parity, latency and
packaging are written once against this module, never per format.

Runner input convention, the same for every runtime: ``pixels`` is a float32
array (B, 3, H, W) of RGB values in 0..255, already resized/cropped to the
model's img_size. Each runner converts that to its artifact's own input
(normalisation, NHWC, uint8, image type) using the spec.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.spec import ModelSpec

# Op types that move or reshape data rather than compute (the paper's "memory-bound"
# lens), normalised to lower case without separators so every format can use it.
MEMORY_BOUND_OPS = {
    "reshape", "transpose", "split", "slice", "concat", "concatenation", "gather", "squeeze",
    "unsqueeze", "expanddims", "flatten", "pad", "padv2", "sliceby_index", "slicebyindex",
    "stridedslice", "splitv", "permute", "identity", "cast", "add", "sub", "mul", "div",
    "relu", "sigmoid", "logistic", "expand", "tile", "shape", "constantofshape",
    "softmax", "quantize", "dequantize",
    "realdiv",  # MIL real_div
    "reshapestatic", "rankpreservingreshape", "splitnd", "softmaxnd", "multiply",  # CoreML NeuralNetwork
}


def is_memory_bound(op_type: str) -> bool:
    return op_type.lower().replace("_", "").replace("-", "") in MEMORY_BOUND_OPS


@dataclass
class TensorInfo:
    name: str
    shape: list  # ints; None for a free dimension
    dtype: str  # float32 | float16 | uint8 | int8 | image
    layout: str  # NCHW | NHWC | NC
    value_range: str  # e.g. "normalized ((x/255-mean)/std)", "0..255", "logits", "probabilities"


@dataclass
class Artifact:
    path: Path
    target: str
    spec: ModelSpec
    info: dict = field(default_factory=dict)  # export details: sizes, tools used, verdicts

    def files(self) -> list[Path]:
        out = [self.path]
        side = sidecar_path(self.path)
        if side.exists():
            out.append(side)
        return out


@dataclass
class GraphReport:
    target: str
    op_histogram: Counter
    params: int
    file_size: int
    extra: dict = field(default_factory=dict)

    @property
    def memory_bound_ops(self) -> int:
        return sum(n for op, n in self.op_histogram.items() if is_memory_bound(op))

    @property
    def total_ops(self) -> int:
        return sum(self.op_histogram.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_histogram"] = dict(self.op_histogram.most_common())
        d["memory_bound_ops"] = self.memory_bound_ops
        d["total_ops"] = self.total_ops
        return d


class Runner(ABC):
    """Runs a batch of pixel images through one artifact on one runtime."""

    name: str = "runner"  # the runtime, e.g. "onnxruntime"
    output_kind: str = "logits"  # or "probabilities"
    # False for runners that only check numerics (e.g. the MIL interpreter standing in
    # for CoreML on Linux): their timings say nothing about device speed.
    deployment_runtime: bool = True

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @abstractmethod
    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 RGB 0..255 -> (B, num_classes) float32."""

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Every intermediate tensor of one forward pass, in execution order, for
        localisation. Layout as the artifact holds it (the matcher handles NHWC)."""
        raise NotImplementedError(f"{self.name} cannot expose intermediate tensors")

    def timed_call(self, pixels: np.ndarray):
        """A zero-argument callable running inference only, for latency measurement.
        Runners override it to keep input conversion out of the timed region."""
        return lambda: self.run(pixels)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Metadata key under which every format embeds the ModelSpec JSON.
SPEC_KEY = "evit_export.core.spec"


def parse_spec(text: str | bytes | None) -> ModelSpec | None:
    """The ModelSpec in ``text``, or None when it is missing or unreadable."""
    if not text:
        return None
    try:
        return ModelSpec.from_json(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


class Target(ABC):
    name: str
    suffixes: tuple[str, ...]

    @abstractmethod
    def export(self, model, spec: ModelSpec, out: Path, **options) -> Artifact:
        """Write the artifact atomically; ``model`` is the folded deploy model."""

    @abstractmethod
    def open(self, path: Path, **options) -> Runner:
        ...

    @abstractmethod
    def embedded_spec_text(self, path: Path) -> str | bytes | None:
        """The ModelSpec JSON stored under ``SPEC_KEY`` in the artifact's own
        metadata; raises UserError when ``path`` is not this format."""

    def read_spec(self, path: Path) -> ModelSpec | None:
        """The artifact's spec: embedded, else from the sidecar; None for a foreign file."""
        spec = parse_spec(self.embedded_spec_text(Path(path)))
        if spec is None:
            side = read_sidecar(Path(path))
            if side and "spec" in side:
                spec = ModelSpec.from_dict(side["spec"])
        return spec

    def require_spec(self, path: Path, spec: ModelSpec | None = None) -> ModelSpec:
        """``spec`` if given, else the artifact's own; a one-line error when it has none."""
        spec = spec or self.read_spec(path)
        if spec is None:
            from evit_export.core.errors import UserError

            raise UserError(f"{path} carries no evit-export spec: pass --variant (and --checkpoint)")
        return spec

    @abstractmethod
    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        """{'inputs': [...], 'outputs': [...]}"""

    @abstractmethod
    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        ...

    def claims(self, path: Path) -> bool:
        return any(str(path).lower().endswith(s) for s in self.suffixes)


def sidecar_path(artifact: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.evit.json``: export details beside the artifact."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".evit.json")


def write_sidecar(artifact: Path, spec: ModelSpec, info: dict) -> Path:
    from evit_export.core.atomic import write_text_atomic

    payload = {"spec": spec.to_dict(), "info": info}
    return write_text_atomic(sidecar_path(artifact), json.dumps(payload, indent=2, sort_keys=True, default=str))


def read_sidecar(artifact: Path) -> dict | None:
    side = sidecar_path(artifact)
    if not side.exists():
        return None
    try:
        return json.loads(side.read_text())
    except ValueError:
        return None


def pad_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` with its last item repeated up to a fixed artifact batch size."""
    if len(x) >= batch:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


def run_in_batches(fn, pixels: np.ndarray, batch: int | None) -> np.ndarray:
    """Call ``fn`` on slices of at most ``batch`` images (None = all at once); pads
    the last slice when the artifact's batch is fixed."""
    if batch is None or len(pixels) == batch:
        return fn(pixels)
    outs = []
    for start in range(0, len(pixels), batch):
        part = pixels[start:start + batch]
        outs.append(fn(pad_batch(part, batch))[:len(part)])
    return np.concatenate(outs)
