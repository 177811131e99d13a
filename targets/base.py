"""The one protocol every export target implements, and what it returns.

A target turns a deploy model + ModelSpec into an artifact file (``export``, with its
own frozen ``TargetOptions`` dataclass), opens an artifact as a ``Runner`` (``open``,
with the shared ``RunnerOptions``), and reads back what the artifact is
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evit_export.core import optional
from evit_export.core.atomic import check_writable, write_text_atomic
from evit_export.core.errors import UserError
from evit_export.core.jsonio import dumps_strict
from evit_export.core.spec import ModelSpec
from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE

# The precision families every tolerance, sweep and report speaks in; each target maps
# its own precision labels (e.g. TFLite "dynamic", CoreML int8 weights) onto one.
PRECISION_FAMILIES = ("fp32", "fp16", "int8")


def cli_option(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,
               hidden: bool = False, aliases: tuple[str, ...] = (), parse: Callable[[str], Any] | None = None,
               choices: tuple[str, ...] | None = None) -> Any:
    """A field of a ``TargetOptions`` (or ``RunnerOptions``) dataclass that the format's
    export command offers on the command line (``evit_export/cli/export.py`` builds the
    command from these). ``flag`` defaults to ``--field-name`` (``--x/--no-x`` for a
    boolean that defaults to True); ``aliases`` are old spellings, accepted but hidden;
    ``parse`` turns the command-line text into the field's value (e.g. read a file);
    ``choices`` restricts that text when the field's type does not (the help lists them)."""
    return field(default=default, metadata={"cli": {"help": help, "flag": flag, "metavar": metavar,
                                                    "hidden": hidden, "aliases": tuple(aliases), "parse": parse,
                                                    "choices": choices}})


class PrecisionNotApplicable(UserError):
    """A sweep precision this format cannot produce (the sweep skips it, naming why)."""


@dataclass(frozen=True)
class TargetOptions:
    """Base of every target's export options. Subclasses are frozen dataclasses with
    typed fields and defaults; ``__post_init__`` validates once and raises UserError
    naming the option and the fix. Unknown keys are impossible: the dataclass
    ``__init__`` rejects them."""

    @classmethod
    def for_precision(cls, precision: str, *, calibration_data=None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                      batch: int = 1) -> TargetOptions:
        """This target's options for a sweep precision ("fp32" | "fp16" | "int8");
        raises PrecisionNotApplicable for one the format cannot do."""
        raise NotImplementedError(f"{cls.__name__} does not map sweep precisions")

    def precision_label(self) -> str:
        """What these options produce, in words: "fp32", "int8", "int8 weights (fp16 activations)"."""
        raise NotImplementedError(f"{type(self).__name__} does not label its precision")


