"""The status page in a real headless browser (Debian's Chromium through Playwright) on a real gateway.

Two gateways exchange referrals on the broker, and one forged record is dead-lettered; then the receiving
gateway's status page is opened directly and through a reverse proxy under a path prefix. Checked: the
page loads (with its own stylesheet and script), every number marked on it equals what ``/metrics`` says,
the language follows ``Accept-Language`` and the switch, the script refreshes the content, and no request
leaves loopback. The screenshot in the README is made here:
``XCHG_STATUS_SCREENSHOT=docs/images/status-page.png
.venv/bin/pytest tests/integration/test_status_page.py`` writes it (the test writes one into its temporary
folder otherwise).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from gateway.bus.kafka import KafkaSettings
from gateway.contract.policy import topic_for
from tests.browser import browser
from tests.integration.exchange import eventually, exchange, metric_total
from tests.world import example

KBRI = "kemlu.kbri-kuching"
REFERRAL = "id.trafficking.case.referral"
ADMISSION = "id.trafficking.case.shelter-admission"
SCREENSHOT_ENV = "XCHG_STATUS_SCREENSHOT"

pytestmark = pytest.mark.slow


def _metrics(text: str) -> dict[tuple[str, str], float]:
    """``{(sample name, "k=v,k=v"): value}`` of an exposition (the page's data-labels form)."""
    return {
        (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[dict[str, int], str]]:
    """A reverse proxy on loopback that serves a gateway's ops port under ``/gw/kemensos/``."""
    target: dict[str, int] = {}

    async def forward(request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        url = f"http://127.0.0.1:{target['port']}/{tail}"
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "accept-language")}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params=request.query, headers=headers, allow_redirects=False) as answer,
        ):
            body = await answer.read()
            keep = (
                "content-type",
                "location",
                "cache-control",
                "content-security-policy",
                "content-language",
            )
            return web.Response(
                status=answer.status,
                body=body,
                headers={k: v for k, v in answer.headers.items() if k.lower() in keep},
            )

    app = web.Application()
    app.router.add_get("/gw/kemensos/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield target, f"http://127.0.0.1:{port}/gw/kemensos/"
    await runner.cleanup()


async def _page_numbers(page: Any) -> list[dict[str, str]]:
    return list(
        await page.eval_on_selector_all(
            "[data-metric]",
            "els => els.map(e => ({metric: e.dataset.metric, labels: e.dataset.labels,"
            " value: e.dataset.value, sum: e.dataset.sum || ''}))",
        )
    )


async def test_status_page_in_a_real_browser(
    tmp_path: Path, isolated_kafka: KafkaSettings, proxy: tuple[dict[str, int], str]
) -> None:
    overrides = {"ops": {"status_interval": 1.0}}
    async with exchange(tmp_path / "x", [KBRI, "kemensos"], isolated_kafka, overrides=overrides) as nodes:
        kbri, kemensos = nodes[KBRI].gateway, nodes["kemensos"].gateway
        for _, referral in example("case.referral", "1.0")[:2]:
            await kbri.publisher.publish(REFERRAL, referral, recipients=["kemensos"])
        admission = example("case.shelter-admission", "1.0")[0][1]
        await kemensos.publisher.publish(ADMISSION, admission, recipients=[KBRI])
        # one forged record on KBRI's topic: kemensos dead-letters it
        producer = AIOKafkaProducer(**isolated_kafka.producer_kwargs())
        await producer.start()
        try:
            topic = topic_for(KBRI, "case", 1)
            await producer.send_and_wait(topic, b"{}", key=b"case-forged")
        finally:
            await producer.stop()

        def settled() -> bool:
            return (
                metric_total(nodes["kemensos"], "xchg_accepted_total") >= 2
                and metric_total(nodes["kemensos"], "xchg_dead_lettered_total") >= 1
                and metric_total(nodes["kemensos"], "xchg_delivered_total") >= 2
                and metric_total(nodes["kemensos"], "xchg_published_total") >= 1
            )

        await eventually(settled, timeout=60, what="kemensos to accept two referrals and dead-letter one")
        port = kemensos.ops_port
        assert port is not None
        base = f"http://127.0.0.1:{port}/"
        proxy[0]["port"] = port

        async with browser(tmp_path / "profile-en", locale="en-GB") as chrome:
            page = await chrome.context.new_page()
            answer = await page.goto(base)
            assert answer is not None
            assert answer.ok
            assert page.url == base + "status"  # / redirects to the page, relatively
            assert await page.get_attribute("html", "lang") == "en"
            assert "Gateway status: kemensos" in await page.inner_text("h1")
            # its own stylesheet applied (no CDN, nothing inline)
            colour = await page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
            assert colour == "rgb(18, 60, 105)"

            # every marked number equals /metrics (stable: the exchange has settled)
            numbers = await _page_numbers(page)
            async with aiohttp.ClientSession() as session, session.get(base + "metrics") as response:
                exported = _metrics(await response.text())
            names = {n["metric"] for n in numbers}
            assert {"xchg_accepted_total", "xchg_dead_lettered_total", "xchg_delivered_total"} <= names
            for number in numbers:
                if number["sum"]:
                    expected = sum(v for (name, _), v in exported.items() if name == number["metric"])
                else:
                    expected = exported[(number["metric"], number["labels"])]
                assert float(number["value"]) == expected, number
            accepted = await page.inner_text(
                f'[data-metric="xchg_accepted_total"][data-labels="type={REFERRAL}"]'
            )
            assert accepted == f"{int(exported[('xchg_accepted_total', f'type={REFERRAL}')]):,}"
            dead = await page.inner_text("#dead-letters")
            assert "ce.missing-attribute" in dead or "sig.missing" in dead

            # the script refreshes the content from the same relative URL
            first = await page.inner_text(".generated")
            await page.wait_for_function(
                "first => document.querySelector('.generated').innerText !== first", arg=first, timeout=15000
            )

            # the language switch
            await page.click("a[data-lang=id]")
            await page.wait_for_load_state()
            assert await page.get_attribute("html", "lang") == "id"
            assert "Status gateway: kemensos" in await page.inner_text("h1")
            text = await page.inner_text("main")
            assert "Antrean keluar" in text
            assert "Surat mati per alasan" in text
            shown = os.environ.get(SCREENSHOT_ENV)
            await page.goto(base + "status?lang=en")
            await page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            if shown:
                await page.screenshot(path=shown, full_page=True)

            # behind a reverse proxy under a path prefix: everything stays under the prefix
            proxied = await chrome.context.new_page()
            answer = await proxied.goto(proxy[1])
            assert answer is not None
            assert answer.ok
            assert proxied.url == proxy[1] + "status"
            assert (
                await proxied.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor") == colour
            )
            first = await proxied.inner_text(".generated")
            await proxied.wait_for_function(
                "first => document.querySelector('.generated').innerText !== first", arg=first, timeout=15000
            )
            prefixed = [u for u in chrome.requests if u.startswith(proxy[1].rsplit("/gw/", 1)[0])]
            assert prefixed
            assert all("/gw/kemensos/" in u for u in prefixed)
            assert chrome.foreign == []

        # Accept-Language decides when no choice was made
        async with browser(tmp_path / "profile-id", locale="id-ID") as chrome:
            page = await chrome.context.new_page()
            await page.goto(base + "status")
            assert await page.get_attribute("html", "lang") == "id"
            assert "Pemeriksaan kesiapan" in await page.inner_text("main")
            assert chrome.foreign == []
