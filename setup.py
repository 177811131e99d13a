"""Package discovery for setuptools (everything else is in pyproject.toml).

The repository keeps ``models/``, ``targets/`` and ``validation/`` top-level but installs
them as ``evit_export.models`` / ``.targets`` / ``.validation``. setuptools' own
``packages.find`` cannot combine discovery with that renaming (it discovers ``targets``
as a top-level package), so the packages are found here, per root, under their installed
names: a new sub-package (a new export format, say) lands in the wheel without anyone
listing it. Folders without ``__init__.py`` (app templates, device profiles) are data
packages: everything in them ships.
"""
from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = {"evit_export": "evit_export", "evit_export.models": "models", "evit_export.targets": "targets",
         "evit_export.validation": "validation"}


def discover() -> tuple[list[str], dict[str, list[str]]]:
    packages, data = [], {}
    for name, folder in ROOTS.items():
        packages.append(name)
        for sub in find_namespace_packages(folder, exclude=["*__pycache__*", "*node_modules*"]):
            packages.append(f"{name}.{sub}")
            if not (Path(folder, *sub.split(".")) / "__init__.py").exists():
                data[f"{name}.{sub}"] = ["*"]
    return packages, data


PACKAGES, PACKAGE_DATA = discover()

setup(packages=PACKAGES, package_dir=ROOTS, package_data=PACKAGE_DATA)
