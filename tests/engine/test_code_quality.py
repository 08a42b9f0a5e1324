"""The source stays lint- and type-clean: ruff with the project's rule set (every `noqa` names an
enabled rule, complexity checked) and mypy (--strict's flags on the plugin contract and the Thoonk
core), configured in pyproject.toml. Run here so that CI refuses a change that breaks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_finds_nothing(tmp_path: Path) -> None:
    result = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    result = _run(str(BIN / "mypy"), "--cache-dir", str(tmp_path / "mypy"), "thoonk_bridge", "plugins",
                  "docs/example_plugin/thoonk_bridge_jsonlog")
    assert result.returncode == 0, result.stdout + result.stderr
