"""Checkpoint bad input, URL download, and the models/fold commands."""
import functools
import hashlib
import http.server
import json
import threading

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli, run_cli_process
from conftest import make_timm_model, timm_to_official
from evit_export import load_model


@pytest.fixture(scope="module")
def m0_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    ref = make_timm_model("m0", seed=11)
    torch.save({"model": timm_to_official(ref.state_dict())}, d / "m0_official.pth")
    torch.save(ref.state_dict(), d / "m0_timm.pth")
    return d, ref


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["m0"]["params"] == 2_349_436
    assert rows["m5"]["params"] == 12_473_772
    assert {"name", "params", "macs", "img_size", "paper_top1"} <= set(rows["m3"])


def test_fold_command(capsys, m0_checkpoint, tmp_path):
    d, ref = m0_checkpoint
    code, out, err = run_cli(capsys, "fold", "--variant", "m0", "--checkpoint", d / "m0_official.pth",
                             "--out", tmp_path / "deploy.safetensors")
    assert code == 0, err
    assert "max |logit diff|" in out
    deployed = load_model(None, tmp_path / "deploy.safetensors")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (deployed(x) - ref(x)).abs().max().item() <= 1e-4


def test_bad_checkpoints(capsys, m0_checkpoint, tmp_path):
    d, ref = m0_checkpoint
    out = tmp_path / "o.safetensors"
    cases = []
    # missing file
    cases.append(((tmp_path / "missing.pth"), "m0", "does not exist"))
    # truncated file
    data = (d / "m0_timm.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    cases.append((tmp_path / "trunc.pth", "m0", "truncated or corrupt"))
    # garbage
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    cases.append((tmp_path / "junk.safetensors", "m0", "safetensors"))
    # another variant: name the one that fits
    cases.append((d / "m0_timm.pth", "m2", "pass --variant m0"))
    # missing / unexpected keys
    sd = dict(ref.state_dict())
    sd.pop("stages.1.blocks.0.ffn0.m.pw1.conv.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "keys.pth")
    cases.append((tmp_path / "keys.pth", "m0", "missing keys"))
    # pickled code is refused
    torch.save({"model": ref.state_dict(), "cfg": functools.partial(print)}, tmp_path / "code.pth")
    cases.append((tmp_path / "code.pth", "m0", "pickled code"))
    # a photo, or a text file, passed as the checkpoint: named for what it is
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "IMG_0001.jpg")
    cases.append((tmp_path / "IMG_0001.jpg", "m0", "is not a checkpoint (a JPEG image)"))
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    (tmp_path / "cat.pth").write_bytes((tmp_path / "cat.png").read_bytes())
    cases.append((tmp_path / "cat.pth", "m0", "is not a checkpoint (a PNG image)"))
    (tmp_path / "notes.pth").write_text("weights are elsewhere\n")
    cases.append((tmp_path / "notes.pth", "m0", "is not a checkpoint (neither a PyTorch .pth file nor safetensors)"))
    for path, variant, needle in cases:
        code, _, err = run_cli(capsys, "fold", "--variant", variant, "--checkpoint", path, "--out", out)
        line = assert_one_line_error(code, err)
        assert needle in line, line
    # another num_classes: suggest --num-classes
    code, _, err = run_cli(capsys, "fold", "--checkpoint", d / "m0_timm.pth", "--num-classes", "10",
                           "--out", out)
    assert "--num-classes 1000" in assert_one_line_error(code, err)
    assert not out.exists()


def test_bad_input_real_process(m0_checkpoint, tmp_path):
    proc = run_cli_process("fold", "--variant", "m7", "--out", tmp_path / "x.safetensors")
    assert_one_line_error(proc.returncode, proc.stderr)
    assert "unknown variant" in proc.stderr


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_download_cached_and_verified(m0_checkpoint, tmp_path, monkeypatch):
    d, ref = m0_checkpoint
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(d)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m0_official.pth"
        sha = hashlib.sha256((d / "m0_official.pth").read_bytes()).hexdigest()
        model = load_model("m0", f"{url}#sha256={sha}")
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            assert (model(x) - ref(x)).abs().max().item() <= 1e-4
        from evit_export.core.errors import UserError

        with pytest.raises(UserError, match="sha256"):
            load_model("m0", f"{url}?copy=2#sha256={'0' * 64}")
        cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
        # the corrupt download left nothing behind; the good one has its sha256 recorded
        assert len(cached) == 2
        assert cached[1] == cached[0] + ".sha256"
        assert (tmp_path / "cache" / cached[1]).read_text().split()[0] == sha
        server.shutdown()  # the cache is reused without the server
        load_model("m0", f"{url}#sha256={sha}")
    finally:
        server.shutdown()
        server.server_close()
