"""The console (``http.console``): access, secrets, and the page in a real headless chromium."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.bridge_process import BridgeProcess, wait
from tests.support.prosody_server import ProsodyServer
from thoonk_bridge.console import web as console_web
from thoonk_bridge.router import dead_letter_feed
from thoonk_bridge.testing import running_bridge, wait_until
from thoonk_bridge.thoonk import Thoonk

TOKEN = "console-token-3f9a1c77e2b4"
BIG = json.dumps({"title": "Big", "content": "x" * 600, "link": "https://example.org/big"})


def console(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "token": TOKEN, "loopback_without_token": True, **extra}


def routes(limit: int = 300) -> list[dict[str, Any]]:
    return [{"name": "news", "from": "thoonk:news",
             "to": [{"endpoint": "feeds:news", "max_payload_bytes": limit}, "thoonk:copy"]}]


async def fetch(daemon: Any, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.request(method, daemon.base_url + path, **kwargs) as resp:
        return resp.status, await resp.text()


# ---------------------------------------------------------------------------------------- access


async def test_console_is_off_unless_enabled(redis_url: str, tmp_path: Path) -> None:
    async with running_bridge({"routes": routes()}, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        assert (await fetch(daemon, "/console"))[0] == 404
        assert (await fetch(daemon, "/console/state.json"))[0] == 404


async def test_enabled_console_without_token_or_waiver_is_a_config_error(tmp_path: Path) -> None:
    from thoonk_bridge.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("http:\n  console:\n    enabled: true\nroutes: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "an enabled console needs a token" in str(err.value.problems[0])
    path.write_text("http:\n  console:\n    enabled: true\n    token: short\nroutes: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "http.console.token" in str(err.value.problems[0]) and "short" not in str(err.value.problems[0])


async def test_non_loopback_needs_the_token_which_is_never_echoed(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"http": {"console": console(path="/ops/console")}, "routes": routes()}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes["news"].ready)
        # From loopback, the waiver: the page with the routes, and its JSON.
        status, page = await fetch(daemon, "/ops/console")
        assert status == 200 and 'data-route="news"' in page
        # Through a proxy on this host (Forwarded / X-Forwarded-For): no waiver.
        status, page = await fetch(daemon, "/ops/console", headers={"X-Forwarded-For": "203.0.113.9"})
        assert status == 401 and 'data-route="news"' not in page
        # A peer that is not loopback (the peer check stubbed: every test client is on loopback).
        monkeypatch.setattr(console_web, "_is_loopback", lambda request: False)
        for path in ("/ops/console", "/ops/console/state.json", "/ops/console/deadletters.json?route=news",
                     "/ops/console/trace.json?feed=news&id=1"):
            status, body = await fetch(daemon, path)
            assert status == 401, path
            assert "news" not in body.replace("/ops/console", "") or path.endswith("console"), path
            status, body = await fetch(daemon, path, headers={"X-Console-Token": "wrong-" + TOKEN})
            assert status == 401 and TOKEN not in body, path
        status, body = await fetch(daemon, "/ops/console/state.json", headers={"X-Console-Token": TOKEN})
        assert status == 200 and [r["name"] for r in json.loads(body)["routes"]] == ["news"]
        assert TOKEN not in body
        status, page = await fetch(daemon, "/ops/console", headers={"X-Console-Token": TOKEN})
        assert status == 200 and TOKEN not in page


async def test_actions_always_need_the_token_and_refuse_cross_site(redis_url: str, tmp_path: Path) -> None:
    config = {"http": {"console": console()}, "routes": routes()}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes["news"].ready)
        await (await daemon.thoonk.feed("news")).publish(BIG, id="big")
        body = {"route": "news", "all": True}
        await wait_until(lambda: _dead_count(daemon), message="dead letter")
        for headers, status in [
            ({}, 401),  # loopback, but an action: the waiver does not cover it
            ({"X-Console-Token": "nope"}, 401),
            ({"X-Console-Token": TOKEN, "Origin": "https://evil.example"}, 403),
            ({"X-Console-Token": TOKEN, "Sec-Fetch-Site": "cross-site"}, 403),
        ]:
            for action in ("replay", "discard"):
                got, text = await fetch(daemon, f"/console/{action}", "POST", json=body, headers=headers)
                assert got == status, (action, headers, text)
                assert TOKEN not in text
        # A form post (what a cross-site page can send without a preflight) is refused even with the token.
        got, _ = await fetch(daemon, "/console/discard", "POST", data="route=news&all=true",
                             headers={"X-Console-Token": TOKEN, "Content-Type": "application/x-www-form-urlencoded"})
        assert got == 403
        assert await _dead_count(daemon) == 1  # nothing was done
        got, text = await fetch(daemon, "/console/discard", "POST", json=body, headers={"X-Console-Token": TOKEN})
        assert got == 200 and len(json.loads(text)["discarded"]) == 1
        assert await _dead_count(daemon) == 0


async def test_no_secret_on_the_page_or_in_its_json(redis_url: str, tmp_path: Path) -> None:
    secret_url = "https://reader:s3cretpass@127.0.0.1:1/feed.xml?apikey=s3cretkey"
    config = {
        "http": {"console": console()},
        "routes": [*routes(), {"name": "outside", "from": {"endpoint": f"feeds:{secret_url}", "interval": 0.05},
                               "to": "thoonk:outside"}],
    }
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes.get("outside") is not None)
        await daemon.console.report()
        for path in ("/console", "/console/state.json"):
            status, body = await fetch(daemon, path)
            assert status == 200
            assert "outside" in body
            for secret in ("s3cretpass", "s3cretkey", TOKEN):
                assert secret not in body, (path, secret)


async def _dead_count(daemon: Any) -> int:
    from thoonk_bridge.router import dead_letter_feed

    if not await daemon.thoonk.feed_exists(dead_letter_feed("news")):
        return 0
    return int(await (await daemon.thoonk.feed(dead_letter_feed("news"))).length())


# ---------------------------------------------------------------------------------------- browser


CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromium-driver are not installed (scripts/test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))  # nothing downloaded
    try:
        yield driver
    finally:
        driver.quit()


def test_console_in_a_browser(browser: Any, redis_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    def config(limit: int) -> dict[str, Any]:
        return {"redis": redis_url, "http": {"listen": f"127.0.0.1:{bridge.port}", "console": console()},
                "log_format": "json", "state_dir": str(tmp_path / "state"),
                "plugins": {"feeds": {"quiet": 0.005, "max_staleness": 0.05}}, "routes": routes(limit)}

    bridge = BridgeProcess(tmp_path, {})
    bridge.write_config(config(300))
    bridge.start().wait_ready()
    pubsub = Thoonk(url=redis_url)
    try:
        browser.get(bridge.url + "/console")
        browser.execute_script("window.loadedOnce = 'yes'")  # gone if the page reloads

        # Read and click through the page's own DOM in one step: the tables are redrawn every poll.
        def text(css: str) -> str:
            return str(browser.execute_script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css))

        def click(css: str) -> None:
            browser.execute_script("document.querySelector(arguments[0]).click()", css)

        def cell(css: str) -> str:
            return text(f'#routes tr[data-route="news"] {css}')

        assert cell(".name") == "news"
        for i in range(5):
            pubsub.feed("news").publish(json.dumps({"title": f"Item {i}"}), id=f"i{i}")
        wait(lambda: cell(".delivered") == "10", message="the delivered count moved without a reload")
        pubsub.feed("news").publish(BIG, id="big")
        wait(lambda: cell(".deadletters") == "1", message="the dead letter appears")
        wait(lambda: "payload is too large" in cell(".error"), message="the error appears")
        assert browser.execute_script("return window.loadedOnce") == "yes"

        click('#routes tr[data-route="news"] a.dl-open')
        wait(lambda: text("#deadletters tbody tr"), message="dead letters listed")
        # Without the token: refused (the button says so; the endpoint itself answers 401).
        click("#deadletters button.replay")
        wait(lambda: "needs the console token" in text("#message"))
        status = browser.execute_async_script(
            "const done = arguments[0]; fetch(document.body.dataset.base + '/replay', {method: 'POST',"
            " headers: {'Content-Type': 'application/json'}, body: JSON.stringify({route: 'news', all: true})})"
            ".then(r => done(r.status))")
        assert status == 401

        # With the token from the page: the route's daemon replays it (the sink still refuses it: the
        # entry stays, rewritten with the new time).
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "trace-feed").click()  # the change event stores the token
        def stored_at() -> list[float]:
            return [json.loads(v)["at"] for v in pubsub.feed(dead_letter_feed("news")).get_all().values()]

        [before] = stored_at()
        click("#deadletters button.replay")
        wait(lambda: "replayed 1" in text("#message"), message="replay accepted")
        wait(lambda: stored_at() != [before], message="entry rewritten")
        assert len(stored_at()) == 1
        assert cell(".deadletters") == "1"
        # The operator raises the sink's limit: the restarted route delivers it; the page follows.
        bridge.write_config(config(100_000))
        bridge.signal(signal.SIGHUP)
        wait(lambda: cell(".deadletters") == "0", message="the dead letter is gone")
        assert "Big" in bridge.get("/feeds/news.atom")[1]
        assert browser.execute_script("return window.loadedOnce") == "yes"

        browser.find_element(By.ID, "trace-feed").send_keys("news")
        browser.find_element(By.ID, "trace-id").send_keys("big")
        browser.find_element(By.CSS_SELECTOR, "#trace-form button").click()
        wait(lambda: "replayed" in text("#trace"), message="the trace")
        page = browser.page_source
        assert TOKEN not in page
        browser.save_screenshot(str(tmp_path / "console.png"))
    finally:
        pubsub.close()
        bridge.stop()
    print("screenshot:", tmp_path / "console.png")


async def test_the_cli_prints_the_document_the_page_polls(redis_url: str, tmp_path: Path) -> None:
    import asyncio

    from tests.support.bridge_process import cli

    config = {"http": {"console": console()}, "routes": routes()}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes["news"].ready)
        await daemon.console.report()
        _, page_json = await fetch(daemon, "/console/state.json")
        result = await asyncio.to_thread(cli, "fleet", "--json", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    from_page, from_cli = json.loads(page_json), json.loads(result.stdout)
    assert from_cli.keys() == from_page.keys()
    expected = [("news", daemon.instance_id, "thoonk:news")]
    assert [(r["name"], r["owner"], r["source"]) for r in from_cli["routes"]] == expected
    assert [(r["name"], r["owner"], r["source"]) for r in from_page["routes"]] == expected
    assert [d["instance"] for d in from_cli["daemons"]] == [daemon.instance_id]


async def test_websub_topics_and_xmpp_sessions_without_secrets(
    redis_url: str, tmp_path: Path, prosody: ProsodyServer
) -> None:
    import time

    from thoonk_bridge.plugins.websub.store import HubStore

    config = {"http": {"console": console()}, "plugins": {"websub": {}, "xmpp": prosody.account()},
              "routes": [{"name": "news", "from": "thoonk:news", "to": "websub:news"}]}
    async with running_bridge(config, redis_url=redis_url, tmp_path=tmp_path) as daemon:
        await wait_until(lambda: daemon.routes["news"].ready)
        store = HubStore(daemon.redis)
        topic = "https://example.org/topic.atom?apikey=s3cretkey"
        failing = await store.activate(topic, "http://hooks.example.net/cb/s3cretpath?t=s3cretq", "s3cretsig",
                                       3600, time.time())
        await store.activate(topic, "http://ok.example.net/cb", None, 3600, time.time())
        await store.record_results([(failing, 500, False)], time.time())
        await daemon.console.report()
        status, body = await fetch(daemon, "/console/state.json")
        assert status == 200
        state = json.loads(body)
        assert state["websub"]["topics"] == [
            {"topic": "https://example.org/topic.atom?apikey=***", "subscribers": 2, "failing": ["hooks.example.net"]}]
        [account] = state["xmpp"]
        assert account["account"] == "default" and account["state"] == "connected"
        assert account["jid"] == prosody.account()["jid"]
        _, page = await fetch(daemon, "/console")
        assert "hooks.example.net" in page and "connected" in page
        for text in (body, page):
            for secret in ("s3cret", str(prosody.account()["password"]), TOKEN):
                assert secret not in text, secret
