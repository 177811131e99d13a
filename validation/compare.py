"""The paper's CPU comparison, redone on the user's machine.

The paper's protocol: batch 16, one thread, onnxruntime. EfficientViT variants are
exported by this tool; the baselines are timm models with randomised BatchNorm (a
default-initialised network has zero gammas in whole branches, which a simplifier folds
away: it would look faster than it is), exported the way a user would by hand
(``torch.onnx.export`` + onnxsim). Every model, ours and theirs, is then measured by the
same self-contained harness ``bench --remote`` ships to devices
(``validation/latency/remote_bench_script.py``), each in a fresh process: throughput,
p50, load time and the resident peak the model adds. Each EfficientViT / baseline
pair gets its measured throughput ratio beside the paper's published one where the
paper published one.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.machine import cpu_flags, machine_description
from evit_export.targets import get_target
from evit_export.validation.latency.remote import remote_script
from evit_export.core.atomic import atomic_path

# The paper's throughput ratios (EfficientViT / baseline) on a Xeon E5-2690 v4, one thread,
# batch 16: "cpu" in PyTorch, "onnx" in onnxruntime (shared/DESIGN.md, reference numbers).
PAPER_RATIOS = {("m5", "mobilenetv3_large_100"): {"cpu": 1.452, "onnx": 0.885},
                ("m2", "mobilevit_xxs"): {"cpu": 3.7, "onnx": 7.4}}
DEFAULT_VARIANTS = ("m2", "m5")
# The paper's ONNX table rows that timm has.
DEFAULT_BASELINES = ("mobilenetv3_large_100", "mobilevit_xxs", "efficientnet_b0", "mobilenetv2_100")
PAPER_BATCH, PAPER_THREADS, IMG_SIZE = 16, 1, 224


@dataclass
class ModelRow:
    model: str
    role: str  # "efficientvit" | "baseline"
    params: int
    images_per_s: float
    p50_ms: float
    load_ms: float | None
    peak_rss_bytes: int | None
    runtime: str
    export: str  # how the file was made


@dataclass
class Comparison:
    rows: list[ModelRow]
    ratios: list[dict]  # {efficientvit, baseline, measured, paper_onnx, paper_cpu}
    batch: int
    threads: int
    machine: str = field(default_factory=machine_description)
    cpu_flags: list[str] = field(default_factory=cpu_flags)

    def to_dict(self) -> dict:
        return asdict(self)


def paper_ratio(variant: str, baseline: str) -> dict:
    return PAPER_RATIOS.get((variant.lower(), baseline.lower()), {})


def export_baseline(name: str, out: Path, batch: int, seed: int = 0) -> tuple[Path, int]:
    """timm ``name`` with randomised BatchNorm -> torch.onnx.export -> onnxsim: (file, params)."""
    import io

    import onnx
    import torch
    from evit_export.models.init import randomize_
    from evit_export.validation.latency.workloads import timm_model

    model, size = timm_model(name, IMG_SIZE)
    randomize_(model, seed)
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(batch, 3, size, size),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    proto = onnx.load_from_string(buf.getvalue())
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        proto = simplified if ok else proto
    except ImportError:
        raise UserError("compare exports baselines with onnxsim: pip install onnxsim") from None
    onnx.save(proto, str(out))
    return out, sum(p.numel() for p in model.parameters())


def export_variant(variant: str, target: str, folder: Path, batch: int, seed: int = 0) -> tuple[Path, int]:
    """An EfficientViT variant exported by this tool at ``batch`` (seeded realistic weights)."""
    from evit_export.models.reference import deploy_for_export

    deployed, spec = deploy_for_export(variant, None, seed=seed)
    chosen = get_target(target)
    options = chosen.options_type.for_precision("fp32", batch=batch)
    out = folder / f"{variant}_b{batch}{chosen.export_suffix(options)}"
    artifact = chosen.export(deployed, spec, out, options)
    model = deployed
    return artifact.path, sum(p.numel() for p in model.parameters())


def measure_file(path: Path, threads: int, batch: int, iterations: int, timeout: float = 900.0) -> dict:
    """The device harness run here, in a fresh process: its JSON answer."""

    with tempfile.TemporaryDirectory(prefix="evit-compare-") as scratch:
        script = Path(scratch) / "bench.py"
        script.write_text(remote_script(path), encoding="utf-8")
        proc = subprocess.run([sys.executable, str(script), str(path), "--threads", str(threads), "--iterations",
                               str(iterations), "--batch", str(batch)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if proc.returncode or "median_ms" not in answer:
        reason = answer.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"measuring {path.name} failed: {reason}")
    return answer


def _row(model: str, role: str, params: int, result: dict, export: str) -> ModelRow:
    batch = int(result.get("batch") or 1)
    return ModelRow(model, role, params, round(batch / result["median_ms"] * 1e3, 1), result["median_ms"],
                    result.get("load_ms"), result.get("peak_rss_bytes"), result["runtime"], export)


def compare(variants=DEFAULT_VARIANTS, baselines=DEFAULT_BASELINES, *, target: str, batch: int = PAPER_BATCH,
            threads: int = PAPER_THREADS, iterations: int = 10, work_dir: Path | None = None,
            progress=None) -> Comparison:
    """Throughput and memory of each variant and baseline, and each pair's ratio."""
    if not variants or not baselines:
        raise UserError("compare needs at least one EfficientViT variant and one baseline")
    say = progress or (lambda message: None)
    rows: list[ModelRow] = []
    with tempfile.TemporaryDirectory(prefix="evit-compare-") as scratch:
        folder = Path(work_dir or scratch)
        for variant in variants:
            say(f"exporting and measuring {variant}")
            path, params = export_variant(variant, target, folder, batch)
            rows.append(_row(variant, "efficientvit", params, measure_file(path, threads, batch, iterations),
                             "evit-export"))
        for name in baselines:
            say(f"exporting and measuring {name}")
            path, params = export_baseline(name, folder / f"{name}_b{batch}.onnx", batch)
            rows.append(_row(name, "baseline", params, measure_file(path, threads, batch, iterations),
                             "torch.onnx.export + onnxsim, BatchNorm randomised"))
    ours = [r for r in rows if r.role == "efficientvit"]
    theirs = [r for r in rows if r.role == "baseline"]
    ratios = [{"efficientvit": a.model, "baseline": b.model, "measured": round(a.images_per_s / b.images_per_s, 3),
               "paper_onnx": paper_ratio(a.model, b.model).get("onnx"),
               "paper_cpu": paper_ratio(a.model, b.model).get("cpu")} for a in ours for b in theirs]
    return Comparison(rows, ratios, batch, threads)


def plot_comparison(comparison: Comparison, out: Path) -> Path:
    """Throughput against peak memory, one point per model (EfficientViT filled, baselines
    hollow): the comparison's figure for reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for row in comparison.rows:
        mb = (row.peak_rss_bytes or 0) / 1e6
        filled = row.role == "efficientvit"
        ax.scatter([mb], [row.images_per_s], s=60, facecolors="#1f77b4" if filled else "none",
                   edgecolors="#1f77b4" if filled else "#d62728")
        ax.annotate(row.model, (mb, row.images_per_s), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("peak resident memory the model adds (MB)")
    ax.set_ylabel(f"images/s (batch {comparison.batch}, {comparison.threads} thread)")
    ax.set_title(f"Paper protocol on {comparison.machine}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out
