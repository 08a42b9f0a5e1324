"""docs/example_plugin's own tests, run the way its author runs them: pytest in the plugin's directory,
outside this repository's conftest. They enable the bridge's fixtures with one line (its conftest.py)
and run the Sink conformance suite with one import and one subclass (tests/test_jsonlog.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example_plugin"
CHECKS = 8  # the SinkConformance checks; and one end-to-end test of a route


def test_the_example_plugin_passes_its_conformance_suite(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}  # importable as if pip-installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--basetemp", str(tmp_path / "t")],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"^PASSED (\S+)", output, re.MULTILINE)
    assert len([p for p in passed if "TestJsonLogSink::" in p]) == CHECKS, output
    assert any(p.endswith("::test_a_route_writes_the_file") for p in passed), output
    assert not re.search(r"\b(skipped|xfailed|failed|error)\b", output.splitlines()[-1]), output
