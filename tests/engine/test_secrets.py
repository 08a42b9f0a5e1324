"""Secrets are never shown: plant one in every place a user can put one, then read every output.

Places: the Redis URL's password (written through ``${ENV}``), a Sentinel's ``sentinel_password``, the
XMPP account password, an outside feed URL's user info and query token, an outside WebSub topic URL's
user info and query token, a third party's ``hub.secret`` and its callback's query. Outputs:
``check``, ``check --live`` (Redis reachable and not), ``feeds``, ``status``, ``websub subscriptions``,
config error messages, a real daemon's log, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.bridge_process import BridgeProcess, cli, wait
from thoonk_bridge.thoonk.embedded import free_tcp_port

SECRETS = {
    "REDIS_PW": "redispw-5b1e0c",
    "SENTINEL_PW": "sentinelpw-9d2f7a",
    "XMPP_PW": "xmpppw-3c8e41",
    "FEED_USER": "feeduser-77aa01",
    "FEED_PW": "feedpw-1f4b9c",
    "FEED_TOKEN": "feedtoken-e03d52",
    "TOPIC_PW": "topicpw-6a90bd",
    "TOPIC_TOKEN": "topictoken-2c71f8",
    "HUB_SECRET": "hubsecret-8e5d13",
    "CALLBACK_TOKEN": "callbacktoken-4f0a6e",
}


def assert_no_secret(where: str, text: str) -> None:
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert not leaked, f"{where} shows {leaked}:\n{text[-4000:]}"


@pytest.fixture
def secret_redis_url(redis_url: str) -> Iterator[str]:
    """``redis_url`` as a user with a password (an ACL user on the test server)."""
    user = f"tb-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(user, enabled=True, passwords=[f"+{SECRETS['REDIS_PW']}"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    parts = urllib.parse.urlsplit(redis_url)
    yield urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{SECRETS['REDIS_PW']}@{parts.netloc}"))
    admin.acl_deluser(user)
    admin.close()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return dict(SECRETS)


def config_text(redis_line: str, closed_port: int) -> str:
    """Every place a secret can go, most of them through ${ENV}."""
    return f"""
redis: {redis_line}
plugins:
  feeds:
    outbound: {{allow_loopback: true}}
  websub:
    outbound: {{allow_loopback: true}}
  xmpp:
    jid: bridge@localhost
    password: "${{XMPP_PW}}"
    host: 127.0.0.1
    port: {closed_port}
    tls: disabled
routes:
  - name: news
    from: thoonk:news
    to: [feeds:news, websub:news]
  - name: outside-feed
    from: "feeds:http://${{FEED_USER}}:${{FEED_PW}}@127.0.0.1:{closed_port}/feed.xml?token=${{FEED_TOKEN}}&page=2"
    to: thoonk:outside
  - name: outside-topic
    from: "websub:http://topicuser:${{TOPIC_PW}}@127.0.0.1:{closed_port}/topic?token=${{TOPIC_TOKEN}}"
    to: thoonk:topic
