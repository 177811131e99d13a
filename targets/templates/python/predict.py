#!/usr/bin/env python3
"""Classify images with @@MODEL_FILE@@, preprocessed exactly as evit-export checked it.

    python predict.py IMAGE [IMAGE ...] [--top 5] [--json]

Needs numpy, Pillow and the model's runtime (requirements.txt); model_runtime.py opens
the model with that runtime.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from evit_preprocess import load_rgb, model_input, preprocess_pixels
from model_runtime import Model

HERE = Path(__file__).resolve().parent
MODEL = HERE / "@@MODEL_FILE@@"


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
    model = Model(MODEL)
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
