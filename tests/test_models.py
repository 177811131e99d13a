"""EfficientViT M0–M5 against timm's reference, checkpoint layouts, folding."""
import json

import pytest
import torch

from conftest import make_timm_model, timm_to_official
from evit_export import fold, load_model
from evit_export.models import VARIANTS, canonical_variant
from evit_export.models.deploy import attention_layout
from evit_export.models.profile import variant_table

EXACT_PARAMS = {"m0": 2_349_436, "m1": 2_980_560, "m2": 4_187_554, "m3": 6_900_722,
                "m4": 8_804_228, "m5": 12_473_772}
PAPER_MACS = {"m0": 79, "m1": 167, "m2": 201, "m3": 263, "m4": 299, "m5": 522}


def test_variant_table_exact_params_and_macs():
    rows = {r["name"]: r for r in variant_table()}
    for name in VARIANTS:
        assert rows[name]["params"] == EXACT_PARAMS[name]
        assert abs(rows[name]["macs"] / 1e6 - PAPER_MACS[name]) < 1.0


@pytest.mark.parametrize("alias", ["m3", "M3", "efficientvit_m3", "EfficientViT_M3"])
def test_variant_aliases(alias):
    assert canonical_variant(alias) == "m3"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("img_size", [224, 160])
@pytest.mark.parametrize("layout", ["timm", "official"])
def test_matches_timm_and_fold(variant, img_size, layout, tmp_path):
    ref = make_timm_model(variant, img_size, seed=hash((variant, img_size)) % 1000)
    state = ref.state_dict()
    path = tmp_path / "ck.pth"
    if layout == "official":
        torch.save({"model": timm_to_official(state)}, path)
    else:
        torch.save(state, path)
    model = load_model(variant, path, img_size=img_size)
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
        got = model(x)
        deployed = fold(model)
        folded = deployed(x)
        with attention_layout(deployed, "tokens"):  # the layout int8 ONNX traces: same values
            tokens = deployed(x)
    assert (got - want).abs().max().item() <= 1e-4
    assert (folded - want).abs().max().item() <= 1e-4
    assert (tokens - want).abs().max().item() <= 1e-4
    assert {m.layout for m in deployed.modules() if hasattr(m, "layout")} == {"channels"}  # put back
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in deployed.modules())


def test_other_sizes_with_window_padding():
    # 192 -> 12x12 tokens in stage 1 (padded to 14), 288 -> 18x18 (padded to 21) and 9x9 in stage 2.
    for size in (192, 288):
        ref = make_timm_model("m1", size, seed=3)
        model = load_model("m1", None, img_size=size)
        model.load_state_dict(ref.state_dict())
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            deployed = fold(model)
            assert (deployed(x) - ref(x)).abs().max().item() <= 1e-4
            with attention_layout(deployed, "tokens"):
                assert (deployed(x) - ref(x)).abs().max().item() <= 1e-4


def test_official_2d_pointwise_weights_and_variant_inference(tmp_path):
    ref = make_timm_model("m2", seed=5)
    off = timm_to_official(ref.state_dict())
    for k, v in list(off.items()):
        if v.dim() == 4 and v.shape[2:] == (1, 1) and ".se." in k:
            off[k] = v.flatten(1)
    path = tmp_path / "official.pth"
    torch.save({"model": off}, path)
    model = load_model(None, path)  # variant inferred from shapes
    assert model.spec.variant == "m2"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4


def test_distillation_head_official(tmp_path):
    ref = make_timm_model("m0", seed=2)
    off = timm_to_official(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    for k in [k for k in off if k.startswith("head.")]:
        off[k.replace("head.", "head_dist.")] = off[k] + 0.1 * torch.randn(off[k].shape, generator=g)
    path = tmp_path / "distilled.pth"
    torch.save({"model": off}, path)
    model = load_model("m0", path)
    assert model.distillation
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (fold(model)(x) - model(x)).abs().max().item() <= 1e-4


def test_project_format_round_trip_and_folded(tmp_path):
    from evit_export.models.checkpoint import save_project_checkpoint
    from evit_export.models.reference import prepare_model

    model = prepare_model("m0", num_classes=10, img_size=128, seed=4,
                          labels=[f"digit {i}" for i in range(10)])
    path = save_project_checkpoint(model, model.spec, tmp_path / "m0.safetensors")
    again = load_model(None, path)
    assert again.spec.labels[3] == "digit 3"
    assert again.spec.img_size == 128
    assert again.num_classes == 10
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    folded_path = save_project_checkpoint(fold(model), model.spec, tmp_path / "deploy.safetensors",
                                          extra={"folded": True})
    deployed = load_model(None, folded_path)
    with torch.no_grad():
        assert (deployed(x) - model(x)).abs().max().item() <= 1e-4
    assert json.loads((tmp_path / "deploy.json").read_text())["folded"] is True


def test_resampled_bias_tables_when_size_changes(tmp_path):
    ref = make_timm_model("m0", 224, seed=1)
    torch.save(ref.state_dict(), tmp_path / "m0.pth")
    model = load_model("m0", tmp_path / "m0.pth", img_size=160)  # stage-2 window 7 -> 5
    assert any("resampled" in n for n in model.load_notes)
    assert model(torch.randn(1, 3, 160, 160)).shape == (1, 1000)


def test_deploy_graph_traces_and_exports():
    from evit_export.models.reference import prepare_model

    deployed = fold(prepare_model("m0", seed=0))
    x = torch.randn(1, 3, 224, 224)
    traced = torch.jit.trace(deployed, x)
    assert torch.allclose(traced(x), deployed(x), atol=1e-5)
    exported = torch.export.export(deployed, (x,))
    assert torch.allclose(exported.module()(x), deployed(x), atol=1e-5)
    # No Python ints read from tensor shapes: the graph has no sym_size calls.
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert not any("sym_size" in op for op in ops)
