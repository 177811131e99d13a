"""TensorFlow side of the TFLite export, run as its own process:

    python -m evit_export.targets.tflite.worker JOB_DIR

The exporting process (which has torch, and maybe coremltools, loaded) never imports
TensorFlow: importing TensorFlow before torch's triton segfaults, and TensorFlow's
bundled TFLite runtime must not share a process with LiteRT's. This worker imports
TensorFlow and numpy only, never torch.

JOB_DIR holds ``plan.json`` + ``weights.npz`` (from ``graph.make_plan``),
``options.json`` and, for int8, ``calibration.npy`` (graph-ready float inputs). The
worker writes ``model.tflite`` and ``report.json`` there; any failure is reported as
one line on stderr and exit status 3.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from evit_export.targets.calibration import (ATTENTION, KEEP_FLOAT_AUTO, int8_quality, keep_float_for_speed,
                                             resolve_keep_float, search_keep_float)
from evit_export.targets.tflite.graph import build_function
from evit_export.core.isolation import die_with_parent


def _gpu_compatibility(tf, data: bytes) -> dict:
    """tf.lite.experimental.Analyzer's GPU-delegate verdict, summarised."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            tf.lite.experimental.Analyzer.analyze(model_content=data, gpu_compatibility=True)
    except Exception as e:  # the analyzer is best effort; the export does not depend on it
        return {"checked": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    text = buf.getvalue()
    lines = [ln.strip() for ln in text.splitlines()]
    problems = [ln for ln in lines if "GPU COMPATIBILITY WARNING" in ln or "Not supported op" in ln
                or "is not supported" in ln.lower()]
    compatible = any("looks compatible with GPU delegate" in ln for ln in lines) and not problems
    return {"checked": True, "compatible": bool(compatible), "problems": problems[:40],
            "analyzer_output_tail": "\n".join(lines[-30:])}


# The attention core: q·kᵀ, softmax, attn·v. XNNPACK delegates neither op in int8,
# so a full-integer model leaves the delegate twice per head (55 partitions for M0).
FLOAT_ATTENTION_OPS = ["BATCH_MATMUL", "SOFTMAX"]


def _block_names(plan: dict) -> list[str]:
    """The deploy model's blocks in execution order: the name scopes graph.py gives them."""
    return list(plan["patch_embed"]) + [layer["prefix"] for stage in plan["stages"] for layer in stage] + ["head"]


def _run_tflite(tf, np, data: bytes, x, batch: int):
    it = tf.lite.Interpreter(model_content=data)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], np.repeat(x[i:i + 1], batch, axis=0).astype(np.float32))
        it.invoke()
        results.append(it.get_tensor(out["index"])[:1])
    return np.concatenate(results)


