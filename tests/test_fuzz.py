"""Property-based tests (hypothesis) over every reader of user-supplied files: the
checkpoint loader (bytes and state dicts), the ModelSpec and sidecar readers, the
package manifest reader (verify-package) and the measurements CSV reader.

The property is the same everywhere: whatever the input, the reader returns a value or
raises ``UserError`` with a one-line message; any other exception is what a user would
see as a traceback. Generated inputs are mostly mutations of real files (truncation,
bit flips, spliced bytes, a field replaced by any JSON value), which reach deeper than
random bytes.

Default: a few hundred cases per reader (1,600 in all). ``-m slow``: scaled ×8, about 16,000.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evit_export.core.errors import UserError

SCALE = [pytest.param(1, id="default"), pytest.param(8, id="slow", marks=pytest.mark.slow)]
COUNTS = {}  # reader -> examples run, for the report


def _where(e: BaseException) -> str:
    """The innermost frame of this project's code in ``e``'s traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/site-packages/" not in f.filename
              and "/tests/" not in f.filename]
    f = frames[-1] if frames else traceback.extract_tb(e.__traceback__)[-1]
    return f"{Path(f.filename).name}:{f.lineno}"


def _run(name: str, examples: int, strategy, prop) -> None:
    """Run ``prop`` on ``examples`` cases from ``strategy``; only UserError may escape
    (and its message is one line). Every distinct failure (exception type and place)
    is collected with its first input, and all are reported together."""
    count = 0
    failures: dict[tuple[str, str], str] = {}

    def wrapped(value):
        nonlocal count
        count += 1
        try:
            prop(value)
        except UserError as e:
            message = str(e)
            if not message or "\n" in message:
                failures.setdefault(("multi-line UserError", ""), repr(message)[:200])
        except Exception as e:  # noqa: BLE001 (any other exception is the finding)
            key = (type(e).__name__, _where(e))
            failures.setdefault(key, f"{str(e)[:120]!r} on input {value!r:.160}")

    settings(max_examples=examples, deadline=None, database=None,
             suppress_health_check=list(HealthCheck))(given(strategy)(wrapped))()
    COUNTS[name] = COUNTS.get(name, 0) + count
    assert not failures, f"{name}: " + "\n".join(f"{t} at {w}: {ex}" for (t, w), ex in failures.items())


def mutations(seed_bytes: bytes):
    """Truncations, bit flips, overwritten runs and splices of ``seed_bytes``."""
    n = len(seed_bytes)
    cut = st.integers(0, n).map(lambda k: seed_bytes[:k])
    flips = st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=8).map(
        lambda fl: _flip(seed_bytes, fl))
    runs = st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=64)).map(
        lambda t: seed_bytes[:t[0]] + t[1] + seed_bytes[t[0] + len(t[1]):])
    splice = st.tuples(st.integers(0, n), st.binary(max_size=64)).map(
        lambda t: seed_bytes[:t[0]] + t[1] + seed_bytes[t[0]:])
    return st.one_of(cut, flips, runs, splice, st.binary(max_size=256))


