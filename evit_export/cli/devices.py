"""``devices``: the device profiles simulated latency rests on: list them, fit one to
measurements, calibrate this machine."""
from __future__ import annotations

import sys
from enum import Enum, StrEnum
from pathlib import Path

import typer
from rich.table import Table

from evit_export.cli import JsonFlag, _App, _Group, app, console, err_console
from evit_export.core.jsonio import dumps_strict
from evit_export.targets import target_names
from evit_export.validation.latency.profiles import all_profiles
from evit_export.core.digest import sha256_file

devices_app = _App(cls=_Group, no_args_is_help=True, help="Device profiles for simulated latency: list, fit, calibrate.")
app.add_typer(devices_app, name="devices")


# Every registered format, whichever distribution it comes from.
ArtifactFormat = StrEnum("ArtifactFormat", {name: name for name in target_names()})


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


class CalibrationRuntime(str, Enum):
    onnxruntime = "onnxruntime"


@devices_app.command("list")
def list_cmd(as_json: bool = JsonFlag()):
    """Every built-in and user profile, with what it rests on and how well it predicts."""

    profiles = all_profiles()
    if as_json:
        rows = [{**p.to_dict(), "origin": origin, "provenance": p.provenance(), "error": p.error_summary()}
                for p, origin in profiles.values()]
        sys.stdout.write(dumps_strict(rows, indent=2) + "\n")
        return
    table = Table(title="device profiles (estimates rest on these)")
    for col in ("name", "origin", "class", "runtime / formats", "source", "validation error"):
        table.add_column(col)
    for name, (p, origin) in sorted(profiles.items()):
        table.add_row(name, origin, p.device_class, f"{p.runtime} ({', '.join(p.formats)} "
                      f"{'/'.join(p.precisions)})", p.provenance(), p.error_summary())
    console.print(table)


def _corr(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_fit(profile, figures: dict) -> None:
    base = figures["flops_proportional"]
    table = Table(title=f"{profile.name}: fit on {figures['rows']} rows "
                        f"({figures['transformer_rows']} transformers)")
    for col in ("median relative error", "this profile", "MACs-proportional"):
        table.add_column(col, justify="left" if col.startswith("median") else "right")
    held, base_held = figures["held_out_transformers"], base["held_out_transformers"]
    table.add_row("in-sample", f"{figures['in_sample_median_error']:.1%}", f"{base['in_sample_median_error']:.1%}")
    table.add_row("leave-one-out", f"{figures['loo_median_error']:.1%}", f"{base['loo_median_error']:.1%}")
    table.add_row("leave-one-out rank corr", _corr(figures["loo_rank_corr"]), _corr(base["loo_rank_corr"]))
    if held:
        table.add_row("held-out transformers", f"{held['median_error']:.1%}", f"{base_held['median_error']:.1%}")
        table.add_row("held-out transformers rank corr", _corr(held.get("rank_corr")),
                      _corr(base_held.get("rank_corr")))
    console.print(table)


@devices_app.command("fit")
def fit_cmd(csv_path: Path = typer.Argument(..., metavar="MEASUREMENTS.csv",
                                            help="CSV with at least device,model,img_size,ms."),
            device: str = typer.Option(..., "--device", metavar="NAME", help="The CSV's device column value."),
            out: Path = typer.Option(..., "--out", metavar="PROFILE.json"),
            name: str = typer.Option(None, "--name", metavar="NAME", help="Profile name; default: the device name."),
            description: str = typer.Option("", "--description", metavar="TEXT", help="What the device is."),
            runtime: str = typer.Option("measured runtime", "--runtime", metavar="TEXT", help="The runtime that measured it."),
            fmt: ArtifactFormat = typer.Option("tflite", "--format", help="Artifact format that runtime runs."),
            precision: Precision = typer.Option(Precision.fp32, "--precision"),
            as_json: bool = JsonFlag()):
    """Fit a CPU profile to measured latencies.

    Prints in-sample and leave-one-out error beside the MACs-proportional baseline.
    """
    from evit_export.validation.latency.fit import attach_features, fit_profile, read_measurements

    rows = read_measurements(csv_path, device)
    attach_features(rows, log=lambda msg: err_console.print(msg, highlight=False))
    profile, figures = fit_profile(
        rows, name=name or device, description=description or device, runtime=runtime, formats=[str(fmt)],
        precisions=[precision.value], source_text=f"from {csv_path.name} (device {device})",
        data={"data": csv_path.name, "data_sha256": sha256_file(csv_path), "device_column": device})
    profile.save(out)
    if as_json:
        sys.stdout.write(dumps_strict({"profile": profile.to_dict(), "per_row": figures["per_row"]}, indent=2) + "\n")
        return
    print_fit(profile, figures)
    console.print(f"wrote {out}")


@devices_app.command("calibrate")
def calibrate_cmd(runtime: CalibrationRuntime = typer.Option(CalibrationRuntime.onnxruntime, "--runtime"),
                  threads: int = typer.Option(1, "--threads", min=1, metavar="N"),
                  out: Path = typer.Option(None, "--out", metavar="PROFILE.json",
                                           help="Also write the profile here (it is always cached)."),
                  models: str = typer.Option("", "--models", metavar="MODELS", help="Comma-separated timm:<name> reference set "
                                             "(default: the built-in one)."),
                  as_json: bool = JsonFlag()):
    """Measure reference timm models here (never EfficientViT) and fit a profile.

    The profile is cached in ~/.cache/evit-export/devices/.
    """
    from evit_export.validation.latency.calibrate import REFERENCE_SET, calibrate

    reference = [m.strip() for m in models.split(",") if m.strip()] or list(REFERENCE_SET)
    profile, figures, cached = calibrate(runtime.value, threads, reference,
                                         log=lambda msg: err_console.print(msg, highlight=False))
    if out is not None:
        profile.save(out)
    if as_json:
        sys.stdout.write(dumps_strict({"profile": profile.to_dict(), "cached": str(cached),
                                       "per_row": figures["per_row"]}, indent=2) + "\n")
        return
    print_fit(profile, figures)
    console.print(f"cached as {cached} (use --device {profile.name})" + (f"; wrote {out}" if out else ""))
