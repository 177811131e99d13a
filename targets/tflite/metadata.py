"""The standard TFLite model metadata (``TFLITE_METADATA``) that Android Studio's ML
Model Binding and MediaPipe's ``ImageClassifier`` read: an image input with its
``NormalizationOptions`` and ``ImageProperties``, and a scores output whose labels
file is packed into the model (the ``.tflite`` becomes a flatbuffer followed by a zip
archive, which every TFLite runtime ignores).

Written by hand with the ``flatbuffers`` Builder because the generated metadata
classes live in tflite-support, which needs protobuf<4 and cannot share this
environment. Field slots follow the public ``metadata_schema.fbs`` (schema 1.0.0
features only, file identifier ``M001``); a union takes two slots, its type tag first.
"""
from __future__ import annotations

import io
import zipfile

import flatbuffers

from evit_export.core.spec import ModelSpec

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"

# Enum and union tags from metadata_schema.fbs.
_LABELS_TYPE_TENSOR_AXIS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS
_COLOR_RGB = 1  # ColorSpaceType.RGB
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # ContentProperties
_UNIT_NORMALIZATION = 1  # ProcessUnitOptions


def normalization_for(spec: ModelSpec) -> tuple[list[float], list[float]]:
    """(mean, std) in 0..255 pixel units such that ``(pixel - mean) / std`` is the real
    value the model's input expects (quantized inputs: before quantization)."""
    if spec.input_range == "normalized":
        mean, std = [255.0 * m for m in spec.mean], [255.0 * s for s in spec.std]
        # One value stands for every channel in the schema; MediaPipe accepts only that form.
        if len(set(mean)) == 1 and len(set(std)) == 1:
            return mean[:1], std[:1]
        return mean, std
    if spec.input_range == "unit":
        return [0.0], [255.0]
    return [0.0], [1.0]


class _Writer:
    """Small helpers over flatbuffers.Builder; tables are built children first."""

    def __init__(self):
        self.b = flatbuffers.Builder(1024)

    def table(self, fields: list[tuple[str, int, object]]) -> int:
        """``fields``: (kind, slot, value) with kind 'offset', 'byte' or 'uint'."""
        b = self.b
        b.StartObject(max(slot for _, slot, _ in fields) + 1)
        for kind, slot, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "byte":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "uint":
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def string(self, text: str | None) -> int | None:
        return None if text is None else self.b.CreateString(text)

    def offsets(self, items: list[int]) -> int:
        b = self.b
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def floats(self, values: list[float]) -> int:
        b = self.b
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()


def _input_tensor(w: _Writer, spec: ModelSpec) -> int:
    mean, std = normalization_for(spec)
    norm = w.table([("offset", 0, w.floats(mean)), ("offset", 1, w.floats(std))])
    unit = w.table([("byte", 0, _UNIT_NORMALIZATION), ("offset", 1, norm)])
    size = w.table([("uint", 0, spec.img_size), ("uint", 1, spec.img_size)])
    image = w.table([("byte", 0, _COLOR_RGB), ("offset", 1, size)])
    content = w.table([("byte", 0, _CONTENT_IMAGE), ("offset", 1, image)])
    lo = [(0.0 - m) / s for m, s in zip(mean, std)]
    hi = [(255.0 - m) / s for m, s in zip(mean, std)]
    stats = w.table([("offset", 0, w.floats(hi)), ("offset", 1, w.floats(lo))])
    description = (f"RGB image, {spec.img_size}x{spec.img_size}: resize the shorter side to "
                   f"{spec.img_size}/{spec.crop_pct} ({spec.interpolation}), centre crop, then "
                   "(pixel - mean) / std as given here")
    return w.table([("offset", 0, w.string("image")), ("offset", 1, w.string(description)),
                    ("offset", 3, content), ("offset", 4, w.offsets([unit])), ("offset", 5, stats)])


def _output_tensor(w: _Writer, spec: ModelSpec) -> int:
    labels = w.table([("offset", 0, w.string(LABELS_FILE)),
                      ("offset", 1, w.string("class names, one per line, in output order")),
                      ("byte", 2, _LABELS_TYPE_TENSOR_AXIS)])
    feature = w.table([("byte", 0, 0)])  # FeatureProperties has no fields
    content = w.table([("byte", 0, _CONTENT_FEATURE), ("offset", 1, feature)])
    return w.table([("offset", 0, w.string("logits")),
                    ("offset", 1, w.string(f"unnormalised scores of {spec.num_classes} classes "
                                           "(apply softmax for probabilities)")),
                    ("offset", 3, content), ("offset", 6, w.offsets([labels]))])


def model_metadata(spec: ModelSpec) -> bytes:
    """The ModelMetadata flatbuffer (identifier M001) describing ``spec``'s model."""
    w = _Writer()
    inputs = w.offsets([_input_tensor(w, spec)])
    outputs = w.offsets([_output_tensor(w, spec)])
    subgraph = w.table([("offset", 0, w.string("image_classifier")), ("offset", 2, inputs),
                        ("offset", 3, outputs)])
    root = w.table([
        ("offset", 0, w.string(f"EfficientViT-{spec.variant.upper()}")),
        ("offset", 1, w.string(f"EfficientViT-{spec.variant.upper()} image classifier, "
                               f"{spec.num_classes} classes, {spec.precision}, exported by evit-export")),
        ("offset", 2, w.string(spec.toolchain.get("evit-export", "unknown"))),
        ("offset", 3, w.offsets([subgraph])),
        ("offset", 4, w.string("evit-export")),
        ("offset", 7, w.string(MIN_PARSER_VERSION)),
    ])
    w.b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(w.b.Output())


def pack_associated_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` followed by a zip archive of ``files`` (stored, not compressed), the
    layout the metadata readers use to find associated files inside a .tflite."""
    buf = io.BytesIO(model)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            archive.writestr(info, data)
    return buf.getvalue()


def read_associated_files(data: bytes) -> dict[str, bytes]:
    """The files packed into a .tflite ({} when none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}
