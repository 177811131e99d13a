"""Bad input across every command, one table: each case must end in exit 2, no
traceback, one line naming the problem (typer's own usage errors may keep their short
usage block above it), and nothing written anywhere (every file under the workspace,
shared artifacts included, is byte-identical afterwards; no temp file is left).

Cases run in-process (``run_cli``) in a per-case working directory, so a default
output path (``out/…``) would be caught too; the few cases where a separate process
matters (pickled code) also run as real processes.

A second part checks the image forms users actually have (CMYK, 16-bit, palette,
alpha, grayscale, EXIF-rotated): each must be converted to the same RGB pixels a
plain RGB file of the same picture gives.
"""
from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli, run_cli_process

ROOT = Path(__file__).resolve().parents[1]
IMG = 64
CLASSES = 10


def _cli(*args, cwd=None, timeout=600):
    proc = run_cli_process(*args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Real artifacts of one small model (M0, 64 px, 10 classes, seeded realistic
    weights), built once through the CLI, plus the bad files derived from them."""
    import torch

    d = tmp_path_factory.mktemp("shared")
    ck = d / "m0.safetensors"
    _cli("fold", "-v", "m0", "--seed", "0", "--img-size", IMG, "--num-classes", CLASSES, "-o", ck)
    # the three exports in parallel: they are independent processes
    procs = [subprocess.Popen([sys.executable, "-m", "evit_export", cmd, "-c", str(ck), "-o", str(d / name),
                               "--no-check"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd, name in (("onnx", "m0.onnx"), ("tflite", "m0.tflite"), ("coreml", "m0.mlpackage"))]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, f"{p.args}: exit {p.returncode}\n{err[-3000:]}"

    from evit_export import load_model

    training = load_model("m0", None, num_classes=CLASSES, img_size=IMG)
    from evit_export.models import randomize_

    randomize_(training, seed=0)
    state = training.state_dict()
    torch.save(state, d / "m0_train.pth")
    # the same keys, one tensor with the wrong shape / every tensor an integer dtype
    bad_shape = dict(state)
    key = "patch_embed.conv1.conv.weight"
    bad_shape[key] = bad_shape[key][:, :2]
    torch.save(bad_shape, d / "wrong_shape.pth")
    torch.save({k: v.to(torch.int32) for k, v in state.items()}, d / "wrong_dtype.pth")
    from safetensors.torch import save_file

    save_file({k: v.to(torch.int32).contiguous() for k, v in state.items()
               if not k.endswith("attention_bias_idxs")}, str(d / "wrong_dtype.safetensors"))
    # a pickle that would run code when unpickled: it creates a marker file
    marker = d / "PWNED"
    (d / "evil.pth").write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    with open(d / "evil_zip.pth", "wb") as f:  # the same payload inside torch's zip format
        torch.save({"model": _Payload(str(marker))}, f)

    blob = ck.read_bytes()
    (d / "empty.safetensors").write_bytes(b"")
    (d / "trunc.safetensors").write_bytes(blob[: len(blob) // 2])
    for suffix in ("onnx", "tflite"):
        data = (d / f"m0.{suffix}").read_bytes()
        (d / f"empty.{suffix}").write_bytes(b"")
        (d / f"trunc.{suffix}").write_bytes(data[: len(data) // 2])
    shutil.copytree(d / "m0.mlpackage", d / "noweights.mlpackage")
    for w in (d / "noweights.mlpackage").rglob("weight.bin"):
        w.unlink()
    (d / "dir.onnx").mkdir()
    (d / "dir.safetensors").mkdir()
    (d / "notes.txt").write_text("not a model\n")
    (d / "a_file").write_text("a file where a folder is expected\n")

    (d / "labels3.txt").write_text("cat\ndog\nbird\n")
    (d / "labels_latin1.txt").write_bytes("".join(f"caf\xe9 {i}\n" for i in range(CLASSES)).encode("latin-1"))

    (d / "empty_dir").mkdir()
    junk = d / "junk_images"
    (junk / "0").mkdir(parents=True)
    (junk / "0" / "a.jpg").write_bytes(b"not a jpeg")
    (junk / "0" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    bomb = d / "bomb_images"
    (bomb / "0").mkdir(parents=True)
    (bomb / "0" / "bomb.png").write_bytes(_png_bomb(20000))
    one_class = d / "one_class"
    (one_class / "only").mkdir(parents=True)
    _rgb_image(7).save(one_class / "only" / "a.png")
    eleven = d / "eleven_classes"  # one class folder more than the model has classes
    for i in range(CLASSES + 1):
        (eleven / f"c{i:02d}").mkdir(parents=True)
        _rgb_image(i).save(eleven / f"c{i:02d}" / "a.png")
    good = d / "good_images"
    for i in range(CLASSES):
        (good / str(i)).mkdir(parents=True)
        _rgb_image(i).save(good / str(i) / "a.png")
    return d


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: code execution, if it ever happens."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png_bomb(side: int) -> bytes:
    """A valid 1-bit grayscale PNG of side×side pixels, all zero: 50 kB on disk,
    400 megapixels decoded (past Pillow's decompression-bomb limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _rgb_image(seed: int, size=(48, 40)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    # smooth content, so resampling differences between forms stay small
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([(x * 5 + seed * 10) % 256, (y * 6) % 256, ((x + y) * 3) % 256], -1)
    noise = rng.integers(0, 8, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


@dataclass
class Case:
    id: str
    args: tuple
    expect: str  # a regex the error line must match (case-insensitive)
    process: bool = False  # also run as a real process
    keep_marker: bool = False
    files: dict = field(default_factory=dict)


S = "{S}"  # shared artifact folder
W = "{W}"  # this case's working folder (empty, the cwd)

CASES = [
    # --- fold / checkpoints ---
    Case("fold-missing-file", ("fold", "-c", f"{W}/missing.pth", "-o", f"{W}/o.safetensors"), r"does not exist"),
    Case("fold-directory-checkpoint", ("fold", "-c", f"{S}/dir.safetensors", "-o", f"{W}/o.safetensors"),
         r"is a directory"),
    Case("fold-empty-safetensors", ("fold", "-c", f"{S}/empty.safetensors", "-o", f"{W}/o.safetensors"),
         r"safetensors"),
    Case("fold-truncated-safetensors", ("fold", "-c", f"{S}/trunc.safetensors", "-o", f"{W}/o.safetensors"),
         r"safetensors"),
    Case("fold-pickle-code", ("fold", "-v", "m0", "-c", f"{S}/evil.pth", "-o", f"{W}/o.safetensors"),
         r"pickled code|code", process=True),
    Case("fold-pickle-code-zip", ("fold", "-v", "m0", "-c", f"{S}/evil_zip.pth", "-o", f"{W}/o.safetensors"),
         r"pickled code|code", process=True),
    Case("fold-wrong-shape", ("fold", "-v", "m0", "--img-size", IMG, "-c", f"{S}/wrong_shape.pth",
                              "-o", f"{W}/o.safetensors"), r"shape|fits no"),
    Case("fold-wrong-dtype-pth", ("fold", "-v", "m0", "--img-size", IMG, "-c", f"{S}/wrong_dtype.pth",
                                  "-o", f"{W}/o.safetensors"), r"dtype|int32|float"),
    Case("fold-wrong-dtype-safetensors", ("fold", "-c", f"{S}/wrong_dtype.safetensors",
                                          "-o", f"{W}/o.safetensors"), r"dtype|int32|float"),
    Case("fold-other-variant", ("fold", "-v", "m2", "-c", f"{S}/m0_train.pth", "-o", f"{W}/o.safetensors"),
         r"m0"),
    Case("fold-wrong-num-classes", ("fold", "-c", f"{S}/m0_train.pth", "--num-classes", 5,
                                    "-o", f"{W}/o.safetensors"), r"classes"),
    Case("fold-out-wrong-suffix", ("fold", "-v", "m0", "--seed", 0, "-o", f"{W}/o.pt"), r"safetensors"),
    Case("fold-out-existing-folder", ("fold", "-v", "m0", "--seed", 0, "--img-size", IMG,
                                      "-o", f"{S}/dir.safetensors"), r"director|folder"),
    Case("fold-out-under-a-file", ("fold", "-v", "m0", "--seed", 0, "--img-size", IMG,
                                   "-o", f"{S}/a_file/o.safetensors"), r"a_file|directory|folder"),
    Case("fold-img-size-0", ("fold", "-v", "m0", "--seed", 0, "--img-size", 0, "-o", f"{W}/o.safetensors"),
         r"img.size"),
    Case("fold-num-classes-zero", ("fold", "-v", "m0", "--seed", 0, "--num-classes", 0, "-o", f"{W}/o.safetensors"),
         r"classes"),
    Case("onnx-num-classes-negative", ("onnx", "-v", "m0", "--seed", 0, "--num-classes", -3, "-o", f"{W}/m.onnx"),
         r"classes"),
    Case("fold-unknown-variant", ("fold", "-v", "m9", "--seed", 0, "-o", f"{W}/o.safetensors"), r"m9|variant"),
    # --- onnx ---
    Case("onnx-img-size-0", ("onnx", "-v", "m0", "--seed", 0, "--img-size", 0, "-o", f"{W}/m.onnx"),
         r"img.size"),
    Case("onnx-batch-negative", ("onnx", "-c", f"{S}/m0.safetensors", "--batch", -1, "-o", f"{W}/m.onnx"),
         r"batch"),
    Case("onnx-unknown-precision", ("onnx", "-c", f"{S}/m0.safetensors", "--precision", "int4",
                                    "-o", f"{W}/m.onnx"), r"int4|precision"),
    Case("onnx-out-proc", ("onnx", "-c", f"{S}/m0.safetensors", "--out", "/proc/x.onnx"), r"/proc"),
    Case("onnx-out-existing-folder", ("onnx", "-c", f"{S}/m0.safetensors", "--out", f"{S}/dir.onnx"),
         r"director|folder"),
    Case("onnx-out-under-a-file", ("onnx", "-c", f"{S}/m0.safetensors", "--out", f"{S}/a_file/m.onnx"),
         r"a_file|directory|folder"),
    Case("onnx-calibration-empty-folder", ("onnx", "-c", f"{S}/m0.safetensors", "--precision", "int8",
                                           "--calibration-data", f"{S}/empty_dir", "-o", f"{W}/m.onnx"),
         r"image"),
    Case("onnx-calibration-unreadable", ("onnx", "-c", f"{S}/m0.safetensors", "--precision", "int8",
                                         "--calibration-data", f"{S}/junk_images", "-o", f"{W}/m.onnx"),
         r"image|readable"),
    Case("onnx-calibration-bomb", ("onnx", "-c", f"{S}/m0.safetensors", "--precision", "int8",
                                   "--calibration-data", f"{S}/bomb_images", "-o", f"{W}/m.onnx"),
         r"image|readable|pixels|large"),
    Case("onnx-opset-too-old", ("onnx", "-c", f"{S}/m0.safetensors", "--opset", 5, "-o", f"{W}/m.onnx"),
         r"opset"),
    # --- tflite ---
    Case("tflite-unknown-quantize", ("tflite", "-c", f"{S}/m0.safetensors", "-q", "int4", "-o", f"{W}/m.tflite"),
         r"int4|quantiz"),
    Case("tflite-batch-0", ("tflite", "-c", f"{S}/m0.safetensors", "--batch", 0, "-o", f"{W}/m.tflite"),
         r"batch"),
    Case("tflite-out-existing-folder", ("tflite", "-c", f"{S}/m0.safetensors", "-o", f"{S}/dir.onnx"),
         r"director|folder|tflite"),
    Case("tflite-calibration-bomb", ("tflite", "-c", f"{S}/m0.safetensors", "-q", "int8", "--calibration-data",
                                     f"{S}/bomb_images", "-o", f"{W}/m.tflite"), r"image|readable|pixels|large"),
    Case("tflite-checkpoint-missing", ("tflite", "-c", f"{W}/nope.safetensors", "-o", f"{W}/m.tflite"),
         r"does not exist"),
    # --- coreml ---
    Case("coreml-labels-count", ("coreml", "-c", f"{S}/m0.safetensors", "--labels", f"{S}/labels3.txt",
                                 "-o", f"{W}/m.mlpackage"), r"3 labels|labels"),
    Case("coreml-labels-not-utf8", ("coreml", "-c", f"{S}/m0.safetensors", "--labels",
                                    f"{S}/labels_latin1.txt", "-o", f"{W}/m.mlpackage"), r"UTF-8|utf8|encod"),
    Case("coreml-labels-missing", ("coreml", "-c", f"{S}/m0.safetensors", "--labels", f"{W}/labels.txt",
                                   "-o", f"{W}/m.mlpackage"), r"labels"),
    Case("coreml-unknown-precision", ("coreml", "-c", f"{S}/m0.safetensors", "--precision", "int3",
                                      "-o", f"{W}/m.mlpackage"), r"int3|precision"),
    Case("coreml-min-ios-too-old", ("coreml", "-c", f"{S}/m0.safetensors", "--min-ios", 9,
                                    "-o", f"{W}/m.mlpackage"), r"ios|9"),
    # --- check / inspect ---
    Case("check-missing-file", ("check", f"{W}/missing.onnx"), r"does not exist|not found|no such"),
    Case("check-directory-for-file", ("check", f"{S}/dir.onnx"), r"director|folder"),
    Case("check-empty-onnx", ("check", f"{S}/empty.onnx"), r"onnx"),
    Case("check-truncated-onnx", ("check", f"{S}/trunc.onnx"), r"onnx|truncated|corrupt"),
    Case("check-empty-tflite", ("check", f"{S}/empty.tflite"), r"tflite"),
    Case("check-truncated-tflite", ("check", f"{S}/trunc.tflite"), r"tflite|truncated|corrupt"),
    Case("check-mlpackage-missing-weights", ("check", f"{S}/noweights.mlpackage"), r"weight"),
    Case("check-unknown-suffix", ("check", f"{S}/notes.txt"), r"\.txt|suffix|format|artifact"),
    Case("check-images-empty", ("check", f"{S}/m0.onnx", "--images", f"{S}/empty_dir"), r"image"),
    Case("check-images-bomb", ("check", f"{S}/m0.onnx", "--images", f"{S}/bomb_images"),
         r"image|readable|pixels|large"),
    Case("check-n-zero", ("check", f"{S}/m0.onnx", "-n", 0), r"-n|inputs|at least"),
    Case("inspect-truncated-onnx", ("inspect", f"{S}/trunc.onnx"), r"onnx|truncated|corrupt"),
    Case("inspect-empty-tflite", ("inspect", f"{S}/empty.tflite"), r"tflite"),
    Case("inspect-mlpackage-missing-weights", ("inspect", f"{S}/noweights.mlpackage"), r"weight"),
    # --- parity ---
    Case("parity-data-missing", ("parity", f"{S}/m0.onnx", "--data", f"{W}/nodata"), r"does not exist|data"),
    Case("parity-more-classes-than-model", ("parity", f"{S}/m0.onnx", "--data", f"{S}/eleven_classes"),
         r"class|label"),
    Case("parity-limit-negative", ("parity", f"{S}/m0.onnx", "--data", f"{S}/good_images", "--limit", -1),
         r"limit"),
    Case("parity-data-no-readable-image", ("parity", f"{S}/m0.onnx", "--data", f"{S}/junk_images"),
         r"image|readable"),
    Case("parity-truncated-artifact", ("parity", f"{S}/trunc.tflite"), r"tflite|truncated|corrupt"),
    # --- bench ---
    Case("bench-remote-refused", ("bench", f"{S}/m0.onnx", "--remote", "127.0.0.1:1"),
         r"127\.0\.0\.1.*(refused|connect)|(refused|connect).*127\.0\.0\.1"),
    Case("bench-iterations-zero", ("bench", f"{S}/m0.onnx", "--iterations", 0), r"iterations"),
    Case("bench-threads-negative", ("bench", f"{S}/m0.onnx", "--threads", -1), r"threads"),
    Case("bench-unknown-device", ("bench", f"{S}/m0.onnx", "--simulate", "nokia-3310"), r"nokia-3310|device"),
    Case("bench-truncated-tflite", ("bench", f"{S}/trunc.tflite"), r"tflite|truncated|corrupt"),
    # --- package ---
    Case("package-out-is-a-file", ("package", f"{S}/m0.onnx", "-o", f"{S}/notes.txt", "--no-latency"),
         r"notes\.txt|file|folder|director"),
    Case("package-out-proc", ("package", f"{S}/m0.onnx", "-o", "/proc/pkg", "--no-latency"), r"/proc"),
    Case("package-truncated-artifact", ("package", f"{S}/trunc.onnx", "-o", f"{W}/pkg", "--no-latency"),
         r"onnx|truncated|corrupt"),
    Case("package-images-empty", ("package", f"{S}/m0.onnx", "-o", f"{W}/pkg", "--images", f"{S}/empty_dir",
                                  "--no-latency"), r"image"),
    # --- train ---
    Case("train-data-missing", ("train", "--data", f"{W}/nodata", "--out", f"{W}/run"), r"does not exist|data"),
    Case("train-one-class", ("train", "--data", f"{S}/one_class", "--out", f"{W}/run"), r"class"),
    Case("train-unreadable-images", ("train", "--data", f"{S}/junk_images", "--out", f"{W}/run"),
         r"image|readable|class"),
    Case("train-epochs-zero", ("train", "--epochs", 0, "--out", f"{W}/run"), r"epochs"),
    Case("train-batch-negative", ("train", "--batch-size", -1, "--out", f"{W}/run"), r"batch"),
    Case("train-img-size-0", ("train", "--img-size", 0, "--out", f"{W}/run"), r"img.size"),
    Case("train-pretrained-pickle-code", ("train", "--pretrained", f"{S}/evil.pth", "--out", f"{W}/run"),
         r"code", process=True),
    Case("train-resume-nothing", ("train", "--resume", "--out", f"{W}/run"), r"resume|run"),
    # --- demo / models ---
    Case("demo-unknown-target", ("demo", "--targets", "onnx,zip", "--out", f"{W}/demo"), r"zip|target"),
    Case("models-img-size-0", ("models", "--img-size", 0), r"img.size"),
    Case("models-num-classes-0", ("models", "--num-classes", 0), r"classes"),
]


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size, mtime and inode (a rewrite in place changes
    the mtime, an atomic replace the inode), cheap enough to take around every case."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            snap[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return snap


def _fill(args, shared: Path, work: Path) -> list[str]:
    return [str(a).replace(S, str(shared)).replace(W, str(work)) for a in args]


def _assert_user_error(case: Case, code, err: str, out: str) -> None:
    """Exit 2, no traceback, and exactly one error line, the last thing on stderr.
    Progress and note lines before it are allowed (a command may have started
    work); a typer usage error keeps its usage block."""
    import re

    text = err + out
    assert "Traceback" not in text, text[-3000:]
    assert code == 2, f"exit {code}\n{text[-3000:]}"
    lines = [ln.strip(" │╭╮╰╯─") for ln in err.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if any(ln.startswith("Usage:") for ln in lines):  # typer/click usage error
        body = " ".join(ln for ln in lines if not ln.startswith(("Usage:", "Try ")))
    else:
        errors = [ln for ln in lines if ln.lower().startswith("error")]
        assert len(errors) == 1, f"not one error line, last:\n{err}"
        assert lines[-1] == errors[0], f"not one error line, last:\n{err}"
        body = errors[0]
    assert re.search(case.expect, body, re.IGNORECASE), f"{case.expect!r} not in: {body}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, shared, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = _fill(case.args, shared, work)
    before_shared, before_work = _snapshot(shared), _snapshot(work)
    code, out, err = run_cli(capsys, *args)
    _assert_user_error(case, code, err, out)
    if case.process:
        proc = run_cli_process(*args, cwd=work, timeout=300)
        _assert_user_error(case, proc.returncode, proc.stderr, proc.stdout)
    assert not (shared / "PWNED").exists(), "unpickling ran code"
    assert _snapshot(work) == before_work, "something was written into the working folder"
    assert _snapshot(shared) == before_shared, "an input or existing artifact changed"


# ---------------------------------------------------------------------------------------
# Image forms: accepted and converted to the pixels an RGB file of the same picture gives.

def _forms(base):
    """(name, PIL image written and read back from disk, tolerance in 0..255 levels)."""
    from PIL import Image

    rgb = base
    gray = base.convert("L")
    forms = {
        "rgb-png": (rgb, "png", rgb, 0),
        "cmyk-jpeg": (rgb.convert("CMYK"), "jpeg", rgb, 24),
        "cmyk-tiff": (rgb.convert("CMYK"), "tiff", rgb, 2),
        "palette-png": (rgb.quantize(256), "png", rgb, 24),
        "rgba-png": (rgb.convert("RGBA"), "png", rgb, 0),
        "grayscale-png": (gray, "png", gray.convert("RGB"), 0),
        "gray-alpha-png": (gray.convert("LA"), "png", gray.convert("RGB"), 0),
        "gray16-png": (Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "png", gray.convert("RGB"), 1),
    }
    return forms


def _exif_rotated(base, path: Path):
    """The picture stored rotated, with EXIF orientation 6 ("rotate 90° CW to view"),
    as phone cameras write it."""
    from PIL import Image

    stored = base.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "jpeg", quality=98, exif=exif.tobytes())


def test_image_forms_are_converted(tmp_path):

    from evit_export.core.preprocess import load_images
    from evit_export.core.spec import ModelSpec

    spec = ModelSpec("m0", CLASSES, 32, crop_pct=1.0)
    base = _rgb_image(3, size=(64, 48))
    names, expected, tols = [], [], []
    for name, (img, fmt, ref, tol) in _forms(base).items():
        img.save(tmp_path / f"{name}.{fmt}")
        names.append(name)
        expected.append(ref)
        tols.append(tol)
    _exif_rotated(base, tmp_path / "exif-rotated.jpg")
    names.append("exif-rotated")
    expected.append(base)
    tols.append(24)
    pixels, _, used, skipped = load_images(tmp_path, spec)
    assert not skipped, skipped
    by_name = {Path(p).stem: px for p, px in zip(used, pixels)}
    from evit_export.core.preprocess import image_to_pixels

    failures = []
    for name, ref, tol in zip(names, expected, tols):
        want = image_to_pixels(ref, spec)
        diff = np.abs(by_name[name] - want).mean()
        if not diff <= tol:
            failures.append(f"{name}: mean |diff| {diff:.1f} levels (tolerance {tol})")
    assert not failures, "; ".join(failures)
