"""What the loop reads: the train/val images of a run, the augmentation, and how an
epoch is cut into batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec
from evit_export.data import ImageSet, load_digits_split, load_imagefolder
from evit_export.training.config import TrainConfig


def load_data(c: TrainConfig, spec: ModelSpec) -> tuple[ImageSet, ImageSet]:
    if c.data is None:
        train_set, val_set = load_digits_split("train", spec), load_digits_split("val", spec)
    else:
        train_set, val_set = load_imagefolder(c.data, spec, c.val_fraction, c.seed, workers=max(2, c.workers))
    train_set = train_set.subset(c.limit_train)
    val_set = val_set.subset(c.limit_val)
    if len(val_set) == 0:
        raise UserError(f"no validation images in {c.data}: add DIR/val/<class>/* or more images per class")
    return train_set, val_set


class AugmentedSet(torch.utils.data.Dataset):
    """uint8 (3,S,S) images of an ImageSet through an augmentation, with their labels."""

    def __init__(self, images: ImageSet, transform):
        self.pixels = images.pixels
        self.targets = images.targets
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.from_numpy(self.pixels[i])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


def build_augmentation(kind: str, img_size: int):
    """Standard augmentation from torchvision.transforms.v2 on uint8 (3,S,S) tensors."""
    from torchvision.transforms import v2

    if kind == "none":
        return None
    if kind == "affine":  # small images of glyphs: no flips, no large crops
        return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1),
                               interpolation=v2.InterpolationMode.BILINEAR)
    if kind == "crop":
        return v2.Compose([v2.RandomResizedCrop(img_size, scale=(0.35, 1.0), antialias=True),
                           v2.RandomHorizontalFlip(),
                           v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)])
    raise ValueError(f"unknown augmentation {kind!r}")  # resolve_config has checked the user's choice


@dataclass(frozen=True)
class Batching:
    """How one process cuts its share of an epoch into steps."""

    batch: int  # per process
    steps: int
    drop_last: bool
    images: int  # per process and epoch, after any drop


def plan_batches(per_process_images: int, per_process_batch: int) -> Batching:
    """Use every image of a small dataset: a batch larger than the data shrinks to it,
    and the last, shorter batch is kept. Only a last batch of one image is dropped
    (a different one each epoch, the order is shuffled): BatchNorm cannot train on a
    single sample."""
    n = per_process_images
    if n < 2:
        raise UserError(f"{n} training image per process: training needs at least 2 (add images, or run "
                        "fewer torchrun processes)")
    batch = min(per_process_batch, n)
    drop_last = n % batch == 1
    steps = n // batch + (1 if n % batch and not drop_last else 0)
    return Batching(batch, steps, drop_last, n - 1 if drop_last else n)
