"""``evit-export sweep``: the variant × target × precision matrix, with a report."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from evit_export.cli import CalibrationSizeOpt, ImgSizeOpt, NumClassesOpt, app, cli_message, console, err_console
from evit_export.core.errors import UserError
from evit_export.core.interrupt import cancellable
from evit_export.validation.latency import format_figures


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        variant, sep, checkpoint = item.partition("=")
        if not sep or not variant.strip() or not checkpoint.strip():
            raise UserError(f"--weights {item!r}: write VARIANT=CHECKPOINT, e.g. --weights m0=m0.pth")
        out[variant.strip().lower()] = checkpoint.strip()
    return out


@app.command("sweep")
def sweep_cmd(variants: str = typer.Option(..., "--variants", metavar="LIST",
                                    help="Variants, comma-separated, e.g. m0,m1."),
              targets: str = typer.Option("onnx,coreml,tflite", "--targets", metavar="LIST",
                                   help="Targets, comma-separated."),
              precisions: str = typer.Option("fp32", "--precisions", metavar="LIST",
                                      help="Precisions, comma-separated: fp32,fp16,int8."),
              out: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                                       help="Sweep folder (results, artifacts, report); an existing sweep "
                                       "there is resumed."),
              weights: Optional[List[str]] = typer.Option(None, "--weights", metavar="VARIANT=CHECKPOINT",
                                                          help="Weights of one variant, repeatable; other variants "
                                                          "get seeded random weights."),
              data: Optional[Path] = typer.Option(None, "--data", metavar="DIR",
                                                  help="Labelled images (DIR/<class>/*) for accuracy parity; "
                                                  "plots then show accuracy instead of MACs."),
              calibration_data: Optional[str] = typer.Option(None, "--calibration-data",
                                                             metavar="DIR|random",
                                                             help="int8: calibration image folder, or 'random'."),
              calibration_size: int = CalibrationSizeOpt,
              simulate: str = typer.Option("", "--simulate", metavar="LIST",
                                           help="Device profiles to estimate latency on, comma-separated."),
              jobs: int = typer.Option(1, "--jobs", "-j", metavar="N",
                                       help="Cells exported and checked at once, each in its own process "
                                       "(latency is always measured one cell at a time)."),
              threads: int = typer.Option(1, "--threads", metavar="N",
                                          help="Threads for measured latency."),
              img_size: Optional[int] = ImgSizeOpt, num_classes: Optional[int] = NumClassesOpt,
              seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the random weights."),
              retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run cells that failed before.",
                                                  metavar=""),
              fresh: bool = typer.Option(False, "--fresh", metavar="",
                                         help="Start over: drop the results and artifacts of earlier sweeps in "
                                         "--out. Without it a re-run adds to them: earlier cells stay (marked "
                                         "stale where this run changed their inputs)."),
              executor: str = typer.Option("local", "--executor", metavar="local|ray",
                                           help="Where cells are exported and checked: this machine (--jobs "
                                           "processes) or a Ray cluster (extra [cluster])."),
              ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="HOST:PORT|auto",
                                                        help="The Ray cluster to use; default: a Ray started "
                                                        "here for the sweep."),
              cell_threads: int = typer.Option(1, "--cell-threads", metavar="N",
                                               help="Ray: CPUs each cell's task asks for (and its threads)."),
              max_retries: int = typer.Option(2, "--max-retries", metavar="N",
                                              help="Ray: times a cell's task is retried when its node or "
                                              "worker dies, before the cell is marked failed."),
              measure_on: str = typer.Option("driver", "--measure-on", metavar="driver|RESOURCE",
                                             help="Ray: measure latency here, or on the nodes holding this "
                                             "custom Ray resource (one cell at a time per unit)."),
              fleet: Optional[Path] = typer.Option(None, "--fleet", metavar="FILE",
                                                   help="fleet.toml: devices to measure every cell on over SSH "
                                                   "(name, host, identity, python, formats).")):
    """Export, check, time and estimate every variant × target × precision; writes
    results.json, results.csv and a self-contained report.html. Resumable."""
    from evit_export.sweep.run import SweepConfig, run_sweep

    config = SweepConfig(variants=_csv(variants), targets=_csv(targets), precisions=_csv(precisions), out=out,
                         weights=_weights(weights or []), data=str(data) if data else None,
                         calibration_data=calibration_data, calibration_size=calibration_size,
                         simulate=_csv(simulate), jobs=jobs, img_size=img_size, num_classes=num_classes, seed=seed,
                         threads=threads, retry_failed=retry_failed, fresh=fresh)
    cells_on = _executor(executor, jobs, ray_address, cell_threads, measure_on, max_retries)
    devices = _fleet(fleet)
    with cancellable("sweep", detail=lambda: _left_after_interrupt(out)):
        results = run_sweep(config, console=err_console, executor=cells_on, fleet=devices)
    _print_summary(results)
    console.print(f"wrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'report.html'}")


def _executor(kind: str, jobs: int, ray_address, cell_threads: int, measure_on: str, max_retries: int = 2):
    """The cell executor the options name; one-line errors for options of the other one."""
    from evit_export.sweep.executors import LocalExecutor

    kind = kind.strip().lower()
    if kind == "local":
        for flag, given in (("--ray-address", ray_address is not None), ("--cell-threads", cell_threads != 1),
                            ("--measure-on", measure_on != "driver"), ("--max-retries", max_retries != 2)):
            if given:
                raise UserError(f"{flag} is for --executor ray: add --executor ray or drop {flag}")
        return LocalExecutor(jobs)
    if kind != "ray":
        raise UserError(f"--executor {kind!r}: choose local or ray")
    if jobs != 1:
        raise UserError("--jobs is for --executor local: on Ray every cell is submitted at once and "
                        "--cell-threads sets what each asks for")
    from evit_export.sweep.ray_executor import RayExecutor

    return RayExecutor(ray_address, cell_threads=cell_threads, measure_on=measure_on, max_retries=max_retries)


def _fleet(path):
    if path is None:
        return None
    from evit_export.sweep.fleet import Fleet, load_fleet

    return Fleet(load_fleet(path))


def _left_after_interrupt(out: Path) -> str:
    """What a Ctrl-C leaves in the sweep folder, for the one-line message."""
    from evit_export.sweep.results import load_results

    cells = (load_results(out) or {}).get("cells", [])
    done = sum(c.get("status") in ("done", "failed") for c in cells)
    if not cells:
        return "nothing was written"
    return (f"{out / 'results.json'} holds {done} finished cell{'s' if done != 1 else ''} of {len(cells)}; "
            "the same command resumes")


def _estimate_text(est: dict | None) -> str:
    """An estimate to the significant figures its profile's validation supports."""

    if not est or est.get("estimate_ms") is None:
        return ""
    figures = est.get("significant_figures")
    return format_figures(est["estimate_ms"], figures) if figures else f"{est['estimate_ms']:.3g}"


