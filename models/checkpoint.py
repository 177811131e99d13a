"""Checkpoint I/O: official model zoo, timm, raw state dicts, and the project format.

The project format is ``NAME.safetensors`` plus ``NAME.json`` (the ModelSpec and,
for training runs, metrics). Nothing here unpickles code: ``.pth`` files are read
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from evit_export.models.efficientvit import VARIANTS, EfficientViT

from evit_export.core.errors import UserError
from evit_export.core.jsonio import dumps_strict
from evit_export.core.paths import cache_dir
from evit_export.core.digest import sha256_file
from evit_export.core.atomic import atomic_path, write_text_atomic

# Official model-zoo releases (microsoft/Cream EfficientViT, mirrored by timm), the
# ImageNet-1K weights behind ``--pretrained imagenet``. Their sha256 could not be
# verified from the build environment (no access to the release host), so none is
# shipped: the first download records the file's sha256 beside it in the cache, says
# it, and every later use checks the cached file against that record.
OFFICIAL_URLS = {
    name: f"https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/efficientvit_{name}.pth"
    for name in VARIANTS
}
# Serve the official files from elsewhere (a mirror, or the tests' local server):
# a base URL that holds efficientvit_m0.pth ... efficientvit_m5.pth.
PRETRAINED_URL_ENV = "EVIT_EXPORT_PRETRAINED_URL"


def is_url(s: str | os.PathLike) -> bool:
    return str(s).startswith(("http://", "https://"))


def pretrained_url(variant: str) -> str:
    """Where the official ImageNet weights of ``variant`` (canonical name) come from."""
    base = os.environ.get(PRETRAINED_URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{Path(urllib.parse.urlsplit(OFFICIAL_URLS[variant]).path).name}"
    return OFFICIAL_URLS[variant]


def fetch_pretrained(variant: str, quiet: bool = False) -> Path:
    """The official ImageNet weights of ``variant``: from the cache, else downloaded."""
    return download(pretrained_url(variant), quiet=quiet)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def download(url: str, sha256: str | None = None, quiet: bool = False) -> Path:
    """``url`` in the cache: downloaded the first time (progress bar on stderr unless
    ``quiet``), read from the cache afterwards, offline. The first download records its
    sha256 in ``FILE.sha256`` and prints it; a cached file that no longer matches that
    record, or a download that does not match ``sha256`` / ``URL#sha256=<hex>``, is an
    error."""
    parsed = urllib.parse.urlsplit(url)
    sha256 = (sha256 or dict(urllib.parse.parse_qsl(parsed.fragment)).get("sha256") or "").lower() or None
    clean = urllib.parse.urlunsplit(parsed._replace(fragment=""))
    name = Path(parsed.path).name or "checkpoint.pth"
    key = hashlib.sha256(clean.encode()).hexdigest()[:12]
    dest = cache_dir() / f"{key}-{name}"
    record = dest.with_name(dest.name + ".sha256")
    if dest.exists():
        _check_cached(dest, record, sha256)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the download cache {dest.parent} ({e.strerror}): set EVIT_EXPORT_CACHE "
                        "to a writable folder") from None
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # processes may download side by side
    try:
        _fetch(clean, tmp, name, quiet)
        got = _sha256(tmp)
        if sha256 is not None and got != sha256:
            raise UserError(f"download of {clean} has sha256 {got[:16]}…, expected {sha256[:16]}…; "
                            "the file is corrupt or not the one you meant")
        record.write_text(f"{got}  {name}\n")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if not quiet:
        _stderr_console().print(f"downloaded {clean} → {dest} (sha256 {got})", highlight=False)
    return dest


def _check_cached(dest: Path, record: Path, sha256: str | None) -> None:
    expected = sha256 or (record.read_text().split()[0] if record.exists() else None)
    if expected is not None and _sha256(dest) != expected:
        raise UserError(f"cached download {dest} does not match its sha256 ({expected[:16]}…): delete it "
                        "to download it again")


def _fetch(url: str, tmp: Path, name: str, quiet: bool) -> None:
    """Stream ``url`` into ``tmp`` with a rich progress bar (shown on a terminal)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    console = _stderr_console()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, Progress(
                    "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=console, disable=quiet or not console.is_terminal,
                    transient=True) as progress:
                task = progress.add_task(f"download {name}", total=total)
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    progress.update(task, advance=len(chunk))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot download {url}: {e}; check the network or the URL, or pass a local file") from None


