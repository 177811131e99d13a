"""Image sources: the embedded digits, ImageFolder trees, held-out and calibration images.
Beside ``core`` at the bottom of the floor plan: imports nothing above it.

* ``imageset``: ``ImageSet``, the preprocessed images of one split
* ``digits``: the embedded scikit-learn digits (fixed split), and writing them as PNGs
* ``folders``: ImageFolder trees for training and labelled evaluation folders
* ``sources``: held-out images and default int8 calibration images
"""
from evit_export.data.digits import (DIGITS_LABELS, digit_image, digit_levels, digits_pixels, digits_spec,
                                     digits_split_indices, load_digits_split, render_digits,
                                     write_digits_imagefolder)
from evit_export.data.folders import load_eval_folder, load_imagefolder, read_class_folders, seeded_split
from evit_export.data.imageset import ImageSet
from evit_export.data.sources import default_calibration_images, heldout_images, is_digits_model

__all__ = ["DIGITS_LABELS", "ImageSet", "default_calibration_images", "is_digits_model", "digit_image", "digit_levels",
           "digits_pixels", "digits_spec", "digits_split_indices", "heldout_images", "load_digits_split",
           "load_eval_folder", "load_imagefolder", "read_class_folders", "render_digits", "seeded_split",
           "write_digits_imagefolder"]
