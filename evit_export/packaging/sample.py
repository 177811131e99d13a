"""sample.png and expected.json: a real image every app test classifies, and what
PyTorch and the packaged runtime said about it when the package was written."""
from __future__ import annotations

import numpy as np

from evit_export.packaging.preprocessing import sample_side

SAMPLE = "sample.png"
EXPECTED = "expected.json"
# A held-out scan from the embedded digits (real 8x8 handwriting); fixed so every
# package of the same model carries the same picture.
SAMPLE_CLASS, SAMPLE_NTH = 3, 0


def sample_image(spec):
    """The digit scan rendered to a square of side floor(img_size / crop_pct) with the
    tool's own resize, so the app's resize step is the identity and only the crop acts."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from evit_export.core.preprocess import _interp
    from evit_export.data.digits import _digits_raw, digit_levels, digits_split_indices

    scans, targets = _digits_raw()
    _, val = digits_split_indices()
    index = int(val[targets[val] == SAMPLE_CLASS][SAMPLE_NTH])
    grey = torch.from_numpy(digit_levels(scans[index]))[None].expand(3, -1, -1).contiguous()
    side = sample_side(spec)
    rgb = TF.resize(grey, [side, side], interpolation=_interp(spec.interpolation), antialias=True)
    description = (f"scikit-learn digits scan #{index} (a handwritten '{SAMPLE_CLASS}', 8x8, held out from "
                   f"training), rendered to {side}x{side} with the tool's {spec.interpolation} resize")
    return Image.fromarray(rgb.permute(1, 2, 0).numpy(), mode="RGB"), description


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def top_k(scores: np.ndarray, labels: list[str], k: int = 5, probabilities: bool = False) -> list[dict]:
    probs = scores if probabilities else softmax(scores.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]


def expected_record(image, description: str, spec, reference, runner) -> dict:
    """PyTorch's logits and top-5 on ``image`` after the full preprocessing, and the
    packaged runtime's, as ``verify-package`` will re-run it."""
    import torch

    from evit_export.core.preprocess import image_to_pixels, normalize

    pixels = image_to_pixels(image, spec)[None]
    with torch.no_grad():
        logits = reference(torch.from_numpy(normalize(pixels, spec))).numpy()[0].astype(np.float64)
    artifact_out = np.asarray(runner.run(pixels), np.float64)[0]
    probabilities = getattr(runner, "output_kind", "logits") == "probabilities"
    pytorch_top = top_k(logits, spec.labels)
    artifact_top = top_k(artifact_out, spec.labels, probabilities=probabilities)
    return {
        "image": SAMPLE,
        "description": description,
        "pytorch": {"logits": logits.tolist(), "top5": pytorch_top},
        "artifact": {"runtime": runner.name, "output_kind": "probabilities" if probabilities else "logits",
                     "outputs": artifact_out.tolist(), "top5": artifact_top},
        "top1_agrees": pytorch_top[0]["index"] == artifact_top[0]["index"],
    }


def compare_outputs(recorded: dict, outputs: np.ndarray) -> str | None:
    """Why the re-run ``outputs`` differ from the recorded ones, or None. Same artifact,
    same runtime: only thread-order noise is allowed."""
    want = np.asarray(recorded["outputs"], np.float64)
    got = np.asarray(outputs, np.float64).reshape(-1)
    if got.shape != want.shape:
        return f"the model gives {got.size} outputs, expected.json recorded {want.size}"
    if not np.all(np.isfinite(got)):
        return "the model's outputs on sample.png are not finite"
    tolerance = 1e-4 * max(1.0, float(np.abs(want).max()))
    diff = float(np.abs(got - want).max())
    if int(got.argmax()) != int(want.argmax()):
        return f"top-1 on sample.png is class {int(got.argmax())}, expected.json recorded {int(want.argmax())}"
    if diff > tolerance:
        return f"outputs on sample.png differ from expected.json by {diff:.3g} (tolerance {tolerance:.3g})"
    return None
