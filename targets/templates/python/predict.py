#!/usr/bin/env python3
"""Classify images with @@MODEL_FILE@@, preprocessed exactly as evit-export checked it.

    python predict.py IMAGE [IMAGE ...] [--top 5] [--json]

Needs numpy, Pillow and the model's runtime (requirements.txt): onnxruntime for .onnx,
ai-edge-litert (LiteRT) for .tflite.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from evit_preprocess import load_rgb, model_input, preprocess_pixels

HERE = Path(__file__).resolve().parent
MODEL = HERE / "@@MODEL_FILE@@"


class OnnxModel:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_quantization = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64)[0]


class LiteRTModel:
    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # older installs
            from tflite_runtime.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        scale, zero_point = self.input["quantization"]
        # The model's own quantisation parameters, not assumed ones.
        self.input_quantization = (scale, zero_point) if scale else None

    def run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float64)
        scale, zero_point = self.output["quantization"]
        return (y - zero_point) * scale if scale else y


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def classify(model, path, pre: dict, labels: list[str], top: int) -> list[dict]:
    pixels = preprocess_pixels(load_rgb(path), pre["img_size"], pre["crop_pct"], pre["resize"]["interpolation"])
    probs = softmax(model.run(model_input(pixels, pre, model.input_quantization)))
    order = np.argsort(-probs, kind="stable")[:top]
    return [{"label": labels[i], "score": float(probs[i])} for i in order]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object: image -> top-k")
    args = parser.parse_args(argv)
    pre = json.loads((HERE / "preprocessing.json").read_text(encoding="utf-8"))
    labels = (HERE / "labels.txt").read_text(encoding="utf-8").splitlines()
    model = OnnxModel(MODEL) if MODEL.suffix == ".onnx" else LiteRTModel(MODEL)
    results = {}
    for path in args.images:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        results[str(path)] = classify(model, path, pre, labels, args.top)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for path, top in results.items():
            print(path)
            for rank, hit in enumerate(top, 1):
                print(f"  {rank}. {hit['label']:<20} {hit['score']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
