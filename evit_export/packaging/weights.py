"""Find the reference weights an artifact was exported from, without trusting the
exporting machine's paths: an explicit --checkpoint, else the checkpoint its spec
names, found by sha256 (``evit_export.models.provenance``), beside the artifact too."""
from __future__ import annotations

from pathlib import Path

from evit_export.core.errors import UserError


def resolve_checkpoint(spec, checkpoint=None, artifact: Path | None = None):
    """Checkpoint for ``reference_model``: None where the spec alone rebuilds the model
    (seeded random weights). A recorded checkpoint is used only when a file with its
    sha256 is found: a same-named file elsewhere is not the weights."""
    from evit_export.models.checkpoint import is_url
    from evit_export.models.provenance import find_checkpoint

    source = spec.source or {}
    if checkpoint is not None:
        if not is_url(checkpoint) and not Path(checkpoint).exists():
            raise UserError(f"checkpoint {checkpoint} does not exist: check the checkpoint= path")
        return checkpoint
    if "seed" in source or "checkpoint" not in source:
        return None
    near = (Path(artifact).parent,) if artifact is not None else ()
    return find_checkpoint(source, near=near)