def _print_summary(results: dict) -> None:
    devices = list(results.get("devices") or results["config"].get("simulate") or [])
    table = Table(title="sweep cells")
    for col in ("cell", "precision", "verdict", "MB", "max abs err", "measured ms", *[f"{d} (est.) ms" for d in devices],
                "reason"):
        table.add_column(col)
    for c in results["cells"]:
        eq, lat = c.get("equivalence") or {}, c.get("latency") or {}
        verdict = c.get("verdict") or c["status"]
        colour = {"pass": "green", "fail": "red", "error": "red"}.get(verdict, "yellow")
        ests = [_estimate_text((c.get("estimates") or {}).get(d)) for d in devices]
        table.add_row(c["id"], c["precision_label"], f"[{colour}]{verdict}[/]",
                      f"{c['file_size'] / 1e6:.2f}" if c.get("file_size") else "",
                      f"{eq['max_abs']:.2e}" if eq.get("max_abs") is not None else "",
                      f"{lat['median_ms']:.3f}" if lat.get("median_ms") is not None else "",
                      *ests,
                      # a cell's reason is the API's error (calibration_data=DIR): read as this command's flags
                      cli_message("; ".join(r for r in (c.get("stale"), c.get("reason")) if r), ["sweep"]))
    console.print(table)
