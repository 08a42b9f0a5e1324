"""Run ``thoonk-bridge`` as a real subprocess for daemon and CLI tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from thoonk_bridge.thoonk.embedded import free_tcp_port

BIN = [sys.executable, "-m", "thoonk_bridge.cli"]


def wait(predicate: Any, timeout: float = 30, message: str = "") -> Any:
    """Poll ``predicate`` until truthy (for tests driving real processes; never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=60, input=input,
                          env={**os.environ, **(env or {})}, cwd=cwd)


class BridgeProcess:
    """``thoonk-bridge run CONFIG`` in the background, with its log captured to a file."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], name: str = "bridge") -> None:
        self.tmp_path = tmp_path
        self.port = free_tcp_port()
        config = dict(config)
        config.setdefault("http", {"listen": f"127.0.0.1:{self.port}"})
        config.setdefault("state_dir", str(tmp_path / "state"))
        config.setdefault("log_format", "json")
        self.config_path = tmp_path / f"{name}.yaml"
        self.write_config(config)
        self.log_path = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BridgeProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([*BIN, "run", str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body)

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, body = self.readyz()
                if status == 200:
                    return body
                last = body
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready: {last}\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait_exit(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
