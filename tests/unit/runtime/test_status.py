"""The status page offline: its catalogue, language negotiation, rates and charts, and the served page.

Real HTTP (aiohttp's TestServer and a real client) on a real :class:`GatewayMetrics`; the browser test with a
real gateway is tests/integration/test_status_page.py.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.bus.metrics import GatewayMetrics
from gateway.coordination.clock import ManualClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.metrics import CoordinationMetrics
from gateway.coordination.service import Coordinator
from gateway.coordination.statistics import Statistics
from gateway.coordination.store import Store
from gateway.runtime.catalogue import LANGUAGES, Catalogue, negotiate
from gateway.runtime.ops import CheckFailed, ReadinessCheck, StatusOptions, build_ops_app
from gateway.runtime.status import History, StatusFacts, StatusPage, StatusView, read_metrics
from tests.paths import REPO
from tests.world import World

NOW = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_message_has_every_language_with_the_same_placeholders() -> None:
    catalogue = Catalogue.load()
    assert set(catalogue.languages) == set(LANGUAGES)
    for name, texts in catalogue.messages():
        assert set(texts) == set(LANGUAGES), name
        assert all(text.strip() for text in texts.values()), name
        assert len({frozenset(_fields(text)) for text in texts.values()}) == 1, name


def test_every_problem_code_the_sources_use_is_explained() -> None:
    used: set[str] = set()
    for path in [*(REPO / "gateway").rglob("*.py"), *(REPO / "adapters").rglob("*.py")]:
        text = path.read_text("utf-8")
        used |= set(re.findall(r'problem(?:=|: str = )"([a-z-]+)"', text))
        used |= set(re.findall(r'_whole_number\([^)]*"([a-z-]+)"\)', text))
        used |= set(re.findall(r'"(publish-refused)"', text))
    assert used, "the scan found no problem codes"
    catalogue = Catalogue.load()
    assert used <= set(catalogue.problems), used - set(catalogue.problems)


def test_explanations_fall_back_from_problem_to_reason_to_family() -> None:
    catalogue = Catalogue.load()
    assert (
        catalogue.explain("schema.invalid", "invalid-date", "id") == catalogue.problems["invalid-date"]["id"]
    )
    assert (
        catalogue.explain("gateway.internal-error", None, "en")
        == (catalogue.reasons["gateway.internal-error"]["en"])
    )
    assert catalogue.explain("schema.unknown", None, "id") == catalogue.reasons["schema"]["id"]
    assert catalogue.explain("nothing.known", "no-such", "en") == catalogue.reasons["other"]["en"]


@pytest.mark.parametrize(
    ("choice", "header", "expected"),
    [
        ("id", "en-GB", "id"),
        ("xx", "id-ID,id;q=0.9,en;q=0.8", "id"),
        (None, "en-US,en;q=0.9,id;q=0.8", "en"),
        (None, "fr-FR, id;q=0.5", "id"),
        (None, "in", "id"),
        (None, "id;q=0, en;q=0.1", "en"),
        (None, "de", "en"),
        (None, None, "en"),
        (None, "id;q=abc", "en"),
    ],
)
def test_language_negotiation(choice: str | None, header: str | None, expected: str) -> None:
    assert negotiate(choice, header) == expected


def test_history_rates_and_charts_with_a_counter_reset() -> None:
    now = [0.0]
    history = History(interval=15.0, span=60.0, clock=lambda: now[0])
    metrics = GatewayMetrics(party="kemensos")
    counter = metrics.published.labels(type="id.trafficking.alert.supply")
    assert history.rate("xchg_published_total") is None
    for step, add in enumerate([0, 30, 30, 15]):
        now[0] = step * 15.0
        counter.inc(add)
        metrics.outbox_depth.set(step)
        history.record(read_metrics(metrics.registry))
    # 75 events in 45 s = 100 per minute
    assert history.rate("xchg_published_total") == pytest.approx(100.0)
    assert history.rate("xchg_published_total", (("type", "id.trafficking.alert.supply"),)) == pytest.approx(
        100.0
    )
    assert history.rate("xchg_published_total", (("type", "other"),)) == 0.0
    chart = history.chart("xchg_published_total", counter=True)
    assert [round(v) for _, v in chart] == [120, 120, 60]
    assert history.chart("xchg_outbox_depth", counter=False)[-1] == (0.0, 3.0)
    # a restart: the counter starts again from zero and counts as an increase from zero
    fresh = GatewayMetrics(party="kemensos")
    fresh.published.labels(type="id.trafficking.alert.supply").inc(6)
    now[0] = 60.0
    history.record(read_metrics(fresh.registry))
    assert history.chart("xchg_published_total", counter=True)[-1][1] == pytest.approx(24.0)
    # bounded: span / interval + 1 snapshots
    for step in range(100):
        now[0] = 75.0 + step * 15
        history.record(read_metrics(fresh.registry))
    assert len(history) == 5


@pytest.fixture
async def status_client() -> AsyncIterator[tuple[TestClient, GatewayMetrics]]:  # type: ignore[type-arg]
    metrics = GatewayMetrics(party="kemensos")
    metrics.accepted.labels(type="id.trafficking.case.referral").inc(1234)
    metrics.dead_lettered.labels(reason="sig.invalid").inc(2)
    metrics.delivered.labels(sink="kemensos-case-system").inc(1234)
    metrics.consumer_lag.labels(topic="xchg.iom.case.v1", partition="0").set(7)

    async def ok() -> str:
        return "fine"

    async def broken() -> str:
        raise CheckFailed("signing key kemensos-sig-2026a expires in 3 day(s)")

    history = History(interval=15.0, clock=lambda: 0.0)
    options = StatusOptions(
        facts=lambda: StatusFacts(kid="kemensos-sig-2026a", key_valid_until=NOW + timedelta(days=3),
                                  registry_parties=5),
        history=history, now=lambda: NOW, sample=False,
    )  # fmt: skip
    app = build_ops_app(
        metrics=metrics,
        checks=[ReadinessCheck("kafka", ok), ReadinessCheck("registry", broken)],
        status=options,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, metrics
    await client.close()


async def test_the_page_is_relative_self_contained_and_speaks_both_languages(
    status_client: tuple[TestClient, GatewayMetrics],  # type: ignore[type-arg]
) -> None:
    client, metrics = status_client
    root = await client.get("/", allow_redirects=False)
    assert root.status == 302
    assert root.headers["Location"] == "status"  # relative: stays under a proxy's path prefix

    page = await client.get("/status", headers={"Accept-Language": "id-ID,id;q=0.9"})
    assert page.status == 200
    html = await page.text()
    assert page.headers["Content-Language"] == "id"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert '<html lang="id">' in html
    assert "Belum siap" in html  # the failing registry check
    assert "1.234" in html  # Indonesian digit grouping of 1234
    assert "sisa 3 hari" in html
    # no absolute URL, no inline script or style, no third-party origin
    assert not re.search(r'(href|src|action)="(/|https?:|//)', html)
    assert "<script>" not in html
    assert " style=" not in html
    # every marked number is the registry's
    exported = read_metrics(metrics.registry)
    for name, labels, value in re.findall(
        r'data-metric="([^"]+)" data-labels="([^"]*)"(?: data-sum="1")? data-value="([^"]+)"', html
    ):
        series = {
            k: v
            for (n, lb), v in exported.items()
            if n == name
            for k in [",".join(f"{a}={b}" for a, b in lb)]
        }
        assert float(value) == (series[labels] if labels else sum(series.values())), (name, labels)
    # the readiness gauge follows the checks the page ran
    assert metrics.readiness.labels(check="registry")._value.get() == 0
    assert metrics.readiness.labels(check="kafka")._value.get() == 1

    english = await (await client.get("/status?lang=en", headers={"Accept-Language": "id"})).text()
    assert '<html lang="en">' in english
    assert "Not ready" in english
    assert "3 day(s) left" in english
    fragment = await (await client.get("/status?fragment=1&lang=en")).text()
    assert fragment.startswith('<p class="generated">')
    assert "<html" not in fragment


async def test_only_the_two_static_files_are_served(
    status_client: tuple[TestClient, GatewayMetrics],  # type: ignore[type-arg]
) -> None:
    client, _ = status_client
    script = await client.get("/static/status.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    text = await script.text()
    assert "http" not in text.replace("HTTP ", "")  # no URL of anywhere else
    assert (await client.get("/static/status.css")).status == 200
    for path in ("/static/../catalogue.py", "/static/console_catalogue.toml", "/static/", "/static/x.js"):
        assert (await client.get(path)).status == 404, path
    assert (await client.post("/status")).status == 405


def test_static_files_are_packaged() -> None:
    static = REPO / "gateway" / "runtime" / "static"
    assert sorted(p.name for p in static.iterdir()) == ["status.css", "status.js"]
    assert Path(REPO / "gateway" / "runtime" / "console_catalogue.toml").is_file()


def _sop_page(
    metrics: GatewayMetrics, lang: str, history: History | None = None, statistics: Statistics | None = None
) -> str:
    view = StatusView(
        party="kemensos", version="1.0", now=NOW, snapshot=read_metrics(metrics.registry),
        history=history or History(interval=15.0, clock=lambda: 0.0), facts=StatusFacts(),
        checks=[], failing_tasks=[], statistics=statistics,
    )  # fmt: skip
    return StatusPage().render(view, lang, fragment=True)


def _section(page: str) -> str:
    found = re.search(r'<section id="coordination">.*?</section>', page)
    assert found, "no coordination section"
    return found.group(0)


def test_the_coordination_section_shows_the_sop_metrics_in_both_languages() -> None:
    metrics = GatewayMetrics(party="kemensos")
    sop = CoordinationMetrics(metrics.registry)
    sop.declare(["referral-answered", "arrival-admitted"])
    now = [0.0]
    history = History(interval=15.0, clock=lambda: now[0])
    for overdue in (0, 2, 3):  # three samples: the chart of overdue steps has points
        sop.set_unresolved({("referral-answered", "open"): 4, ("referral-answered", "overdue"): overdue})
        history.record(read_metrics(metrics.registry))
        now[0] += 15.0
    for _ in range(3):
        sop.escalated("referral-answered")
    for _ in range(9):
        sop.resolved("referral-answered", "met")
    sop.resolved("referral-answered", "late")
    sop.published(
        datetime(2026, 5, 1, tzinfo=UTC).timestamp(), datetime(2026, 6, 1, 0, 1, tzinfo=UTC).timestamp()
    )

    english = _section(_sop_page(metrics, "en", history))
    assert "Case coordination (SOP)" in english
    cells = re.findall(r"<tr><td><code>referral-answered</code></td>(.*?)</tr>", english)[0]
    numbers = re.findall(r'data-value="([^"]+)"', cells)
    assert [float(n) for n in numbers] == [7.0, 3.0, 3.0, 9.0, 1.0]  # open (incl. overdue), overdue, ...
    assert "75&#8239;%" in cells  # 9 in time of 9 + 3 escalated
    assert "<code>arrival-admitted</code>" in english  # declared, nothing yet
    assert "&#8212;" in english  # no compliance without a step due
    assert "last published for 2026-05, at 2026-06-01 00:01 UTC" in english
    assert 'data-chart="xchg_sop_steps_overdue"' in english
    assert "<polyline" in english
    # every marked number is the registry's
    exported = read_metrics(metrics.registry)
    for name, labels, value in re.findall(
        r'data-metric="([^"]+)" data-labels="([^"]*)"(?: data-sum="1")? data-value="([^"]+)"', english
    ):
        series = {",".join(f"{a}={b}" for a, b in lb): v for (n, lb), v in exported.items() if n == name}
        assert float(value) == (series[labels] if labels else sum(series.values())), (name, labels)

    indonesian = _section(_sop_page(metrics, "id", history))
    assert "Koordinasi kasus (SOP)" in indonesian
    assert "3 langkah terlambat dari 7 langkah terbuka; kepatuhan SOP 75" in re.sub(
        r"<[^>]+>", "", indonesian
    )
    assert "Eskalasi" in indonesian
    assert "terakhir diterbitkan untuk periode 2026-05" in indonesian
    sop.resolved("referral-answered", "met")  # 10 of 13: the decimal comma
    assert "76,9&#8239;%" in _section(_sop_page(metrics, "id", history))


async def test_the_coordination_section_of_a_gateway_never_names_a_case(tmp_path: Path, world: World) -> None:
    metrics = GatewayMetrics(party="kemensos")
    clock = ManualClock(datetime(2020, 8, 18, 8, 0, tzinfo=UTC))
    store = Store.sqlite(tmp_path / "coordination.db")
    await store.open()
    coordinator = Coordinator(
        CoordinationConfig(), party="kemensos", registry=world.registry, schemas=world.schemas,
        clock=clock, store=store, metrics=CoordinationMetrics(metrics.registry),
    )  # fmt: skip
    try:
        await coordinator.record(
            event_type="id.trafficking.case.referral", source="kemlu.kbri-kuching",
            event_id=str(uuid.uuid4()), subject="KBRI-KCH-2020-000777", time="2020-08-18T08:00:00Z",
            clear={"case_id": "KBRI-KCH-2020-000777", "cas_ReferredOrganisation": "kemensos"},
        )  # fmt: skip
        clock.advance(days=2)
        await coordinator.tick()
    finally:
        await store.close()
    for lang in ("en", "id"):
        page = _sop_page(metrics, lang)
        section = _section(page)
        assert re.search(r'data-metric="xchg_sop_steps_overdue" data-labels="step=referral-answered" '
                         r'data-value="1.0"', section), lang  # fmt: skip
        assert "KBRI-KCH" not in page
        assert "000777" not in page


async def test_the_last_months_statistics_are_charted_suppressed_in_both_languages(
    tmp_path: Path, world: World
) -> None:
    """The charts come from the coordination component's last computed month: one per table, titled in
    the reader's language; no bar shows a count below 11 (the three men of the month are suppressed, and
    so is what would reveal them), and no case id or name reaches the page."""
    metrics = GatewayMetrics(party="kemensos")
    clock = ManualClock(datetime(2020, 8, 5, tzinfo=UTC))
    store = Store.sqlite(tmp_path / "coordination.db")
    await store.open()
    coordinator = Coordinator(
        CoordinationConfig(profiles=True, statistics=True), party="kemensos", registry=world.registry,
        schemas=world.schemas, clock=clock, store=store, metrics=CoordinationMetrics(metrics.registry),
    )  # fmt: skip
    try:
        for n in range(17):  # 14 women, 3 men
            gender, born = ("Feminine", "1985-01-01") if n < 14 else ("Masculine", "2001-01-01")
            payload = {
                "case_id": f"KBRI-KCH-2020-{n:06d}", "cas_ReferredOrganisation": "kemensos",
                "vic_TypeOfExploitation": ["ForcedLabour"],
                "trafficking_events": [{"hte_Type": "Exploitation", "hte_Country": "MY"}],
                "identity": {"prs_FirstName": "Contoh", "prs_Gender": gender, "prs_Birthdate": born,
                             "prs_Citizenship": ["ID"]},
            }  # fmt: skip
            await coordinator.record(
                event_type="id.trafficking.case.referral", source="kemlu.kbri-kuching",
                event_id=str(uuid.uuid4()), subject=payload["case_id"], time="2020-08-10T08:00:00Z",
                clear={k: v for k, v in payload.items() if k != "identity"}, payload=payload,
            )  # fmt: skip
        assert coordinator.latest_statistics is None
        clock.advance(days=30)  # September: August is complete
        await coordinator.tick()
    finally:
        await store.close()
    stats = coordinator.latest_statistics
    assert stats is not None
    assert stats.period.label == "2020-08"
    for lang, title in (
        ("en", "Cases referred, by sex and age band"),
        ("id", "Kasus yang dirujuk, menurut jenis kelamin dan kelompok umur"),
    ):
        section = _section(_sop_page(metrics, lang, statistics=stats))
        charted = re.findall(r'<figure class="chart bars" data-table="([^"]+)">', section)
        assert charted == [table.id for table in stats.tables], lang
        assert title in section, lang
        assert "2020-08" in section
        shown = [int(n) for n in re.findall(r"<text[^>]*>(\d+)</text>", section)]
        assert shown, lang
        assert [n for n in shown if 0 < n < 11] == [], lang  # no published count of 1 to 10 persons
        assert 17 in shown  # the month's referrals, still open at its end
        assert "suppressed" in section  # the men's cells, and the women's that would reveal them
        assert "KBRI-KCH" not in section
        assert "Contoh" not in section


def test_without_coordination_the_section_has_nothing_to_show() -> None:
    metrics = GatewayMetrics(party="kemensos")
    english = _section(_sop_page(metrics, "en"))
    assert "Nothing to show yet." in english
    assert "data-metric" not in english
    assert "Belum ada yang ditampilkan." in _section(_sop_page(metrics, "id"))
