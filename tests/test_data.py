"""Datasets: the embedded digits (fixed split, shared preprocessing), ImageFolder reading
with skip-and-count, seeded splits, and one-line errors for bad layouts."""
import numpy as np
import pytest
from PIL import Image

from cli_helpers import assert_one_line_error, run_cli
from evit_export.core.errors import UserError
from evit_export.data import (DIGITS_LABELS, default_calibration_images, digits_pixels, digits_spec,
                              digits_split_indices, load_digits_split, load_eval_folder, load_imagefolder,
                              write_digits_imagefolder)


def test_digits_split_is_fixed_disjoint_and_stratified():
    train, val = digits_split_indices()
    assert (len(train), len(val)) == (1442, 355)
    assert not set(train) & set(val)
    again = digits_split_indices()
    assert np.array_equal(again[0], train)
    assert np.array_equal(again[1], val)
    _, y = digits_pixels("val", 32)
    counts = np.bincount(y, minlength=10)
    assert counts.tolist() == [35, 36, 35, 36, 36, 36, 36, 35, 34, 36]  # floor(n_class / 5)


def test_digits_pixels_follow_the_runner_convention():
    pixels, y = digits_pixels("val", 48)
    assert pixels.dtype == np.float32
    assert pixels.shape == (355, 3, 48, 48)
    assert pixels.min() >= 0
    assert pixels.max() <= 255
    assert pixels.max() > 200
    assert np.array_equal(pixels, np.rint(pixels))  # integer levels: uint8 storage is lossless
    assert np.array_equal(pixels[:, 0], pixels[:, 1])  # greyscale rendered to RGB
    calib = default_calibration_images(digits_spec(img_size=40), 20)
    assert calib.shape == (20, 3, 40, 40)
    assert calib.dtype == np.float32


def test_digits_written_as_png_read_back_identically(tmp_path):
    """The PNG ImageFolder and the in-memory digits go through the same preprocessing."""
    write_digits_imagefolder(tmp_path / "digits")
    spec = digits_spec(img_size=32)
    train, val = load_imagefolder(tmp_path / "digits", spec)
    ref_val = load_digits_split("val", spec)
    assert train.classes == DIGITS_LABELS
    assert len(train) == 1442
    assert len(val) == 355
    order = np.argsort([int(p.rsplit("/", 1)[1][:4]) for p in val.files], kind="stable")
    assert np.array_equal(val.pixels[order], ref_val.pixels)
    assert np.array_equal(val.targets[order], ref_val.targets)


def _folder(root, classes, n=4, size=20, corrupt=0):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(d / f"{i}.png")
        for i in range(corrupt):
            (d / f"bad{i}.jpg").write_bytes(b"not an image at all")
    return root


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    _folder(tmp_path / "ds" / "train", ["a", "b"], n=5, corrupt=1)
    (tmp_path / "ds" / "train" / "a" / "notes.txt").write_text("hello")
    spec = digits_spec(img_size=32).replace(labels=["a", "b"], num_classes=2)
    train, val = load_imagefolder(tmp_path / "ds", spec, val_fraction=0.2, seed=3)
    assert len(train) + len(val) == 10
    assert len(train.skipped) == 3
    assert sorted(np.bincount(val.targets).tolist()) == [1, 1]
    again_train, again_val = load_imagefolder(tmp_path / "ds", spec, val_fraction=0.2, seed=3)
    assert again_val.files == val.files
    other = load_imagefolder(tmp_path / "ds", spec, val_fraction=0.2, seed=4)[1]
    assert len(other) == 2
    ev = load_eval_folder(tmp_path / "ds" / "train", spec)
    assert len(ev) == 10
    assert len(ev.skipped) == 3


@pytest.mark.parametrize("layout,needle", [
    ("missing", "does not exist"),
    ("one_class", "at least 2"),
    ("empty_class", "is empty"),
    ("only_bad", "no readable image"),
    ("mismatch", "differ"),
])
def test_bad_layouts_are_one_line_errors(tmp_path, capsys, layout, needle):
    root = tmp_path / "ds"
    if layout == "one_class":
        _folder(root / "train", ["a"])
    elif layout == "empty_class":
        _folder(root / "train", ["a", "b"])
        (root / "train" / "c").mkdir()
    elif layout == "only_bad":
        _folder(root / "train", ["a", "b"])
        (root / "train" / "c").mkdir()
        (root / "train" / "c" / "x.png").write_bytes(b"\x89PNG broken")
    elif layout == "mismatch":
        _folder(root / "train", ["a", "b"])
        _folder(root / "val", ["a", "c"])
    code, out, err = run_cli(capsys, "train", "--data", root, "--out", tmp_path / "run", "--img-size", 32,
                             "--epochs", 1, "--no-progress")
    line = assert_one_line_error(code, err)
    assert needle in line
    assert not (tmp_path / "run").exists()


def test_split_name_errors():
    with pytest.raises(UserError):
        load_digits_split("test", 32)


def test_digits_are_scikit_learns():
    from sklearn.datasets import load_digits

    from evit_export.data.digits import _digits_raw

    images, y = _digits_raw()
    ref = load_digits()
    assert np.array_equal(images, ref.images)
    assert np.array_equal(y, ref.target)


@pytest.mark.parametrize("size,crop", [(32, 1.0), (64, 1.0), (56, 0.875)])
def test_batched_digit_rendering_equals_image_to_pixels(size, crop):
    from evit_export.data.digits import _digits_raw, digit_image, render_digits
    from evit_export.core.preprocess import image_to_pixels

    images, _ = _digits_raw()
    spec = digits_spec(img_size=size).replace(crop_pct=crop)
    batched = render_digits(images[:150], spec)
    one_by_one = np.stack([image_to_pixels(digit_image(im), spec) for im in images[:150]])
    assert np.array_equal(batched.astype(np.float32), one_by_one)