def _flip(data: bytes, flips) -> bytes:
    b = bytearray(data)
    for pos, mask in flips:
        b[pos] ^= mask
    return bytes(b)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A real (tiny) project checkpoint and a .pth state dict of M0 at 64 px, 10 classes."""
    from evit_export.models import randomize_
    from evit_export.models.load import build_model
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("fuzz_ck")
    model = randomize_(build_model("m0", None, num_classes=10, img_size=64), seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("attention_bias_idxs")}
    save_file(state, str(d / "m0.safetensors"))
    torch.save(state, d / "m0.pth")
    return d, state


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("scale", SCALE)
def test_checkpoint_bytes(small_checkpoint, tmp_path, scale):
    from evit_export.models.checkpoint import read_checkpoint

    d, _ = small_checkpoint
    # only the header region matters for safetensors/zip parsing: keep the seeds small
    seeds = {".safetensors": (d / "m0.safetensors").read_bytes()[:6000],
             ".pth": (d / "m0.pth").read_bytes()}
    for suffix, seed in seeds.items():
        path = tmp_path / f"x{suffix}"

        def prop(data, path=path):
            path.write_bytes(data)
            state, meta = read_checkpoint(path)
            assert isinstance(state, dict)
            assert isinstance(meta, dict)

        _run(f"read_checkpoint{suffix}", 150 * scale, mutations(seed), prop)


KEY_EDITS = st.sampled_from(["drop", "extra", "shape", "dtype", "prefix", "wrap", "scalar", "non_tensor",
                             "nan", "empty"])


@pytest.mark.parametrize("scale", SCALE)
def test_load_model_state_dicts(small_checkpoint, tmp_path, scale):
    """Generated state dicts (real keys edited: dropped, extra, reshaped, another dtype,
    wrapped, non-tensors) through build_model: a model or a UserError."""
    from evit_export.models.load import build_model

    _, state = small_checkpoint
    keys = sorted(state)
    edit = st.tuples(KEY_EDITS, st.sampled_from(keys), st.integers(0, 3), st.sampled_from(
        [torch.float16, torch.float64, torch.int32, torch.bool, torch.uint8, torch.complex64]))
    path = tmp_path / "g.pth"

    def prop(edits):
        sd: object = dict(state)
        for kind, key, n, dtype in edits:
            if not isinstance(sd, dict):
                break
            if kind == "drop":
                sd.pop(key, None)
            elif kind == "extra":
                sd[f"{key}.extra{n}"] = torch.zeros(n + 1)
            elif kind == "shape" and key in sd and isinstance(sd[key], torch.Tensor):
                sd[key] = torch.zeros(*([n + 1] * max(1, sd[key].dim())))
            elif kind == "dtype" and key in sd and isinstance(sd[key], torch.Tensor):
                sd[key] = sd[key].to(dtype)
            elif kind == "prefix":
                sd = {f"module.{k}": v for k, v in sd.items()}
            elif kind == "wrap":
                sd = {("model", "state_dict", "ema", "other")[n]: sd}
            elif kind == "scalar":
                sd[key] = torch.tensor(float(n))
            elif kind == "non_tensor":
                sd[key] = [n, "x"]
            elif kind == "nan" and key in sd and isinstance(sd[key], torch.Tensor) and sd[key].is_floating_point():
                sd[key] = torch.full_like(sd[key], float("nan"))
            elif kind == "empty":
                sd = {}
        torch.save(sd, path)
        model = build_model(None, path)
        assert model.spec.num_classes >= 1

    _run("build_model(state dict)", 40 * scale, st.lists(edit, min_size=0, max_size=4), prop)


# ----------------------------------------------------------------------------- spec and sidecars

def _valid_spec_dict() -> dict:
    from evit_export.core.spec import ModelSpec

    return ModelSpec("m0", 3, 64, labels=["a", "b", "c"], batch=1, notes=["n"], source={"seed": 0}).to_dict()


@pytest.mark.parametrize("scale", SCALE)
def test_spec_reader(scale):
    from evit_export.core.jsonio import loads_strict
    from evit_export.core.spec import ModelSpec

    base = _valid_spec_dict()
    edited = st.tuples(st.sampled_from(sorted(base)), JSON).map(lambda kv: {**base, kv[0]: kv[1]})
    dropped = st.sampled_from(sorted(base)).map(lambda k: {x: v for x, v in base.items() if x != k})

    def prop(data):
        spec = ModelSpec.from_dict(data)
        # whatever was accepted writes strict JSON and reads back to the same spec
        text = spec.to_json()
        loads_strict(text)
        assert ModelSpec.from_json(text) == spec

    _run("ModelSpec.from_dict", 600 * scale, st.one_of(edited, dropped, JSON), prop)
    seed = json.dumps(base).encode()

    def prop_text(data):
        ModelSpec.from_json(data.decode("utf-8", "replace"))

    _run("ModelSpec.from_json", 400 * scale, mutations(seed), prop_text)


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory, small_checkpoint):
    """A real small ONNX export with its sidecar."""
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target

    d = tmp_path_factory.mktemp("fuzz_onnx")
    deployed, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    get_target("onnx").export(deployed, spec, d / "m0.onnx")
    return d / "m0.onnx"


@pytest.mark.parametrize("scale", SCALE)
def test_sidecar_reader(onnx_artifact, tmp_path, scale):
    """read_sidecar and what reads through it (Target.read_spec of a file with no
    embedded spec, the package's export record)."""
    from evit_export.targets import get_target
    from evit_export.targets.base import read_sidecar, sidecar_path

    target = get_target("onnx")
    # an ONNX model without the embedded spec: read_spec must fall back to the sidecar
    import onnx

    model = onnx.load(str(onnx_artifact), load_external_data=False)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    seed = sidecar_path(onnx_artifact).read_bytes()
    side = sidecar_path(bare)

    def prop(data):
        side.write_bytes(data)
        got = read_sidecar(bare)
        assert got is None or isinstance(got, dict)
        (got or {}).get("info", {})
        target.read_spec(bare)

    _run("read_sidecar / read_spec", 300 * scale, st.one_of(mutations(seed), JSON.map(
        lambda v: json.dumps({"spec": v, "info": v}).encode()), JSON.map(lambda v: json.dumps(v).encode())), prop)


# ----------------------------------------------------------------------------- package manifest

@pytest.fixture(scope="module")
def package(tmp_path_factory, onnx_artifact):
    from evit_export.packaging.package import build_package

    d = tmp_path_factory.mktemp("fuzz_pkg")
    build_package(onnx_artifact, d / "pkg", measure=False, log=lambda m: None)
    return d / "pkg"


@pytest.mark.parametrize("scale", SCALE)
def test_manifest_reader(package, tmp_path, scale):
    from evit_export.packaging.manifest import MANIFEST
    from evit_export.packaging.verify import verify_package

    work = tmp_path / "pkg"
    shutil.copytree(package, work)
    manifest = json.loads((package / MANIFEST).read_text())
    seed = (package / MANIFEST).read_bytes()
    edited = st.tuples(st.sampled_from(sorted(manifest)), JSON).map(
        lambda kv: json.dumps({**manifest, kv[0]: kv[1]}).encode())
    entry = st.tuples(st.integers(0, len(manifest["files"]) - 1), st.sampled_from(["path", "bytes", "sha256"]),
                      JSON | st.sampled_from(["../outside", "/etc/passwd", "", ".", "..", "a/../../b"]))

    def edit_entry(t):
        i, key, value = t
        files = [dict(e) for e in manifest["files"]]
        files[i][key] = value
        return json.dumps({**manifest, "files": files}).encode()

    def prop(data):
        (work / MANIFEST).write_bytes(data)
        result = verify_package(work)
        assert isinstance(result.ok, bool)
        json.dumps(result.to_dict(), allow_nan=False)

    _run("verify_package(manifest)", 60 * scale, st.one_of(mutations(seed), edited, entry.map(edit_entry)), prop)


# ----------------------------------------------------------------------------- measurements CSV

def _csv(rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["device", "model", "img_size", "ms"])
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


@pytest.mark.parametrize("scale", SCALE)
def test_measurements_csv_reader(tmp_path, scale):
    from evit_export.validation.latency.fit import read_measurements

    path = tmp_path / "m.csv"
    cell = st.one_of(st.sampled_from(["pixel7", "m0", "m5", "224", "3.5", "-1", "0", "nan", "inf", "1e400", ""]),
                     st.text(max_size=8))
    rows = st.lists(st.lists(cell, min_size=0, max_size=6), max_size=6).map(_csv)
    seed = _csv([["pixel7", "m0", "224", "3.1"], ["pixel7", "m5", "224", "9.7"], ["a13", "m0", "160", "2.0"]])

    def prop(data):
        path.write_bytes(data)
        rows = read_measurements(path, "pixel7")
        assert rows
        assert all(r.ms > 0 and r.ms < float("inf") for r in rows)

    _run("read_measurements", 300 * scale, st.one_of(rows, mutations(seed)), prop)


# ----------------------------------------------------------------------------- security: paths stay inside

def _manifest_with(package, work, edit):
    from evit_export.packaging.manifest import MANIFEST

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(package, work, symlinks=True)
    manifest = json.loads((work / MANIFEST).read_text())
    edit(work, manifest)
    (work / MANIFEST).write_text(json.dumps(manifest))
    return work


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink-file", "symlink-dir", "model-outside"])
def test_package_paths_never_escape(package, tmp_path, how):
    """A manifest (or a symlink in the package) that points outside the package folder
    must be reported, never read as if it were part of the package."""
    from evit_export.packaging.manifest import sha256_file
    from evit_export.packaging.verify import verify_package

    secret = tmp_path / "secret.txt"
    secret.write_text("outside the package\n")
    entry = {"path": None, "bytes": secret.stat().st_size, "sha256": sha256_file(secret)}

    def edit(work, manifest):
        if how == "dotdot":
            manifest["files"].append({**entry, "path": "../secret.txt"})
        elif how == "absolute":
            manifest["files"].append({**entry, "path": str(secret)})
        elif how == "symlink-file":
            (work / "extra.txt").symlink_to(secret)
            manifest["files"].append({**entry, "path": "extra.txt"})
        elif how == "symlink-dir":
            (work / "assets").symlink_to(tmp_path)
            manifest["files"].append({**entry, "path": "assets/secret.txt"})
        elif how == "model-outside":
            outside = tmp_path / "model.onnx"
            shutil.copy(work / manifest["model"], outside)
            manifest["model"] = "../model.onnx"

    work = _manifest_with(package, tmp_path / "pkg", edit)
    try:
        result = verify_package(work)
    except UserError as e:  # refusing the package outright is fine too
        assert any(w in str(e) for w in REFUSALS), e
        return
    assert not result.ok, f"{how}: a path outside the package was accepted: {result.to_dict()}"
    details = " ".join(c.detail for c in result.checks if not c.ok)
    assert any(w in details for w in REFUSALS), details


# words of a refusal that names the reason (the exact wording is verify's)
REFUSALS = ("outside", "escape", "symlink", "invalid", "does not name")


def test_atomic_folder_write_never_follows_a_symlink(tmp_path):
    """Writing a folder output whose name is a symlink to another folder replaces the
    link; the folder it pointed to is left exactly as it was."""
    from evit_export.core.atomic import atomic_path

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pkg").symlink_to(elsewhere)
    with atomic_path(out / "pkg", directory=True) as tmp:
        tmp.mkdir()
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    assert (elsewhere / "keep.txt").read_text() == "keep me\n"
    assert not (out / "pkg").is_symlink()
    assert (out / "pkg" / "manifest.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["pkg"], "a temporary was left behind"
    # a file output through a symlink: the link is replaced, its target untouched
    (out / "model.onnx").symlink_to(elsewhere / "keep.txt")
    with atomic_path(out / "model.onnx") as tmp:
        tmp.write_bytes(b"new")
    assert (elsewhere / "keep.txt").read_text() == "keep me\n"
    assert (out / "model.onnx").read_bytes() == b"new"
    assert not (out / "model.onnx").is_symlink()


@pytest.mark.parametrize("scale", SCALE)
def test_zz_report_counts(capsys, scale):
    """Prints how many cases each reader saw (pytest runs a module's tests in file order: this one is last)."""
    with capsys.disabled():
        print("\nfuzz cases:", json.dumps(COUNTS), "total", sum(COUNTS.values()))
