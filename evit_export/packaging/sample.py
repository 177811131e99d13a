"""sample.png and expected.json: an image every app test classifies (one of the user's
own where given), and what PyTorch and the packaged runtime said about it when the
package was written."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.metrics import softmax
from evit_export.core.preprocess import _interp, _to_rgb, image_to_pixels, list_images, normalize
from evit_export.data import is_digits_model
from evit_export.data.digits import _digits_raw, digit_levels, digits_split_indices
from evit_export.packaging.preprocessing import sample_side

SAMPLE = "sample.png"
EXPECTED = "expected.json"
# A held-out scan from the embedded digits (real 8x8 handwriting); fixed so every
# package of the digits model carries the same picture. Other models get one of the
# user's images, or a generated pattern that says what it is.
SAMPLE_CLASS, SAMPLE_NTH = 3, 0
OWN_SAMPLE_HINT = "pass --images DIR or --sample IMG to ship one of your own images instead"


@dataclass
class Sample:
    image: object  # PIL RGB image, saved as sample.png
    source: str  # "images" (first of --images), "sample" (--sample IMG), "digits" or "generated"
    description: str
    file: str | None = None  # the user's file, relative to --images (never a machine path)

    def record(self) -> dict:
        """What manifest.json says about the sample."""
        return {"image": SAMPLE, "source": self.source, **({"file": self.file} if self.file else {}),
                "description": self.description}


def sample_image(spec, images=None, sample=None) -> Sample:
    """The package's sample: ``sample`` (an image file) if given, else the first readable
    image of ``images`` (a folder), else the digit scan for the digits model, else a
    generated pattern. Never an error for want of images."""

    if sample is not None:
        path = Path(sample)
        return _user_sample(spec, path, _read_rgb(path, f"sample image {path}"), "sample", path.name)
    if images is not None:
        for path, _ in list_images(Path(images)):
            with contextlib.suppress(UserError):
                rel = path.relative_to(Path(images)).as_posix()
                return _user_sample(spec, path, _read_rgb(path, str(path)), "images", rel)
    if is_digits_model(spec):
        return _digit_sample(spec)
    return _generated_sample(spec)


def _read_rgb(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError


    if not path.is_file():
        raise UserError(f"{what} does not exist: give an image file (.png, .jpg)")
    try:
        with Image.open(path) as im:
            return _to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise UserError(f"{what} is not a readable image: give a .png or .jpg file") from None


def _tool_resize(rgb, spec):
    """``rgb`` with its shorter side brought to floor(img_size / crop_pct) by the tool's own
    resize: the model sees the same pixels as on the original, the apps' resize step is
    the identity and only their centre crop acts (and the file stays small)."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF


    t = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    t = TF.resize(t, sample_side(spec), interpolation=_interp(spec.interpolation), antialias=True)
    return Image.fromarray(t.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def _user_sample(spec, path: Path, rgb, source: str, name: str) -> Sample:
    image = _tool_resize(rgb, spec)
    origin = "the first image of --images" if source == "images" else "--sample"
    description = (f"your image {name} ({origin}), {rgb.width}x{rgb.height}, resized by the tool to "
                   f"{image.width}x{image.height} (the model sees the same pixels as on the original)")
    return Sample(image, source, description, name)


def _digit_sample(spec) -> Sample:
    """The digit scan rendered to a square of side floor(img_size / crop_pct) with the
    tool's own resize, so the app's resize step is the identity and only the crop acts."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF


    scans, targets = _digits_raw()
    _, val = digits_split_indices()
    index = int(val[targets[val] == SAMPLE_CLASS][SAMPLE_NTH])
    grey = torch.from_numpy(digit_levels(scans[index]))[None].expand(3, -1, -1).contiguous()
    side = sample_side(spec)
    rgb = TF.resize(grey, [side, side], interpolation=_interp(spec.interpolation), antialias=True)
    description = (f"scikit-learn digits scan #{index} (a handwritten '{SAMPLE_CLASS}', 8x8, held out from "
                   f"training), rendered to {side}x{side} with the tool's {spec.interpolation} resize")
    return Sample(Image.fromarray(rgb.permute(1, 2, 0).numpy(), mode="RGB"), "digits", description)


def _generated_sample(spec) -> Sample:
    """A fixed colour pattern (gradients, rings and an edge) of side floor(img_size /
    crop_pct): it exercises every channel and the crop, and claims to be no class."""
    from PIL import Image

    side = sample_side(spec)
    y, x = np.mgrid[0:side, 0:side] / max(1, side - 1)
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * 4 * np.hypot(x - 0.35, y - 0.6))
    rgb = np.stack([255 * x, 255 * (0.25 + 0.5 * rings * (1 - y)), 255 * np.where(x + y > 1.1, 0.85, 0.15 + 0.3 * y)],
                   axis=-1)
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")
    description = (f"a generated test pattern ({side}x{side}), not a photo: its top-1 means nothing, it only "
                   f"checks that an app reproduces expected.json; {OWN_SAMPLE_HINT}")
    return Sample(image, "generated", description)


def top_k(scores: np.ndarray, labels: list[str], k: int = 5, probabilities: bool = False) -> list[dict]:
    probs = scores if probabilities else softmax(scores.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]


def expected_record(image, description: str, spec, reference, runner) -> dict:
    """PyTorch's logits and top-5 on ``image`` after the full preprocessing, and the
    packaged runtime's, as ``verify-package`` will re-run it."""
    import torch


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


def compare_with_expected(recorded: dict, outputs: np.ndarray) -> str | None:
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
