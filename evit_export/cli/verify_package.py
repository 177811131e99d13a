"""``verify-package``: checksums, embedded spec and the sample image of a package."""
from __future__ import annotations

from pathlib import Path

import typer

from evit_export.cli import JsonFlag, app, console
from evit_export.core.jsonio import dumps_strict
from evit_export.packaging.verify import verify_package


@app.command("verify-package")
def verify_package_cmd(package: Path = typer.Argument(..., metavar="DIR", help="A folder written by package."),
                       as_json: bool = JsonFlag()):
    """Check a package: every file against manifest.json, the model's embedded spec, and the model re-run on
    sample.png against expected.json. Exit 1 with the reason on any mismatch. What npm install, Gradle, SwiftPM
    and Python create beside their project file (node_modules/, package-lock.json, build/, .gradle/, .build/,
    Package.resolved, __pycache__/) is accepted; any other file not in manifest.json fails, named."""

    result = verify_package(package)
    if as_json:
        console.print_json(dumps_strict(result.to_dict()))
    else:
        for check in result.checks:
            mark = "[green]ok[/]" if check.ok else "[bold red]FAIL[/]"
            console.print(f"{mark} {check.name}: {check.detail}", highlight=False)
        console.print("package verified" if result.ok else "package does NOT match its manifest")
    raise typer.Exit(0 if result.ok else 1)
