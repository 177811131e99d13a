"""Convert an EfficientViT with Google's litert-torch: the speed anchor for the TFLite target.

Runs in the separate anchor environment (``make anchor-env`` builds ``.venv-anchor``):
litert-torch pulls jax, transformers and its own LiteRT, which cannot share the
project's environment. Only ``evit_export.models`` (torch) is imported from the project.

    .venv-anchor/bin/python benchmarks/anchor/litert_torch_convert.py --variant m0 --seed 0 OUT.tflite
    .venv-anchor/bin/python benchmarks/anchor/litert_torch_convert.py --checkpoint CK OUT.tflite

The weights are the ones ``evit_export.models.reference.prepare_model`` gives for the same
arguments (seeded realistic weights, or a checkpoint), so the benchmark can check that
the anchor computes the same function as the project's own export before timing it.
By default the model is converted as loaded, BatchNorm and all, which is what a user
would hand to litert-torch; ``--folded`` converts the project's deploy graph instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--variant", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folded", action="store_true", help="convert the folded deploy graph")
    args = ap.parse_args(argv)
    if args.variant is None and args.checkpoint is None:
        ap.error("pass --variant or --checkpoint")

    import torch
    import litert_torch

    from evit_export.models import fold, build_model, randomize_

    model = build_model(args.variant, args.checkpoint, None, None)
    if args.checkpoint is None:
        randomize_(model, seed=args.seed)
    model = (fold(model) if args.folded else model).eval()
    size = model.spec.img_size
    started = time.perf_counter()
    edge = litert_torch.convert(model, (torch.zeros(1, 3, size, size),))
    tmp = args.out.with_name(args.out.name + ".tmp")
    edge.export(str(tmp))
    os.replace(tmp, args.out)
    report = {"litert_torch": getattr(litert_torch, "__version__", "unknown"), "torch": torch.__version__,
              "folded": args.folded, "convert_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