def _quantize_keeping_float(tf, np, converter, representative, opts: dict, job: Path, fn) -> tuple[bytes, dict]:
    """int8 with some ops in float (TensorFlow's selective quantization through the
    QuantizationDebugger's denylists, calibrated once): the attention core
    (``FLOAT_ATTENTION_OPS``) and/or whole blocks, by the name scopes graph.py gives
    them; ``auto`` searches the trailing blocks on held-out inputs. Float I/O."""

    names = tuple(opts["keep_float"])
    blocks = _block_names(json.loads((job / "plan.json").read_text()))
    base = resolve_keep_float(names, blocks)
    fast = keep_float_for_speed(names, blocks, base)
    base = fast + base
    ops = FLOAT_ATTENTION_OPS if ATTENTION in names else []
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    debug_options = tf.lite.experimental.QuantizationDebugOptions
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                         debug_options=debug_options(denylisted_ops=ops))
    probe = tf.lite.Interpreter(model_content=debugger.quant_model)
    tensor_names = [d["name"] for d in probe.get_tensor_details()]
    # the classifier's last op writes the signature's output, which carries the output name
    # rather than the head's scope
    outputs = [d["name"] for d in probe.get_output_details()]

    def build(kept: list[str]) -> bytes:
        nodes = [n for n in tensor_names if any(n.startswith(b + "/") for b in kept)]
        nodes += outputs if "head" in kept else []
        debugger.options = debug_options(denylisted_ops=ops, denylisted_nodes=nodes)
        return debugger.get_nondebug_quantized_model()

    held_path = job / "heldout.npy"
    held = np.load(held_path) if held_path.exists() else None
    record: dict = {"calibration_method": "minmax", "weight_bits": 8, "kept_float_for_speed": fast}
    reference = None
    if held is not None:
        reference = np.concatenate([fn(tf.constant(np.repeat(held[i:i + 1], opts["batch"], axis=0)))
                                    [opts["output_name"]].numpy()[:1] for i in range(len(held))])
    kept = base
    if KEEP_FLOAT_AUTO in names and reference is not None:
        found = search_keep_float(blocks, lambda k: int8_quality(reference, _run_tflite(tf, np, build(k), held,
                                                                                        opts["batch"])),
                                  base, opts["min_cosine"])
        kept = found["kept"]
        record["auto"] = {"met": found["met"], "tried": found["tried"], "min_cosine": opts["min_cosine"]}
    elif KEEP_FLOAT_AUTO in names:
        record["auto"] = {"met": None, "skipped": "no held-out images to judge candidates on"}
    data = build(kept)
    if reference is not None:
        record["heldout_quality"] = int8_quality(reference, _run_tflite(tf, np, data, held, opts["batch"]))
    record["kept_float"] = kept + ([ATTENTION] if ops else [])
    return data, record


def convert(job: Path) -> dict:
    import numpy as np
    import tensorflow as tf


    started = time.perf_counter()
    plan = json.loads((job / "plan.json").read_text())
    opts = json.loads((job / "options.json").read_text())
    with np.load(job / "weights.npz") as npz:
        weights = {k: npz[k] for k in npz.files}
    fn, owner = build_function(plan, weights, batch=opts["batch"], layout=opts["layout"],
                        input_range=opts["input_range"], mean=opts["mean"], std=opts["std"],
                        input_name=opts["input_name"], output_name=opts["output_name"])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable_obj=owner)
    quantize = opts["quantize"]
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        calib = np.load(job / "calibration.npy")

        def representative():
            for i in range(len(calib)):
                yield [calib[i:i + 1].repeat(opts["batch"], axis=0)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"float32": tf.float32, "uint8": tf.uint8, "int8": tf.int8}
        converter.inference_input_type = io_type[opts["input_dtype"]]
        converter.inference_output_type = io_type[opts["output_dtype"]]
    built = time.perf_counter()
    int8_record = None
    if quantize == "int8" and opts.get("keep_float"):
        data, int8_record = _quantize_keeping_float(tf, np, converter, representative, opts, job, fn)
    else:
        data = converter.convert()
        if quantize == "int8":
            int8_record = {"calibration_method": "minmax", "weight_bits": 8, "kept_float": [],
                           "full_integer": True}
    converted = time.perf_counter()
    (job / "model.tflite").write_bytes(data)
    report = {"tensorflow": tf.__version__, "graph_seconds": round(built - started, 2),
              "convert_seconds": round(converted - built, 2),
              "gpu_delegate": _gpu_compatibility(tf, data) if opts.get("analyze", True) else {"checked": False},
              "int8": int8_record}
    report["analyze_seconds"] = round(time.perf_counter() - converted, 2)
    (job / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m evit_export.targets.tflite.worker JOB_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    die_with_parent()  # a killed export must not leave TensorFlow converting on
    try:
        convert(Path(argv[0]))
    except Exception as e:  # reported to the parent, which turns it into its own error
        import traceback

        traceback.print_exc(file=sys.stderr)
        msg = " ".join(str(e).split())[:400] or type(e).__name__
        print(f"EVIT_WORKER_ERROR: {type(e).__name__}: {msg}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
