import os

import torch

# Keep tests deterministic and light on this 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_timm_model(variant: str, img_size: int = 224, seed: int = 0, num_classes: int = 1000):
    """timm's reference EfficientViT with realistic random weights (non-zero gammas,
    random BN statistics and attention biases)."""
    import timm

    from evit_export.models import randomize_

    model = timm.create_model(f"efficientvit_{variant}", img_size=img_size, num_classes=num_classes)
    return randomize_(model, seed=seed).eval()


def timm_to_official(state: dict) -> dict:
    """Rename a timm-layout state dict to microsoft/Cream's layout (the inverse of what
    the loader does, written independently here: blocksN indices, c/l leaf names)."""
    out = {}
    patch = {"conv1": "0", "conv2": "2", "conv3": "4", "conv4": "6"}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "patch_embed":
            parts[1] = patch[parts[1]]
        elif parts[0] == "stages":
            stage = int(parts[1])
            if parts[2] == "downsample":
                idx = {"res1": 0, "patchmerge": 1, "res2": 2}[parts[3]]
                parts = [f"blocks{stage + 1}", str(idx)] + parts[4:]
            else:
                offset = 3 if stage > 0 else 0
                parts = [f"blocks{stage + 1}", str(int(parts[3]) + offset)] + parts[4:]
        parts = ["c" if p == "conv" else "l" if p == "linear" else p for p in parts]
        out[".".join(parts)] = value
    return out


def write_digits_folder(root, count: int, size: int = 32, broken_in: str = "0"):
    """An ImageFolder of ``count`` real training digits as PNGs, plus one unreadable
    file in class ``broken_in`` (loaders must skip it, not fail)."""
    import numpy as np
    from PIL import Image

    from evit_export.data import digits_pixels

    pixels, labels = (a[:count] for a in digits_pixels("train", size))
    for i, (p, y) in enumerate(zip(pixels, labels)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p.transpose(1, 2, 0).astype(np.uint8)).save(root / str(y) / f"{i}.png")
    (root / broken_in / "broken.png").write_bytes(b"garbage")
    return root


# The fast unit layer (``pytest -m "not slow and not integration"``, under a minute on two
# cores): modules that compute in process. Every other test starts processes, converters,
# runtimes, servers or browsers, and so do the named tests of the unit modules below.
UNIT_MODULES = {"test_layers.py", "test_data.py", "test_interrupt.py", "test_models.py", "test_devices.py",
                "test_provenance.py"}
INTEGRATION_TESTS = {"test_provenance.py::test_api_pretrained_through_a_local_server",  # an http.server
                     "test_provenance.py::test_spec_names_weights_without_machine_paths",  # exports
                     "test_devices.py::test_calibrate_small_reference_set",  # onnxruntime sessions
                     "test_models.py::test_deploy_graph_traces_and_exports"}  # an ONNX export


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        test = f"{item.path.name}::{item.originalname}"
        if item.path.name not in UNIT_MODULES or test in INTEGRATION_TESTS:
            item.add_marker(pytest.mark.integration)
