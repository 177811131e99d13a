"""evit-export: EfficientViT M0–M5 from checkpoint to verified mobile and edge artifacts."""
from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec

__version__ = "0.1.0"


def load_model(*args, **kwargs):
    from evit_export.models import load_model as _load

    return _load(*args, **kwargs)


load_model.__doc__ = "See evit_export.models.load_model."


def fold(model):
    """Deploy form of a model from ``load_model``: BatchNorm folded, static shapes."""
    from evit_export.models import fold as _fold

    return _fold(model)


__all__ = ["load_model", "fold", "ModelSpec", "UserError", "__version__"]