"""


def redis_line(url: str) -> str:
    """The URL as a user writes it: the password through ${REDIS_PW}."""
    return '"' + url.replace(SECRETS["REDIS_PW"], "${REDIS_PW}") + '"'


def run_cli(*args: str) -> str:
    result = cli(*args)
    assert "Traceback" not in result.stderr, result.stderr
    return f"(exit {result.returncode})\n{result.stdout}{result.stderr}"  # not the arguments: they hold secrets


def test_commands_never_show_a_secret(tmp_path: Path, secret_redis_url: str, secret_env: dict[str, str]) -> None:
    closed = free_tcp_port()
    good = tmp_path / "bridge.yaml"
    good.write_text(config_text(redis_line(secret_redis_url), closed))
    sentinel = f"redis+sentinel://127.0.0.1:{closed}/svc?sentinel_password=${{SENTINEL_PW}}&password=${{REDIS_PW}}"
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(config_text(f'"{sentinel}"', closed))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        config_text('"redis://u:${REDIS_PW}@127.0.0.1:notaport/0?password=${SENTINEL_PW}"', closed)
        + "  - name: wrong\n    from: thoonk:x\n    to: thoonk:y\n    initial: http://u:${FEED_PW}@h/?t=${FEED_TOKEN}\n"
    )
    wrong_scheme = tmp_path / "scheme.yaml"
    wrong_scheme.write_text(f"redis: http://user:{SECRETS['REDIS_PW']}@127.0.0.1/\nroutes: []\n")

    outputs = {
        "check": run_cli("check", str(good)),
        "check --live (reachable)": run_cli("check", str(good), "--live"),
        "check (unreachable)": run_cli("check", str(unreachable)),
        "check --live (unreachable)": run_cli("check", str(unreachable), "--live"),
        "check (config errors)": run_cli("check", str(bad)),
        "check (unsupported scheme)": run_cli("check", str(wrong_scheme)),
        "feeds --redis": run_cli("feeds", "--redis", secret_redis_url),
        "feeds --config": run_cli("feeds", "--config", str(good)),
        "feeds --redis (unreachable)": run_cli("feeds", "--redis", f"redis://:{SECRETS['REDIS_PW']}@127.0.0.1:{closed}/0"),
        "feeds --redis (bad port)": run_cli("feeds", "--redis", f"redis://:{SECRETS['REDIS_PW']}@h:x/0"),
        "status --redis": run_cli("status", "--redis", secret_redis_url),
        "status --config (unreachable)": run_cli("status", "--config", str(unreachable)),
        "websub subscriptions": run_cli("websub", "subscriptions", "--redis", secret_redis_url),
    }
    for where, text in outputs.items():
        assert_no_secret(where, text)
    # ... and they did show what they were asked for, masked.
    assert "OK, 3 route(s)" in outputs["check"]
    assert "redis: redis://***@127.0.0.1:" in outputs["check"]  # user info masked whole
    assert f"feeds:http://***@127.0.0.1:{closed}/feed.xml?token=***&page=***" in outputs["check"]
    assert "live: plugin xmpp" in outputs["check --live (reachable)"]
    assert "sentinel_password=***&password=***" in outputs["check --live (unreachable)"]
    assert "bad port 'notaport'" in outputs["check (config errors)"]
    assert "routes.3.initial" in outputs["check (config errors)"]
    assert "unsupported Redis URL 'http://***@127.0.0.1/'" in outputs["check (unsupported scheme)"]
    assert "is unreachable" in outputs["feeds --redis (unreachable)"]


def test_daemon_log_readyz_and_metrics_never_show_a_secret(
    tmp_path: Path, secret_redis_url: str, secret_env: dict[str, str]
) -> None:
    closed = free_tcp_port()
    bridge = BridgeProcess(tmp_path, {})
    bridge.write_config(
        config_text(redis_line(secret_redis_url), closed)
        + f"http: {{listen: '127.0.0.1:{bridge.port}'}}\nstate_dir: {tmp_path / 'state'}\nlog_format: json\n"
    )
    bridge.start()
    try:
        def routes_failing() -> dict[str, object] | None:
            try:
                _status, body = bridge.readyz()
            except (OSError, ValueError):
                return None
            routes = body.get("routes", {})
            states = {n: r.get("state") for n, r in routes.items()}
            if (states.get("outside-feed") == "retrying" and states.get("outside-topic") == "retrying"
                    and routes.get("news", {}).get("ready")):
                return body
            return None

        # The news route ready (its hub topic advertised), both outside routes failing (URLs in details).
        readyz = wait(routes_failing, message="news ready, both outside routes failing")
        # A third party subscribes with a secret and a callback whose query is a capability.
        form = urllib.parse.urlencode({
            "hub.mode": "subscribe", "hub.topic": f"{bridge.url}/feeds/news.atom",
            "hub.callback": f"http://127.0.0.1:{closed}/cb?token={SECRETS['CALLBACK_TOKEN']}",
            "hub.secret": SECRETS["HUB_SECRET"],
        }).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{bridge.url}/websub/hub", data=form), timeout=10) as r:
            assert r.status == 202
        wait(lambda: any(e.get("event") == "websub.verify_failed" for e in bridge.log_events()),
             message="the verification attempt logged")
        _status, metrics = bridge.get("/metrics")
        _status, readyz_text = bridge.get("/readyz")
    finally:
        bridge.stop()
    log = bridge.log()
    assert "route failed" in log and "websub.verify_failed" in log
    assert_no_secret("the daemon's log", log)
    assert_no_secret("/readyz", readyz_text)
    assert_no_secret("/metrics", metrics)
    # The details are there, without their secrets.
    detail = str(readyz["routes"]["outside-feed"])  # type: ignore[index]
    assert f"http://***@127.0.0.1:{closed}/feed.xml?token=***&page=***" in detail, detail


def test_unreachable_redis_log_line_masks_the_password(tmp_path: Path, secret_env: dict[str, str]) -> None:
    closed = free_tcp_port()
    bridge = BridgeProcess(tmp_path, {"redis": f"redis://bridge:{SECRETS['REDIS_PW']}@127.0.0.1:{closed}/0",
                                      "routes": []})
    bridge.start()
    assert bridge.wait_exit(60) == 1
    log = bridge.log()
    assert "cannot start" in log
    assert f"redis://***@127.0.0.1:{closed}/0" in log
    assert_no_secret("the daemon's log", log)


def test_log_processor_redacts_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import structlog

    from thoonk_bridge.logs import configure_logging, get_logger

    # configure_logging is process-wide and binds the current (captured) stdout: put it all back after.
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("info", "json")
    try:
        url = f"https://{SECRETS['FEED_USER']}:{SECRETS['FEED_PW']}@example.org/f?token={SECRETS['FEED_TOKEN']}"
        log = get_logger(url=url)
        log.warning("fetch failed", error=f"cannot fetch '{url}': refused", urls=[url], detail={"u": url})
        try:
            raise ValueError(f"bad document at {url}")
        except ValueError:
            log.exception("crashed")
        logging.getLogger("somelib").warning("library says %s", url)
    finally:
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    out = capsys.readouterr().out
    assert out.count("https://***@example.org/f?token=***") >= 6, out
    assert_no_secret("log lines", out)


def test_redact_url_keeps_what_is_not_secret() -> None:
    from thoonk_bridge.redact import redact_text, redact_url

    assert redact_url("redis://:pw@h:6379/2?socket_timeout=5&password=pw2") == (
        "redis://***@h:6379/2?socket_timeout=5&password=***"
    )
    assert redact_url("redis+sentinel://h1:26379,h2/svc?sentinel_password=x") == (
        "redis+sentinel://h1:26379,h2/svc?sentinel_password=***"
    )
    assert redact_url("https://tok@example.org/feed?key=abc#frag") == "https://***@example.org/feed?key=***#***"
    assert redact_url("https://example.org/feed.atom") == "https://example.org/feed.atom"
    assert redact_url("redis://:p#ss@h/0") == "redis://***@h/0"  # an unescaped '#' in a password
    assert redact_url("https://h?TOKEN") == "https://h?***"
    assert redact_text("see (https://u:p@h/x?a=1), then") == "see (https://***@h/x?a=***), then"


def test_logs_are_redacted_even_without_configure_logging(capsys: pytest.CaptureFixture[str]) -> None:
    # A program embedding the daemon (or the test harness) that never calls configure_logging.
    import structlog

    from thoonk_bridge import logs

    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        logs._redact_by_default()
        logs.get_logger(route="r").info("polling", url="https://reader:s3cretpass@example.org/f?token=t0k3n")
        out = capsys.readouterr().out
        assert "polling" in out and "example.org" in out
        assert "s3cretpass" not in out and "t0k3n" not in out
    finally:
        structlog.configure(**saved)
