"""The files of a CoreML artifact: the spec protobuf inside an ``.mlpackage`` (or the
``.mlmodel`` itself), its weight files, and the integrity digests sealed at export."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.import_order import native_logs_filtered, tf_safe
from evit_export.core.interrupt import protected, raise_if_cancelled
from evit_export.core.optional import require

# Metadata key of the digests of the program and its weight files.
INTEGRITY_KEY = "evit_export.integrity"


def coremltools():
    """The coremltools module, imported after the import-order guard (it imports TensorFlow)."""

    require("coremltools")
    tf_safe()
    # An interrupted TensorFlow import segfaults at exit: finish it first. TensorFlow's
    # C++ start-up notices go to fd 2, past any Python logging setting.
    with protected(), native_logs_filtered():
        import coremltools as ct

    return ct


def coremltools_reader():
    """coremltools for reading an artifact (spec, program, weights). Reading needs no
    TensorFlow, which coremltools imports when installed: seconds that Ctrl-C cannot cut
    short (an interrupted TensorFlow import crashes at exit). With TensorFlow hidden, the
    import is shorter and a Ctrl-C during a check stops it at once. The converter (in its
    worker process) uses ``coremltools``, with TensorFlow."""
    require("coremltools")
    if "coremltools" in sys.modules or "tensorflow" in sys.modules:
        return coremltools()
    sys.modules["tensorflow"] = None  # coremltools takes the ImportError as "not installed"
    try:
        tf_safe()
        with native_logs_filtered():
            import coremltools as ct
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    # coremltools' import guards its optional parts with broad excepts, which swallow a
    # Ctrl-C that lands inside them: deliver it now, not at the next check.
    raise_if_cancelled()
    return ct


def model_file_of(path: Path) -> Path:
    """The spec file inside an .mlpackage (the root model its Manifest.json names), or
    the .mlmodel itself.

    Read by hand: coremltools' ModelPackage creates a package at a path that holds no
    valid one, and rejects a package with a missing weight file as a whole, so its
    errors could not say which part is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the artifact path")
    if path.suffix.lower() == ".mlmodel":
        if not path.is_file():
            raise UserError(f"{path} is not a file: a .mlmodel is a single protobuf file")
        return path
    if not path.is_dir():
        raise UserError(f"{path} is not an mlpackage (not a folder): pass the .mlpackage folder that "
                        "coremltools or evit-export wrote")
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not an mlpackage (no readable Manifest.json naming the model): pass the "
                        ".mlpackage folder that coremltools or evit-export wrote") from None
    model_file = path / "Data" / root
    if not model_file.is_file():
        raise UserError(f"{path} is not a complete mlpackage ({root} is missing): re-export it")
    return model_file


def read_model_spec(path: Path):
    """(Model protobuf, the file it came from)."""
    from google.protobuf.message import DecodeError

    coremltools_reader()
    from coremltools.proto import Model_pb2

    model_file = model_file_of(path)
    proto = Model_pb2.Model()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except (DecodeError, ValueError) as e:
        raise UserError(f"{path} does not hold a CoreML model spec ({str(e)[:80]}): re-export it") from None
    if proto.WhichOneof("Type") is None:
        raise UserError(f"{path} does not hold a CoreML model spec: re-export it")
    return proto, model_file


def write_model_spec(proto, model_file: Path) -> None:
    Path(model_file).write_bytes(proto.SerializeToString())


def weight_files(model_file: Path) -> list[Path]:
    weights = Path(model_file).parent / "weights"
    return sorted(p for p in weights.rglob("*") if p.is_file()) if weights.is_dir() else []


def package_size(path: Path) -> int:
    """Bytes on disk of a .mlmodel file or of every file in an .mlpackage folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def program_digests(proto, package: Path) -> dict:
    """sha256 of the serialized program and of every weight file."""
    model_file = model_file_of(package)
    program = hashlib.sha256(proto.mlProgram.SerializeToString(deterministic=True)).hexdigest()
    weights = {p.relative_to(model_file.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in weight_files(model_file)}
    return {"program": program, "weights": weights}


def seal(package: Path) -> None:
    """Record digests of the program and its weights in the model's own metadata, so
    ``check`` notices a changed weight.bin or an edited program even without the sidecar."""
    proto, model_file = read_model_spec(package)
    proto.description.metadata.userDefined[INTEGRITY_KEY] = json.dumps(program_digests(proto, package),
                                                                       sort_keys=True)
    write_model_spec(proto, model_file)


def integrity_problems(proto, package: Path) -> list[str]:
    """How the program and weight files differ from the digests sealed at export (none
    recorded: nothing to compare)."""
    sealed = proto.description.metadata.userDefined.get(INTEGRITY_KEY)
    if not sealed:
        return []
    try:
        want = json.loads(sealed)
    except ValueError:
        return ["integrity record in the model metadata is unreadable"]
    have = program_digests(proto, package)
    problems = []
    if have["program"] != want.get("program"):
        problems.append("the ML Program differs from the one exported (model.mlmodel was edited)")
    for name, digest in want.get("weights", {}).items():
        got = have["weights"].get(name)
        if got is None:
            problems.append(f"weight file {name} is missing")
        elif got != digest:
            problems.append(f"weight file {name} differs from the one exported (corrupted or edited)")
    return problems
