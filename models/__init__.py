"""EfficientViT M0–M5: architecture, checkpoints, folding, deploy graph."""
from evit_export.models.deploy import DeployEfficientViT, fold
from evit_export.models.efficientvit import VARIANTS, EfficientViT, VariantConfig, canonical_variant, stage_resolutions
from evit_export.models.init import randomize_
from evit_export.models.load import build_model

__all__ = ["VARIANTS", "VariantConfig", "EfficientViT", "DeployEfficientViT", "canonical_variant",
           "stage_resolutions", "fold", "build_model", "randomize_"]
