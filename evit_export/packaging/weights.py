"""Find the reference weights an artifact was exported from, without trusting the
exporting machine's paths: an explicit --checkpoint, the recorded location when it
still exists, or a file with the recorded sha256 in the tool's cache."""
from __future__ import annotations

from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.packaging.manifest import sha256_file

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def find_in_cache(sha256: str, cache: Path | None = None) -> Path | None:
    from evit_export.models.checkpoint import cache_dir

    root = Path(cache) if cache is not None else cache_dir()
    if not root.is_dir():
        return None
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES and sha256_file(path) == sha256.lower():
            return path
    return None


def resolve_checkpoint(spec, checkpoint=None, artifact: Path | None = None):
    """Checkpoint for ``reference_model``: None where the spec alone rebuilds the model
    (seeded random weights, a URL the cache serves). With a recorded sha256, a file is
    used only when its sha256 matches: a same-named file elsewhere is not the weights."""
    from evit_export.models.checkpoint import is_url

    source = spec.source or {}
    if checkpoint is not None:
        if not is_url(checkpoint) and not Path(checkpoint).exists():
            raise UserError(f"checkpoint {checkpoint} does not exist: check the --checkpoint path")
        return checkpoint
    if "seed" in source or is_url(str(source.get("checkpoint", ""))):
        return None
    location, sha = source.get("checkpoint"), source.get("sha256")
    candidates = [Path(location)] if location else []
    if location and artifact is not None:
        candidates.append(Path(artifact).parent / Path(location).name)  # shipped beside the artifact
    for path in candidates:
        if path.is_file() and (sha is None or sha256_file(path) == sha.lower()):
            return path
    found = find_in_cache(sha) if sha else None
    if found is not None:
        return found
    name = Path(str(location)).name if location else "the checkpoint"
    raise UserError(f"the reference weights ({name}) are not on this machine"
                    f"{' nor in the cache by sha256' if sha else ''}: pass --checkpoint")
