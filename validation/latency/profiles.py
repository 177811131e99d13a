"""Device profiles: the prices a simulator puts on each op class, kept as JSON data
that says what they rest on (fitted to which measurements, when, with which runtime,
how well they predict models left out of the fit).

Built-in profiles live in ``profiles/*.json`` next to this file; user profiles (from
``devices fit`` or ``devices calibrate``) in ``~/.cache/evit-export/devices/``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.paths import cache_dir
from evit_export.core.jsonio import write_json_atomic

PROFILE_FORMAT = "evit-export device profile 1"
BUILTIN_DIR = Path(__file__).with_name("profiles")
# cpu-interpreter: op-by-op runtimes (every op pays a dispatch cost, class times add);
# graph-accelerator: whole-graph compilers (one launch, compute and memory overlap).
# simulate.estimate explains the two cost structures.
DEVICE_CLASSES = ("cpu-interpreter", "graph-accelerator")


def user_profile_dir() -> Path:
    return cache_dir() / "devices"


@dataclass
class DeviceProfile:
    name: str
    description: str
    device_class: str            # one of DEVICE_CLASSES
    runtime: str                 # the runtime the figures describe, e.g. "TFLite 2.x XNNPACK, 1 thread"
    formats: list                # artifact formats that runtime runs: "onnx", "tflite", "coreml"
    precisions: list             # artifact precisions it applies to: "fp32", "fp16"
    coefficients: dict           # feature -> ms per unit (see simulate.FEATURES)
    source: dict                 # kind: fitted | derived | assumption; text; data; when
    validation: dict = field(default_factory=dict)  # error figures (fit.validate); {} when none
    format: str = PROFILE_FORMAT

    def provenance(self) -> str:
        return self.source.get("text") or self.source.get("kind", "assumption")

    def error_summary(self) -> str:
        v = self.validation
        if not v:
            return "no validation (not fitted to measurements)"
        parts = [f"in-sample median {v['in_sample_median_error']:.1%}",
                 f"leave-one-out median {v['loo_median_error']:.1%}"]
        held = v.get("held_out_transformers")
        if held:
            rank = "" if held.get("rank_corr") is None else f", rank corr {held['rank_corr']:.2f}"
            parts.append(f"held-out transformers median {held['median_error']:.1%}{rank}")
        if v.get("base_profile"):
            return f"unvalidated derivation; its base {v['base_profile']} has " + ", ".join(parts)
        return ", ".join(parts)

    def fits(self, target_name: str, precision: str) -> bool:
        return target_name in self.formats and precision in self.precisions

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "profile") -> "DeviceProfile":
        if data.get("format") != PROFILE_FORMAT:
            raise UserError(f"{where} is not an evit-export device profile (format {data.get('format')!r}): "
                            "make one with `evit-export devices fit` or `devices calibrate`")
        try:
            profile = cls(**data)
        except TypeError as e:
            raise UserError(f"{where} is not a valid device profile ({e}): regenerate it") from None
        if profile.device_class not in DEVICE_CLASSES:
            raise UserError(f"{where}: device_class {profile.device_class!r} is not one of "
                            f"{', '.join(DEVICE_CLASSES)}")
        return profile

    def save(self, path: Path) -> Path:
        return write_json_atomic(Path(path), self.to_dict())


def load_profile_file(path: Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read device profile {path}: {e}") from None
    return DeviceProfile.from_dict(data, where=str(path))


def builtin_profiles() -> dict[str, DeviceProfile]:
    return {p.name: p for p in map(load_profile_file, sorted(BUILTIN_DIR.glob("*.json")))}


def user_profiles() -> dict[str, DeviceProfile]:
    folder = user_profile_dir()
    return {p.name: p for p in map(load_profile_file, sorted(folder.glob("*.json")))} if folder.is_dir() else {}


def all_profiles() -> dict[str, tuple[DeviceProfile, str]]:
    """name -> (profile, "built-in" | "user"); a user profile of the same name wins."""
    out = {name: (p, "built-in") for name, p in builtin_profiles().items()}
    out.update({name: (p, "user") for name, p in user_profiles().items()})
    return out


def resolve_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (built-in or cached user profile) or by the path of its JSON file."""
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        if not Path(name_or_path).is_file():
            raise UserError(f"device profile {name_or_path} does not exist: check the path")
        return load_profile_file(Path(name_or_path))
    profiles = all_profiles()
    if name_or_path not in profiles:
        raise UserError(f"unknown device profile {name_or_path!r}: choose from {', '.join(sorted(profiles))} "
                        "(evit-export devices list), or pass a PROFILE.json")
    return profiles[name_or_path][0]