def _sha256(path: Path) -> str:
    return sha256_file(path)


def weights_sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state dict, metadata); metadata comes from the project sidecar if any."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist: check the path")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory: pass the .pth or .safetensors file")
    meta: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise UserError(f"checkpoint {path} is not a readable safetensors file ({_short(e)}): "
                            "re-save or re-download it") from None
        side = weights_sidecar_path(path)
        if side.exists():
            try:
                meta = json.loads(side.read_text())
            except ValueError:
                raise UserError(f"sidecar {side} is not valid JSON: restore it or delete it and pass "
                                "--variant/--num-classes") from None
        return state, meta
    _refuse_non_torch_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt / code-bearing pickles
        msg = _short(e)
        if "Unsupported global" in str(e) or "Unsupported operand" in str(e):
            raise UserError(f"checkpoint {path} contains pickled code, which evit-export never loads: "
                            "re-save it as a plain state dict or safetensors") from None
        raise UserError(f"checkpoint {path} is truncated or corrupt ({msg}): re-download or re-save it") from None
    return unwrap_state_dict(obj, path), meta


# torch.save writes a zip archive (torch >= 1.6) or a pickle (protocol 2+, first byte 0x80).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _refuse_non_torch_file(path: Path) -> None:
    """A photo, a text file, an ONNX model... passed as a checkpoint: say so by name."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_MAGIC):
        return
    kind = _image_format(path)
    what = f"a {kind} image" if kind else ("an empty file" if not head else "neither a PyTorch .pth file nor "
                                           "safetensors")
    raise UserError(f"{path} is not a checkpoint ({what}): pass a .pth or .safetensors checkpoint")


def _image_format(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def unwrap_state_dict(obj, path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_ema", "ema"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} holds no state dict (expected a dict of tensors, "
                        "optionally under 'model' or 'state_dict')")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    keys = state.keys()
    if any(k.startswith("blocks1.") or k.startswith("patch_embed.0.") for k in keys):
        return "official"
    if any(k.startswith("stages.") for k in keys):
        return "native"
    return "unknown"


_OFFICIAL_PATCH = {"0": "conv1", "2": "conv2", "4": "conv3", "6": "conv4"}
_OFFICIAL_LEAF = {"c": "conv", "l": "linear", "conv_reduce": "fc1", "conv_expand": "fc2"}


def official_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename microsoft/Cream keys (blocks1/2/3, c/bn/l) to the timm-style layout."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "patch_embed" and parts[1] in _OFFICIAL_PATCH:
            parts[1] = _OFFICIAL_PATCH[parts[1]]
        else:
            m = re.fullmatch(r"blocks([123])", parts[0])
            if m:
                stage = int(m.group(1)) - 1
                idx = int(parts[1])
                if stage == 0:
                    prefix = ["stages", "0", "blocks", str(idx)]
                elif idx < 3:
                    prefix = ["stages", str(stage), "downsample", ("res1", "patchmerge", "res2")[idx]]
                else:
                    prefix = ["stages", str(stage), "blocks", str(idx - 3)]
                parts = prefix + parts[2:]
        parts = [_OFFICIAL_LEAF.get(p, p) for p in parts]
        out[".".join(parts)] = value
    return out


def _expected_shapes(variant: str, num_classes: int, img_size: int, distillation: bool = False):
    with torch.device("meta"):
        model = EfficientViT(variant, num_classes=num_classes, img_size=img_size, distillation=distillation)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape_key_ok(key: str) -> bool:
    # Head shapes depend on num_classes, bias tables on img_size.
    return not (key.startswith(("head.", "head_dist.")) or "attention_bias" in key)


def infer_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The variant whose architecture the tensor shapes fit, if any."""
    for name in VARIANTS:
        shapes = _expected_shapes(name, 1000, 224)
        body = {k: s for k, s in shapes.items() if _shape_key_ok(k)}
        have = {k: tuple(v.shape) for k, v in state.items() if _shape_key_ok(k)}
        if set(body) == set(have) and all(_same_shape(body[k], have[k]) for k in body):
            return name
    return None


