"""What an install (a wheel, the Docker image) contains: every package and data file of the source tree.

The editable install used in development finds any folder, so a package missing from pyproject.toml
only shows in a real install; this test names it first.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _package_dirs(setuptools: dict) -> dict[str, Path]:
    mapped = setuptools.get("package-dir", {})
    dirs = {}
    for name in setuptools["packages"]:
        prefix = max((p for p in mapped if name == p or name.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            path = REPO / name.replace(".", "/")
        else:
            path = REPO / mapped[prefix] / name[len(prefix) + 1:].replace(".", "/")
        dirs[name] = path
    return dirs


def test_every_python_folder_is_a_listed_package() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = {path.resolve() for path in _package_dirs(setuptools).values()}
    folders = {p.parent.resolve() for root in ("thoonk_bridge", "plugins") for p in (REPO / root).rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(REPO)) for f in folders - listed)
    assert missing == [], f"folders with Python code missing from [tool.setuptools] packages: {missing}"
    absent = sorted(name for name, path in _package_dirs(setuptools).items() if not path.is_dir())
    assert absent == [], f"packages listed in pyproject.toml without a folder: {absent}"


def test_package_data_covers_every_data_file() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    dirs = _package_dirs(setuptools)
    shipped: set[Path] = set()
    for package, patterns in setuptools["package-data"].items():
        for pattern in patterns:
            shipped |= {p.resolve() for p in dirs[package].glob(pattern)}
    data = {p.resolve() for name, d in dirs.items() for p in d.iterdir()
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data, "the tree has data files (lua scripts, console assets)"
    missing = sorted(str(p.relative_to(REPO)) for p in data - shipped)
    assert missing == [], f"data files no package-data pattern ships: {missing}"
