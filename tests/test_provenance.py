"""Artifacts record their weights by file name and sha256, never a machine path, and
can still be checked with no flags on the machine that made them (or anywhere the
weights are found by sha256); the API's pretrained=True goes through the same record."""
from __future__ import annotations

import json
import shutil

import pytest

from cli_helpers import assert_one_line_error, run_cli
from evit_export.core.errors import UserError


@pytest.fixture
def folded_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    ck = tmp_path / "weights" / "m0_digits.safetensors"
    ck.parent.mkdir()
    code, _, err = run_cli(capsys, "fold", "--variant", "m0", "--img-size", "64", "--num-classes", "10", "--seed", "3",
                           "--out", ck)
    assert code == 0, err
    return ck


def test_spec_names_weights_without_machine_paths(folded_checkpoint, tmp_path, capsys):
    import evit_export
    from evit_export.targets import open_artifact

    out = tmp_path / "art" / "m0.onnx"
    out.parent.mkdir()
    code, _, err = run_cli(capsys, "onnx", "-c", folded_checkpoint, "--out", out)
    assert code == 0, err
    _, _, spec = open_artifact(out)
    assert spec.source["checkpoint"] == "m0_digits.safetensors"
    assert len(spec.source["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(spec.to_dict())
    assert str(tmp_path).encode() not in out.read_bytes()
    # Same machine, no flags: the cache's index finds the weights by sha256.
    assert evit_export.check(out).passed
    # Moved away: found beside the artifact by name and sha256 ...
    moved = out.parent / folded_checkpoint.name
    shutil.move(folded_checkpoint, moved)
    shutil.move(folded_checkpoint.with_suffix(".json"), moved.with_suffix(".json"))
    assert evit_export.check(out).passed
    # ... and a same-named file with other bytes is not the weights.
    moved.write_bytes(moved.read_bytes()[:-1] + b"\0")
    with pytest.raises(UserError, match="not on this machine"):
        evit_export.check(out)
    code, _, err = run_cli(capsys, "check", out)
    assert "--checkpoint" in assert_one_line_error(code, err)


def test_api_pretrained_through_a_local_server(tmp_path, monkeypatch):
    import torch

    import evit_export
    from conftest import make_timm_model, timm_to_official
    from evit_export.models.checkpoint import PRETRAINED_URL_ENV
    from test_pretrained import serve

    root = tmp_path / "zoo"
    (root / "releases").mkdir(parents=True)
    ref = make_timm_model("m0", seed=7)
    torch.save({"model": timm_to_official(ref.state_dict())}, root / "releases" / "efficientvit_m0.pth")
    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    with serve(root) as base:
        monkeypatch.setenv(PRETRAINED_URL_ENV, base)
        model = evit_export.load_model("m0", pretrained=True)
    source = model.spec.source
    assert source["checkpoint"].endswith("efficientvit_m0.pth")
    assert source["url"].startswith("http")
    assert str(tmp_path) not in json.dumps(source)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4
    # Offline afterwards (server gone): the reference model comes from the cache by sha256.
    from evit_export.models.reference import reference_model

    again = reference_model(model.spec, folded=False)
    with torch.no_grad():
        assert (again(x) - ref(x)).abs().max().item() <= 1e-4