def enum_choice(enum_type: type[Enum], value, flag: str):
    """``value`` (a member or its string, any case) as a member of ``enum_type``; a
    UserError naming the parameter ``flag`` and the choices otherwise. Options dataclasses call this
    in ``__post_init__`` so that the Python API accepts plain strings too."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise UserError(f"{flag}={value} is not supported: choose one of {choices}") from None


@dataclass(frozen=True)
class RunnerOptions:
    """What every runner takes. A target whose runners take more subclasses this and
    names the subclass in ``Target.runner_options_type``."""

    threads: int | None = cli_option(None, "Runtime threads for the check; default: the runtime's own.",
                                     metavar="N")  # None = runtime default
    batch: int | None = None  # override for batch-flexible artifacts

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads={self.threads} must be at least 1 (or None for the runtime default)")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1")


def normalise_op_name(op_type: str) -> str:
    """``BATCH_MATMUL`` / ``real_div`` / ``Conv`` -> ``batchmatmul`` / ``realdiv`` / ``conv``:
    the spelling ``Target.memory_bound_ops`` is written in."""
    return op_type.lower().replace("_", "").replace("-", "")


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


@dataclass
class GraphReport:
    """What ``Target.inspect`` finds; build it with ``Target.graph_report`` so the
    memory-bound op types are the target's own."""

    target: str
    op_histogram: Counter
    params: int
    file_size: int
    extra: dict = field(default_factory=dict)
    memory_bound_types: frozenset = frozenset()  # the op types in op_histogram that move data

    @property
    def memory_bound_ops(self) -> int:
        return sum(n for op, n in self.op_histogram.items() if op in self.memory_bound_types)

    @property
    def total_ops(self) -> int:
        return sum(self.op_histogram.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_histogram"] = dict(self.op_histogram.most_common())
        d["memory_bound_types"] = sorted(self.memory_bound_types)
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

    def integrity_failures(self) -> list[str]:
        """What the runner found damaged in its artifact while opening it (e.g. weights
        that differ from digests sealed in at export); the equivalence check fails on any."""
        return []

    def timed_call(self, pixels: np.ndarray):
        """A zero-argument callable running inference only, for latency measurement.
        Runners override it to keep input conversion out of the timed region."""
        return lambda: self.run(pixels)

    def memory_plan(self) -> dict | None:
        """The runtime's own account of the memory it set aside for this model, read after
        opening (bench reports it beside the measured resident peak): e.g.
        ``{"planned_bytes": N, "source": "what the figure is"}``. None where the runtime
        exposes nothing (the measured peak is then the only figure)."""
        return None

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
    """One export format. Subclasses declare the class attributes below (the registry
    in ``targets/__init__.py`` is built from them) and live in ``targets/<name>/``."""

    name: ClassVar[str]  # "onnx"
    suffixes: ClassVar[tuple[str, ...]]  # (".onnx",): only suffixes ``open`` can read
    precisions: ClassVar[tuple[str, ...]]  # sweep precisions it supports, e.g. ("fp32", "fp16", "int8")
    memory_bound_ops: ClassVar[frozenset[str]]  # op names (normalise_op_name) that move data
    options_type: ClassVar[type[TargetOptions]]
    imports_tensorflow: ClassVar[bool] = False  # the registry runs the import-order guard first when True

    # --- what a format declares so that no shared module has to name it (all optional)
    title: ClassVar[str] = ""  # "TFLite / LiteRT": how messages and reports name the format
    runner_options_type: ClassVar[type[RunnerOptions]] = RunnerOptions
    # pip extra installing the runtime, and import name -> what needs it, for the one-line
    # "pip install 'evit-export[extra]'" error (core.optional) when a module is missing.
    extra: ClassVar[str | None] = None
    requirements: ClassVar[dict[str, str]] = {}
    colour: ClassVar[str] = "#8c8c8c"  # the format's colour in report plots
    # The CPU kernel library its runtime runs ("xnnpack", "mlas", ...): latency profiles
    # fitted for one library share prices across the formats that run on it.
    kernel_library: ClassVar[str | None] = None
    # Files the format's runtime also reads that are not artifacts this tool can open
    # (onnxruntime's ".ort"): bench --remote and simulate accept them by name.
    extra_suffixes: ClassVar[tuple[str, ...]] = ()
    # App kinds ``package --app auto`` writes; the writers come from ``app_writers``.
    auto_apps: ClassVar[tuple[str, ...]] = ()
    # The pip requirement line of the runtime a Python app needs (None: no Python app).
    python_requirement: ClassVar[str | None] = None
    # Export command: short help, and the default artifact suffix (``export_suffix``).
    cli_help: ClassVar[str] = ""

    @abstractmethod
    def export(self, model, spec: ModelSpec, out: Path, options: TargetOptions | None = None) -> Artifact:
        """Write the artifact atomically; ``model`` is the folded deploy model;
        ``options`` default to ``options_type()``."""

    @abstractmethod
    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        """A Runner over ``path``; ``spec`` overrides the artifact's embedded one."""

    @abstractmethod
    def embedded_spec_text(self, path: Path) -> str | bytes | None:
        """The ModelSpec JSON stored under ``SPEC_KEY`` in the artifact's own
        metadata; raises UserError when ``path`` is not this format."""

    @abstractmethod
    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        """{'inputs': [...], 'outputs': [...]}"""

    @abstractmethod
    def inspect(self, path: Path) -> GraphReport:
        """The artifact's graph: op histogram, parameters, size and what the format adds
        (delegate partitions, ...). Timing lives in ``op_time_profile`` and bench."""

    def __init_subclass__(cls, **kwargs):
        """Defining a target tells ``core.optional`` which extra installs each module it
        needs, before any of its code can ask for one (``optional.require``)."""
        super().__init_subclass__(**kwargs)
        for module, purpose in cls.__dict__.get("requirements", {}).items():
            optional.declare(module, cls.extra or cls.name, purpose)

    def app_writers(self) -> dict[str, Callable]:
        """App kind -> writer(AppContext) -> markdown usage text (``targets.apps``)."""
        return {}

    def input_quantization(self, path: Path) -> tuple[float, int] | None:
        """(scale, zero point) of an integer model input, for apps that feed it raw bytes."""
        return None

    def int8_layer_errors(self, path: Path, spec: ModelSpec, pixels: np.ndarray, deployed) -> list[dict]:
        """Every quantized tensor's error against this format's float export of ``deployed``
        on ``pixels``: dicts with tensor, block, op, sqnr_db, cosine (``check --per-layer``)."""
        from evit_export.targets import all_targets  # the registry imports this module

        explained = [t.title or t.name for t in all_targets()
                     if type(t).int8_layer_errors is not Target.int8_layer_errors]
        raise UserError(f"{self.title or self.name} artifacts have no per-layer int8 report yet: "
                        f"check --per-layer explains {' and '.join(explained) or 'no format'} int8 artifacts")

    def op_time_profile(self, path: Path, threads: int = 1) -> dict[str, float] | None:
        """Share of the runtime's kernel time per op type (same names as ``inspect``'s
        histogram) on one run, or None where the runtime has no op profiler."""
        return None

    def import_runtime(self) -> None:
        """Import the modules ``open`` will need, without opening anything: bench takes its
        memory baseline after this, so a model's resident peak excludes the runtime's own
        import. The default calls ``import_runtime()`` of the target package's ``runner``
        module where it defines one; otherwise nothing is imported beforehand (the runtime's
        import then counts as the model's)."""
        import importlib
        import sys

        package = getattr(sys.modules.get(type(self).__module__), "__package__", None)
        try:
            runner_module = importlib.import_module(f"{package}.runner") if package else None
        except ModuleNotFoundError as e:
            if e.name != f"{package}.runner":  # the runner exists but its runtime is missing: say so
                raise
            return
        hook = getattr(runner_module, "import_runtime", None)
        if callable(hook):
            hook()

    def remote_bench_source(self) -> str | None:
        """Python source, run on a remote device with only the runtime installed, defining
        ``open_model(path, threads, batch) -> (call, runtime_name, input_shape)`` (a fourth
        item, a ``memory_plan`` dict as ``Runner.memory_plan`` returns, is optional) and
        optionally ``import_runtime()``, which the harness calls before its memory baseline;
        None when this format cannot be measured remotely
        (``validation/latency/remote_bench_script.py``)."""
        return None

    def check_output(self, out: Path, options: TargetOptions) -> Path:
        """``out`` if it suits ``options`` and can be written; a UserError naming the fix
        otherwise. Export commands call it before any work."""

        if not str(out).lower().endswith(tuple(s.lower() for s in self.suffixes)):
            raise UserError(f"out={out} must end in {' or '.join(self.suffixes)}")
        return check_writable(Path(out))

    def export_suffix(self, options: TargetOptions) -> str:
        """The default file suffix for ``options`` (a format may have several)."""
        return self.suffixes[0]

    def default_out_name(self, spec: ModelSpec, options: TargetOptions) -> str:
        """The artifact's file name when the user gives no ``--out``: ``m0.onnx``."""
        return f"{spec.variant}{self.export_suffix(options)}"

    def check_skip_reason(self, options: TargetOptions, runner_options: RunnerOptions) -> str | None:
        """Why an artifact made with ``options`` cannot be checked here (None: it can)."""
        return None

    def export_summary(self, artifact: Artifact, options: TargetOptions) -> list[str]:
        """Lines the export command prints after writing ``artifact``."""
        size = artifact.info.get("file_size")
        size_text = f"{size / 1e6:.2f} MB, " if isinstance(size, (int, float)) else ""
        return [f"wrote {artifact.path} ({size_text}{options.precision_label()})"]

    def check_options(self, options: TargetOptions | None) -> TargetOptions:
        """``options``, or the defaults; a UserError for another target's options."""
        if options is None:
            return self.options_type()
        if not isinstance(options, self.options_type):
            raise UserError(f"{type(options).__name__} are not {self.name} options: pass "
                            f"{self.options_type.__name__}")
        return options

    def precision_family(self, spec: ModelSpec) -> str:
        """"fp32" | "fp16" | "int8": which tolerances an artifact of this spec is judged by.
        Targets with precision labels of their own override this."""
        if spec.precision not in PRECISION_FAMILIES:
            raise ValueError(f"{self.name} does not know precision {spec.precision!r}")
        return spec.precision

    def is_memory_bound(self, op_type: str) -> bool:
        return normalise_op_name(op_type) in self.memory_bound_ops

    def graph_report(self, op_histogram: Counter, params: int, file_size: int,
                     extra: dict | None = None) -> GraphReport:
        return GraphReport(self.name, op_histogram, params, file_size, dict(extra or {}),
                           frozenset(op for op in op_histogram if self.is_memory_bound(op)))

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
            raise UserError(f"{path} carries no evit-export spec: pass variant= (and checkpoint=)")
        return spec


def sidecar_path(artifact: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.evit.json``: export details beside the artifact."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".evit.json")


def write_sidecar(artifact: Path, spec: ModelSpec, info: dict) -> Path:
    payload = {"spec": spec.to_dict(), "info": info}
    return write_text_atomic(sidecar_path(artifact), dumps_strict(payload, indent=2, sort_keys=True, default=str))


def read_sidecar(artifact: Path) -> dict | None:
    side = sidecar_path(artifact)
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


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
