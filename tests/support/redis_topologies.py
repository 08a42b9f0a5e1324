"""Redis deployments on loopback for tests: a Sentinel group and a three-master Cluster.

Servers are :class:`EmbeddedRedis` children (real ``redis-server`` processes on free ports, killed
with us); sentinels are ``redis-server --sentinel`` children. Import the fixtures into a test module
(``from redis_topologies import redis_cluster``) or use the classes directly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from thoonk_bridge.thoonk.embedded import EmbeddedRedis, _set_parent_death_signal, find_redis_server, free_tcp_port

__all__ = ["RedisCluster3", "SentinelGroup", "redis_cluster", "sentinel_group"]

SERVICE = "thoonk"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Sentinel:
    """One ``redis-server --sentinel`` child process."""

    def __init__(self, directory: Path, primary_port: int, *, down_after_ms: int = 500,
                 failover_timeout_ms: int = 3000) -> None:
        self.directory = directory
        self.port = free_tcp_port()
        self.config = directory / "sentinel.conf"
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        binary = shutil.which("redis-sentinel") or find_redis_server()
        args = [binary, str(self.config)] + ([] if binary.endswith("redis-sentinel") else ["--sentinel"])
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL,
                                        # the server dies with the test process; set before any thread
                                        preexec_fn=_set_parent_death_signal)  # noqa: PLW1509
        client = redis.Redis(port=self.port, socket_timeout=1)
        _wait(client.ping, 10, f"sentinel on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SentinelGroup:
    """One primary, one replica (both ``appendonly yes``) and three sentinels (quorum 2)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._own = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="sentinel-"))
        self.primary = EmbeddedRedis(self.directory / "a", port=0, persistent=True)
        self.replica = EmbeddedRedis(self.directory / "b", port=0, persistent=True)
        self.sentinels: list[Sentinel] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        raw = redis.Redis(port=self.replica.port, decode_responses=True)
        _wait(lambda: raw.info("replication").get("master_link_status") == "up", 20, "replica in sync")
        raw.close()
        self.sentinels = [Sentinel(self.directory / f"s{i}", self.primary.port).start() for i in range(3)]
        # Every sentinel knows the replica and the other two sentinels before anything is killed.
        for s in self.sentinels:
            client = redis.Redis(port=s.port, decode_responses=True)
            _wait(lambda c=client: (m := c.sentinel_master(SERVICE))["num-slaves"] >= 1
                  and m["num-other-sentinels"] >= 2, 30, "sentinels to see each other and the replica")
            client.close()
        return self

    def master_port(self) -> int:
        client = redis.Redis(port=self.sentinels[0].port, decode_responses=True)
        try:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            client.close()

    def servers(self) -> list[EmbeddedRedis]:
        return [self.primary, self.replica]

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until the sentinels name another master and it accepts writes; its port."""
        def promoted() -> int | None:
            port = self.master_port()
            if port == old_port:
                return None
            client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
            try:
                return port if client.info("replication")["role"] == "master" else None
            finally:
                client.close()
        return _wait(promoted, timeout, "sentinel failover")

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for server in (self.replica, self.primary):
            server.stop()
        if self._own:
            shutil.rmtree(self.directory, ignore_errors=True)


class RedisCluster3:
    """Three cluster masters (no replicas) made one cluster with ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        self.nodes = [
            EmbeddedRedis(port=0, persistent=False,
                          extra_args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                                      "--cluster-port", str(free_tcp_port())])
            for _ in range(3)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found (Debian package redis-tools)")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-yes"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
        for node in self.nodes:
            client = redis.Redis(port=node.port, decode_responses=True)
            _wait(lambda c=client: c.cluster("info")["cluster_state"] == "ok"
                  and len(c.cluster("nodes")) == 3, 30, "cluster state ok")
            client.close()
        return self

    def flush(self) -> None:
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            client.flushall()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster3]:
    cluster = RedisCluster3()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
