"""EfficientViT M0–M5: architecture, checkpoints, folding, deploy graph."""
from .deploy import DeployEfficientViT, fold
from .efficientvit import VARIANTS, EfficientViT, VariantConfig, canonical_variant, stage_resolutions
from .init import randomize_
from .load import load_model

__all__ = ["VARIANTS", "VariantConfig", "EfficientViT", "DeployEfficientViT", "canonical_variant",
           "stage_resolutions", "fold", "load_model", "randomize_"]
