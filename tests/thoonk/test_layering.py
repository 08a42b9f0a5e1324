"""The Thoonk core (thoonk_bridge.thoonk) stands alone: it imports nothing of the application."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import thoonk_bridge.thoonk

# Imports every module of the core in a fresh interpreter (the test process has the application
# loaded already), then lists the thoonk_bridge modules that came with them.
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "thoonk_bridge" or m.startswith("thoonk_bridge."))))
"""


def core_modules() -> list[str]:
    package = thoonk_bridge.thoonk
    found = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return [package.__name__, *found]


def test_every_core_module_is_found() -> None:
    names = core_modules()
    assert "thoonk_bridge.thoonk.client" in names and "thoonk_bridge.thoonk.redis_client" in names


def test_the_core_imports_nothing_of_the_application() -> None:
    names = core_modules()
    done = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    # "thoonk_bridge" itself is the parent package (its __init__ only names the version).
    outside = [m for m in loaded if m != "thoonk_bridge" and not m.startswith("thoonk_bridge.thoonk")]
    assert outside == [], f"the Thoonk core imported application modules: {outside}"