def _same_shape(expected: tuple, got: tuple) -> bool:
    return expected == got or (len(expected) == 4 and expected[2:] == (1, 1) and got == expected[:2])


def infer_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    w = state.get("head.linear.weight")
    return int(w.shape[0]) if w is not None else None


def resample_attention_biases(table: torch.Tensor, resolution: int) -> torch.Tensor:
    """(heads, r0*r0) bias table on an r0 x r0 offset grid -> (heads, r*r), bicubic.

    Used when a checkpoint trained at one input size is loaded at another; the
    offsets are numbered row-major over |dy|, |dx| (see ``attention_offset_index``).
    """
    heads, n0 = table.shape
    r0 = int(round(n0 ** 0.5))
    grid = table.reshape(1, heads, r0, r0).float()
    out = torch.nn.functional.interpolate(grid, size=(resolution, resolution), mode="bicubic",
                                          align_corners=True)
    return out.reshape(heads, resolution * resolution).to(table.dtype)


def adapt_state_dict(state: dict[str, torch.Tensor], model: EfficientViT, notes: list[str]) -> dict:
    """Reshape 2-D 1x1 conv weights, resize bias tables, drop derived index buffers."""
    target = model.state_dict()
    out = {}
    resized = False
    for key, value in state.items():
        if key.endswith("attention_bias_idxs"):
            continue  # derived from the resolution; rebuilt by the model
        want = target.get(key)
        if want is not None and want.shape != value.shape:
            if want.dim() == 4 and want.shape[2:] == (1, 1) and value.shape == want.shape[:2]:
                value = value.reshape(want.shape)
            elif key.endswith("attention_biases") and value.dim() == 2 and value.shape[0] == want.shape[0]:
                value = resample_attention_biases(value, int(round(want.shape[1] ** 0.5)))
                resized = True
        out[key] = value
    for key, value in target.items():
        if key.endswith("attention_bias_idxs"):
            out[key] = value
    if resized:
        notes.append(f"attention bias tables resampled (bicubic) to the window grid of img_size "
                     f"{model.img_size}")
    return out


def load_weights(model: EfficientViT, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load a native-layout state dict strictly; return notes for the user."""
    notes: list[str] = []
    state = adapt_state_dict(state, model, notes)
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:3])}")
        raise UserError(f"checkpoint {source} does not fit EfficientViT-{model.cfg.name.upper()}: "
                        + "; ".join(parts) + "; is it an EfficientViT checkpoint?")
    bad = [k for k in target if tuple(target[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise UserError(f"checkpoint {source}: {k} has shape {tuple(state[k].shape)}, model expects "
                        f"{tuple(target[k].shape)}; check --variant and --img-size")
    # load_state_dict casts silently: integer weights would load as garbage
    wrong = [k for k in target if target[k].is_floating_point() and not state[k].is_floating_point()]
    if wrong:
        k = wrong[0]
        raise UserError(f"checkpoint {source}: {k} is {str(state[k].dtype).replace('torch.', '')}, not a float "
                        "tensor; is it a quantized or corrupted checkpoint? re-save it with float weights")
    model.load_state_dict(state, strict=True)
    return notes


def save_project_checkpoint(model: torch.nn.Module, spec, path: str | os.PathLike,
                            extra: dict | None = None) -> Path:
    """Write NAME.safetensors + NAME.json atomically (weights first, then the sidecar)."""
    from safetensors.torch import save_file


    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"output {path} must end in .safetensors (the project format)")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
               if not k.endswith("attention_bias_idxs")}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "evit-export"})
    meta = {"format": "evit-export", **spec.to_dict(), **(extra or {})}
    write_text_atomic(weights_sidecar_path(path), dumps_strict(meta, indent=2, sort_keys=True))
    return path
