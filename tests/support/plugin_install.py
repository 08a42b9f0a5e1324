"""Installing a plugin into a directory the way pip would leave it, for the discovery tests."""

from __future__ import annotations

import shutil
from pathlib import Path


def install_plugin(site: Path, dist: str, entry_points: str, package: Path | None = None) -> None:
    """Install a plugin into ``site`` the way pip would leave it: package + dist-info with entry points."""
    if package is not None:
        shutil.copytree(package, site / package.name)
    info = site / f"{dist}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[thoonk_bridge.plugins]\n{entry_points}\n")
