"""``--pretrained imagenet`` / ``build_model(..., pretrained=True)``: the official weights
fetched through the real download path from a local http.server standing in for the
model-zoo host (``EVIT_EXPORT_PRETRAINED_URL``), sha256 recorded and printed on first
download, used offline from the cache afterwards, a progress bar on a terminal."""
import contextlib
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import assert_one_line_error, run_cli_process
from conftest import make_timm_model, timm_to_official
from evit_export.core.errors import UserError
from evit_export.models import build_model
from evit_export.models.checkpoint import PRETRAINED_URL_ENV


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler,
                                                                                 directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/releases"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A folder laid out like the release host: releases/efficientvit_m0.pth in the official format."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "releases").mkdir()
    ref = make_timm_model("m0", seed=5)
    path = root / "releases" / "efficientvit_m0.pth"
    torch.save({"model": timm_to_official(ref.state_dict())}, path)
    return root, ref, hashlib.sha256(path.read_bytes()).hexdigest()


def _same_outputs(model, ref):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x) - ref(x)).abs().max().item() <= 1e-4


def test_download_records_sha256_then_works_offline(zoo, tmp_path, monkeypatch, capsys):
    root, ref, sha = zoo
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    with serve(root) as base:
        monkeypatch.setenv(PRETRAINED_URL_ENV, base)
        model = build_model("m0", pretrained=True)
        err = capsys.readouterr().err
    assert _same_outputs(model, ref)
    assert model.spec.num_classes == 1000
    assert f"sha256 {sha}" in err
    assert f"{base}/efficientvit_m0.pth" in err
    records = list((tmp_path / "cache").glob("*.sha256"))
    assert len(records) == 1
    assert records[0].read_text().split()[0] == sha
    # the server is gone: the cache serves it, silently
    again = build_model("m0", pretrained=True, num_classes=4, reset_head=True)
    assert "downloaded" not in capsys.readouterr().err
    assert again.head_reinitialised
    assert again.spec.num_classes == 4
    # a cached file that no longer matches its record is refused, not used
    cached = records[0].with_suffix("")
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(UserError, match="does not match its sha256"):
        build_model("m0", pretrained=True)


def test_pretrained_needs_a_variant_and_no_checkpoint(tmp_path):
    with pytest.raises(UserError, match="needs a variant"):
        build_model(None, pretrained=True)
    with pytest.raises(UserError, match="not both"):
        build_model("m0", tmp_path / "x.pth", pretrained=True)


def test_progress_bar_shows_on_a_terminal(zoo, tmp_path):
    """The download bar on a real pseudo-terminal (rich draws nothing into a pipe)."""
    import pty

    root, _, _ = zoo
    with serve(root) as base:
        env = dict(os.environ, EVIT_EXPORT_CACHE=str(tmp_path / "cache"), TERM="xterm-256color",
                   **{PRETRAINED_URL_ENV: base})
        env.pop("NO_COLOR", None)
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-c", "from evit_export.models import build_model; "
                                 "build_model('m0', pretrained=True)"], stdin=slave, stdout=slave, stderr=slave,
                                env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "download efficientvit_m0.pth" in screen
    assert "━" in screen  # rich's bar
    assert "MB" in screen  # DownloadColumn: bytes done / total


def _tiny_folder(root):
    rng = np.random.default_rng(3)
    for c in ("cat", "dog", "fox"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "train" / c / f"{i}.png")
    return root


def test_train_pretrained_imagenet_from_cache(zoo, tmp_path):
    root, ref, sha = zoo
    data = _tiny_folder(tmp_path / "ds")
    env = dict(os.environ, EVIT_EXPORT_CACHE=str(tmp_path / "cache"))
    args = ("train", "--data", data, "--pretrained", "imagenet", "--img-size", 32, "--epochs", 1,
            "--batch-size", 6, "--threads", 1, "--no-progress")
    with serve(root) as base:
        env[PRETRAINED_URL_ENV] = base
        first = run_cli_process(*args, "--out", tmp_path / "ft", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert f"sha256 {sha}" in first.stderr
    assert "fine-tuning from the official ImageNet weights of EfficientViT-M0 (head re-initialised)" in first.stderr
    assert "classifier head re-initialised: 1000 -> 3 classes" in first.stderr
    model = build_model(checkpoint=tmp_path / "ft" / "model.safetensors")
    assert model.spec.labels == ["cat", "dog", "fox"]
    body = "patch_embed.conv1.conv.weight"
    w0, w1 = ref.state_dict()[body], model.state_dict()[body]
    assert (w1 - w0).abs().mean() < 0.5 * w0.abs().mean()  # started from the ImageNet body
    # offline (server gone): from the cache, nothing downloaded
    second = run_cli_process(*args, "--out", tmp_path / "ft2", env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "downloaded" not in second.stderr


def test_unreachable_host_without_cache_is_one_line(tmp_path):
    with serve(tmp_path) as base:  # a port that answers nothing useful once closed
        pass
    env = dict(os.environ, EVIT_EXPORT_CACHE=str(tmp_path / "cache"), **{PRETRAINED_URL_ENV: base})
    proc = run_cli_process("train", "--pretrained", "imagenet", "--img-size", 32, "--epochs", 1,
                           "--out", tmp_path / "run", "--no-progress", env=env, timeout=300)
    line = assert_one_line_error(proc.returncode, proc.stderr)
    assert "cannot download" in line
    assert "efficientvit_m0.pth" in line
    assert not (tmp_path / "run").exists()
