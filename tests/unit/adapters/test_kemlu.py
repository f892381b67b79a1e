"""The Kemlu/KBRI adapter offline: case items -> payloads (against the real schemas), the poll loop against
the case-API simulator (tppo filter, cursor persistence and resume, dedup on re-poll, keyset paging, an API
that fails and recovers, publish deferring), quarantine without values, and the outbound case updates.

The stand-in for the runtime's publish function is the real thing minus Kafka: ``build_event`` with the
sample registry (validate, seal for the recipients, which must be allowed to read the topic, sign) and an
"outbox" keyed by event id, so a case that "works" here is one the gateway would accept and deduplicate.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from yarl import URL

from adapters.fieldmap import MappingError
from adapters.kemlu import (
    KemluCaseApiSource,
    KemluMapping,
    MessageProblem,
    PlannedMessage,
    case_event_id,
    mission_of,
    parse_instant,
    update_url,
)
from adapters.simulators.kemlu import KemluCaseApiSimulator, sarawak_cases
from gateway.bus.delivery import RetryPolicy, SinkError, deliver_with_retry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.runtime.plugins import build_sink, build_source
from gateway.runtime.webhook import WebhookSink
from tests.doubles import WorldPublish, plugin_context
from tests.paths import DATA
from tests.world import World, example

FIXTURES = DATA / "agencies" / "kemlu"
KBRI = "kemlu.kbri-kuching"
SYNTHETIC_NAME = "Ratna Kusumawardhani"  # invented; in the malformed fixture; never in a report or a log
KCH_TPPO = ["KBRI-KCH-2020-000123", "KBRI-KCH-2020-000124", "KBRI-KCH-2020-000125", "KBRI-KCH-2020-000126"]
FAST = RetryPolicy(attempts=1, base_delay=0.01, max_delay=0.05, jitter=0.1)
RETRY_3 = RetryPolicy(attempts=3, base_delay=0.0)


@pytest.fixture(scope="module")
def mapping() -> KemluMapping:
    return KemluMapping.load()


@pytest.fixture(scope="module")
def schemas() -> SchemaStore:
    return SchemaStore.load(default_schema_root())


def page(name: str) -> list[Any]:
    items: list[Any] = json.loads((FIXTURES / name).read_text("utf-8"))["items"]
    return items


@pytest.fixture
def cases() -> list[Any]:
    """The items of ``cases-page.json``, read for each test (tests change copies of them)."""
    return page("cases-page.json")


def planned_message(mapping: KemluMapping, item: Mapping[str, Any], message: str) -> PlannedMessage:
    """Version 1 of a case planned, the one ``message`` wanted (``referral``, ``network_alert``, ...)."""
    found = next(p for p in mapping.plan(item, version="1") if p.message == message)
    assert isinstance(found, PlannedMessage), found
    return found


def event_ids(mapping: KemluMapping, item: Mapping[str, Any], *, version: str) -> list[str]:
    return [p.event_id for p in mapping.plan(item, version=version) if isinstance(p, PlannedMessage)]


def make_source(
    api: KemluCaseApiSimulator, state: Path, mapping: KemluMapping, **kwargs: Any
) -> KemluCaseApiSource:
    options: dict[str, Any] = {
        "base_url": URL(api.url), "mission": "kuching", "party": KBRI, "state_dir": state,
        "mapping": mapping, "poll_interval": 0.05, "backoff": FAST, **kwargs,
    }  # fmt: skip
    return KemluCaseApiSource(**options)


@pytest.fixture
def publish(world: World) -> WorldPublish:
    return WorldPublish(world, KBRI)


@pytest.fixture
async def api() -> AsyncIterator[KemluCaseApiSimulator]:
    """The case-API simulator, seeded with ``sarawak_cases()``."""
    async with KemluCaseApiSimulator() as simulator:
        yield simulator


@pytest.fixture
async def source(
    api: KemluCaseApiSimulator, tmp_path: Path, mapping: KemluMapping
) -> AsyncIterator[KemluCaseApiSource]:
    """A source polling ``api`` with the test defaults (state in ``tmp_path``), closed after the test."""
    polling = make_source(api, tmp_path, mapping)
    yield polling
    await polling.close()


async def run_until_all_referred(source: KemluCaseApiSource, publish: WorldPublish) -> None:
    """Run the poll loop until every Kuching TPPO case is referred (a few seconds at most), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(publish, stop))
    for _ in range(200):
        if publish.subjects("case.referral") == set(KCH_TPPO):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, timeout=5)


# ---- mapping ------------------------------------------------------------------------------------------


def test_every_seeded_case_maps_to_payloads_valid_under_the_real_schemas(
    mapping: KemluMapping, schemas: SchemaStore, cases: list[Any]
) -> None:
    produced: dict[str, int] = {}
    for item in cases:
        if item.get("tppo") is not True:
            continue
        for planned in mapping.plan(item, version=str(item["version"])):
            assert isinstance(planned, PlannedMessage), planned
            schemas.latest(planned.event_type).validate(planned.payload)
            produced[planned.message] = produced.get(planned.message, 0) + 1
    assert produced == {"referral": 5, "repatriation_plan": 4, "network_alert": 5}


def test_referral_carries_htcds_fields_and_identity_for_sealing(
    mapping: KemluMapping, cases: list[Any]
) -> None:
    referral = mapping.plan(cases[0], version="1")[0]
    assert isinstance(referral, PlannedMessage)
    assert referral.message == "referral"
    payload = referral.payload
    assert payload["case_id"] == "KBRI-KCH-2020-000123"
    assert payload["cas_ReferredOrganisation"] == "kemensos"
    assert payload["vic_TraffickingStatus"] == "ActualVictimOfTrafficking"
    assert payload["vic_ForcedLabourIndustry"] == "A_AgricultureForestryAndFishing"
    assert payload["identity"]["prs_FirstName"] == "Budi"
    assert payload["identity"]["prs_Gender"] == "Masculine"
    assert payload["trafficking_events"][2] == {
        "hte_Type": "Exploitation", "hte_Country": "MY", "hte_State": "Sarawak", "hte_City": "Bintulu",
        "hte_Date": "2019-12-01",
    }  # fmt: skip
    assert payload["perpetrator"][0]["vic_RelationshipToTrafficker"] == "Acquainted"
    # sealed for the referred party and the party in copy (the person consented to both)
    assert referral.recipients == ("kemensos", "iom")


def test_repatriation_plan_goes_through_entikong_to_pos_pemulangan_pontianak(
    mapping: KemluMapping, cases: list[Any]
) -> None:
    plan = planned_message(mapping, cases[0], "repatriation_plan")
    assert plan.payload["border_crossing"] == "plbn-entikong"
    assert plan.payload["arrival_point"] == "pos-pemulangan-pontianak"
    assert plan.payload["onward_location_id"] == "rptc-pontianak"
    assert plan.payload["transport_mode"] == "road"
    assert plan.recipients == ("kemensos", "iom")  # the escort (IOM) is already in copy


def test_network_alert_has_no_person_data_and_suppresses_small_counts(
    mapping: KemluMapping, cases: list[Any]
) -> None:
    kch = planned_message(mapping, cases[0], "network_alert")
    kl = planned_message(mapping, cases[-1], "network_alert")
    assert kch.payload["suspected_victim_count"] == 14
    assert kl.payload["suspected_victim_count"] == "<11"  # 6 people: small-cell suppressed
    assert kch.recipients == ()  # alerts are not sealed for anyone: there is nothing personal in them
    text = json.dumps(kch.payload)
    for personal in ("Budi", "Sampel", "SPLP-", "+44", "Pak Sampel", "Fictional Plantation"):
        assert personal not in text
    zero = copy.deepcopy(cases[0])
    zero["jaringan"]["jumlah_korban_terduga"] = 0
    alert = planned_message(mapping, zero, "network_alert")
    assert alert.payload["suspected_victim_count"] == 0


def test_event_ids_are_deterministic_per_case_version_and_message(
    mapping: KemluMapping, cases: list[Any]
) -> None:
    first = event_ids(mapping, cases[0], version="1")
    again = event_ids(mapping, copy.deepcopy(cases[0]), version="1")
    bumped = event_ids(mapping, cases[0], version="2")
    assert first == again
    assert first[0] == case_event_id("KBRI-KCH-2020-000123", "1", "referral")
    assert first[0] != bumped[0]
    assert first[1] != bumped[1]
    # the network is keyed on the alert and its own version: four cases naming it publish one event
    assert first[2] == bumped[2]
    other_case = event_ids(mapping, cases[1], version="1")
    assert other_case[2] == first[2]


def test_an_unknown_code_names_the_field_not_the_value(mapping: KemluMapping, cases: list[Any]) -> None:
    item = copy.deepcopy(cases[0])
    item["tppo_detail"]["sektor"] = SYNTHETIC_NAME
    planned = mapping.plan(item, version="1")
    problem = planned[0]
    assert isinstance(problem, MessageProblem)
    assert (problem.message, problem.error.field) == ("referral", "tppo_detail.sektor")
    assert SYNTHETIC_NAME not in str(problem) + problem.error.detail


def test_a_plan_without_a_referral_is_sealed_for_the_escort_only(
    mapping: KemluMapping, cases: list[Any]
) -> None:
    item = copy.deepcopy(cases[0])
    del item["rujukan"], item["jaringan"]
    [plan] = mapping.plan(item, version="1")
    assert isinstance(plan, PlannedMessage)
    assert (plan.message, plan.recipients) == ("repatriation_plan", ("iom",))


def test_mission_of_party() -> None:
    assert mission_of("kemlu.kbri-kuching") == "kuching"
    assert mission_of("kemlu.kbri-kuala-lumpur") == "kuala-lumpur"
    assert mission_of("kemensos") is None


# ---- the poll loop --------------------------------------------------------------------------------------


async def test_poll_publishes_only_tppo_cases_of_this_mission(
    api: KemluCaseApiSimulator, source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    result = await source.poll_once(publish)
    assert publish.subjects("case.referral") == set(KCH_TPPO)
    assert publish.subjects("case.repatriation-plan") == set(KCH_TPPO)
    assert publish.subjects("alert.network") == {"ALR-KCH-2020-000031"}
    assert len(publish.of_type("alert.network")) == 1  # one network, one event
    assert result.skipped == 1  # the lost-passport case (tppo false); the KL case is not even served
    assert all(q["mission"] == "kuching" for q in api.gets)
    published = {e.subject for e in publish.outbox.values()}
    assert "KBRI-KCH-2020-000130" not in published
    assert "KBRI-KL-2020-000310" not in published


async def test_identity_is_sealed_for_the_referred_party(
    world: World, source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    await source.poll_once(publish)
    referral = next(e for e in publish.of_type("case.referral") if e.subject == "KBRI-KCH-2020-000123")
    assert b"Budi" not in referral.data  # the wire form carries identity only inside `sealed`
    for party in ("kemensos", "iom"):
        verdict = world.verifier(party).verify_structured(referral.to_structured())
        assert isinstance(verdict, Accepted), verdict
        assert verdict.payload()["identity"]["prs_FirstName"] == "Budi"
    kbri_kl = world.verifier("kemlu.kbri-kuala-lumpur").verify_structured(referral.to_structured())
    assert not isinstance(kbri_kl, Accepted) or "identity" not in kbri_kl.payload()


async def test_cursor_is_persisted_and_resumed_after_restart(
    tmp_path: Path, mapping: KemluMapping, api: KemluCaseApiSimulator, publish: WorldPublish
) -> None:
    first = make_source(api, tmp_path, mapping)
    await first.poll_once(publish)
    await first.close()
    cursor = json.loads((tmp_path / "kemlu-cursor-kemlu-case-api.json").read_text("utf-8"))
    assert cursor["updated_since"] == "2020-08-10T09:20:00+08:00"  # the newest Kuching case
    assert cursor["mission"] == "kuching"
    published = set(publish.outbox)

    restarted = make_source(api, tmp_path, mapping)  # a new process: state only from the file
    restarted.cursor.load()
    api.gets.clear()
    calls_before = len(publish.attempts)
    await restarted.poll_once(publish)
    assert api.gets[0]["updated_since"] == "2020-08-10T09:20:00+08:00"
    assert len(publish.attempts) == calls_before  # the newest case was not TPPO: nothing re-published
    assert set(publish.outbox) == published

    api.update_case(
        "KBRI-KCH-2020-000125", {"pemulangan": {"status": "BERUBAH", "tanggal_berangkat": "2020-08-25"}}
    )
    await restarted.poll_once(publish)
    await restarted.close()
    new = set(publish.outbox) - published
    # a new version: a new referral and plan for that case; the network (its own version) is unchanged
    assert sorted(publish.outbox[i].type for i in new) == [
        "id.trafficking.case.referral", "id.trafficking.case.repatriation-plan"
    ]  # fmt: skip
    assert {publish.outbox[i].subject for i in new} == {"KBRI-KCH-2020-000125"}
    plans = [e for e in publish.of_type("case.repatriation-plan") if e.id in new]
    assert len(plans) == 1
    assert json.loads(plans[0].data)["plan_status"] == "changed"


async def test_re_polling_the_same_page_publishes_nothing_twice(
    tmp_path: Path, source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    await source.poll_once(publish)
    after_first = dict(publish.outbox)
    (tmp_path / "kemlu-cursor-kemlu-case-api.json").unlink()  # cursor lost: read everything again
    source.cursor.load()
    await source.poll_once(publish)
    assert publish.outbox.keys() == after_first.keys()
    ids = Counter(c.event_id for c in publish.attempts)
    network = next(e.id for e in publish.of_type("alert.network"))
    assert ids.pop(network) == 8  # named by four cases, polled twice
    assert set(ids.values()) == {2}  # every referral and plan: once per poll, one event in the outbox


async def test_keyset_paging_publishes_every_case_once(
    tmp_path: Path, mapping: KemluMapping, publish: WorldPublish
) -> None:
    cases = []
    for n in range(7):
        item = copy.deepcopy(sarawak_cases()[0])
        item["id_kasus"] = f"KBRI-KCH-2020-0002{n:02d}"
        item["updated_at"] = f"2020-08-11T09:{n:02d}:00+08:00"
        cases.append(item)
    tie = copy.deepcopy(cases[-1])  # two cases with the same timestamp across a page boundary
    tie["id_kasus"] = "KBRI-KCH-2020-000299"
    cases.append(tie)
    async with KemluCaseApiSimulator(cases) as api:
        source = make_source(api, tmp_path, mapping, page_size=2)
        result = await source.poll_once(publish)
        await source.close()
    assert publish.subjects("case.referral") == {c["id_kasus"] for c in cases}
    assert len(publish.of_type("case.referral")) == 8
    assert result.pages >= 4


async def test_api_that_fails_and_recovers_is_retried_with_backoff(
    api: KemluCaseApiSimulator, source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    api.fail_next(3)
    with capture_logs() as logs:
        await run_until_all_referred(source, publish)
    assert publish.subjects("case.referral") == set(KCH_TPPO)
    assert api.failures_served == 3
    assert source.consecutive_failures == 0
    unavailable = [e for e in logs if e["event"] == "kemlu_api.unavailable"]
    assert [e["attempt"] for e in unavailable] == [1, 2, 3]
    assert all(e["status"] == 503 for e in unavailable)
    assert any(e["event"] == "kemlu_api.recovered" for e in logs)


async def test_a_refusing_api_is_an_operator_error_retried_at_the_longest_delay(
    tmp_path: Path, mapping: KemluMapping, api: KemluCaseApiSimulator, publish: WorldPublish
) -> None:
    api.fail_next(1, status=401)  # e.g. an expired token, renewed by an operator
    source = make_source(
        api, tmp_path, mapping, backoff=RetryPolicy(attempts=1, base_delay=5.0, max_delay=0.05)
    )
    with capture_logs() as logs:
        await run_until_all_referred(source, publish)
    assert publish.subjects("case.referral") == set(KCH_TPPO)
    [refused] = [e for e in logs if e["event"] == "kemlu_api.unavailable"]
    assert (refused["log_level"], refused["status"]) == ("error", 401)


async def test_a_crashing_poll_does_not_kill_the_loop(
    source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    real_fetch = source._fetch
    calls = 0

    async def flaky(since: str, page_number: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in a dependency")
        return await real_fetch(since, page_number)

    source._fetch = flaky  # type: ignore[method-assign]
    await run_until_all_referred(source, publish)
    assert publish.subjects("case.referral") == set(KCH_TPPO)


async def test_cursor_stays_when_publish_defers_and_the_page_is_redone(
    tmp_path: Path, world: World, source: KemluCaseApiSource
) -> None:
    publish = WorldPublish(world, KBRI, refuse_on_call=(4, Reason.OUTBOX_FULL))
    with pytest.raises(Exception, match=r"outbox\.full"):
        await source.poll_once(publish)
    assert not (tmp_path / "kemlu-cursor-kemlu-case-api.json").exists()  # the page was not finished
    await source.poll_once(publish)  # the outbox has room again
    assert publish.subjects("case.referral") == set(KCH_TPPO)
    assert len(publish.outbox) == 9  # 4 referrals + 4 plans + 1 network alert, none twice


async def test_malformed_items_are_quarantined_without_values_and_do_not_block(
    tmp_path: Path, mapping: KemluMapping, publish: WorldPublish
) -> None:
    quarantined: list[tuple[str, str]] = []
    async with KemluCaseApiSimulator([]) as api:
        source = make_source(api, tmp_path, mapping, on_quarantine=lambda s, r: quarantined.append((s, r)))
        items = page("malformed-page.json")

        async def fixture_page(since: str, page_number: int) -> tuple[list[Any], int | None]:
            return items, None

        source._fetch = fixture_page  # type: ignore[method-assign]
        with capture_logs() as logs:
            result = await source.poll_once(publish)
        await source.close()
    report = (tmp_path / "kemlu-quarantine-kemlu-case-api.jsonl").read_text("utf-8")
    assert SYNTHETIC_NAME not in report
    assert SYNTHETIC_NAME not in json.dumps(logs, default=str)
    entries = [json.loads(line) for line in report.splitlines()]
    where = {(e["case_id"], e["message"], e["field"]) for e in entries}
    assert (None, "item", "item") in where  # not an object
    assert ("KBRI-KCH-2020-000901", "case", "updated_at") in where  # missing
    assert ("KBRI-KCH-2020-000902", "case", "updated_at") in where  # no offset
    assert ("KBRI-KCH-2020-000903", "referral", "tppo_detail.sektor") in where  # a name in a code field
    assert (None, "case", "id_kasus") in where  # a name as case id: the report holds no case id at all
    assert ("KBRI-KCH-2020-000905", "referral", "persetujuan.waktu") in where  # schema pattern
    assert ("KBRI-KCH-2020-000903", "repatriation_plan", "") in where  # skipped with its referral
    assert all(e["reason"] == "schema.invalid" for e in entries)
    assert len(quarantined) == len(entries) == result.quarantined
    # the valid case went through; the network alert of a quarantined case is independent of it
    assert publish.subjects("case.referral") == {"KBRI-KCH-2020-000907"}
    assert "ALR-KCH-2020-000031" in publish.subjects("alert.network")
    assert "KBRI-KCH-2020-000906" not in {e.subject for e in publish.outbox.values()}  # tppo "true" (string)
    cursor = json.loads((tmp_path / "kemlu-cursor-kemlu-case-api.json").read_text("utf-8"))
    assert cursor["updated_since"] == "2020-08-11T09:05:00+08:00"  # bad cases do not block the cursor


async def test_cursor_written_for_another_mission_is_ignored(
    tmp_path: Path, source: KemluCaseApiSource, publish: WorldPublish
) -> None:
    (tmp_path / "kemlu-cursor-kemlu-case-api.json").write_text(
        json.dumps(
            {"format": "kemlu-cursor/1", "mission": "kuala-lumpur", "updated_since": "2030-01-01T00:00:00Z"}
        )
    )
    source.cursor.load()
    await source.poll_once(publish)
    assert publish.subjects("case.referral") == set(KCH_TPPO)


def test_source_options_are_checked(tmp_path: Path) -> None:
    ctx = plugin_context(tmp_path, KBRI)
    source = build_source("kemlu-case-api", {"url": "http://127.0.0.1:9/"}, ctx)
    assert (source.mission, source.name) == ("kuching", "kemlu-case-api-kuching")
    assert source.cursor.path == tmp_path / "state" / "kemlu-cursor-kemlu-case-api-kuching.json"
    with pytest.raises(GatewayError, match=r"sources\[0\]\.mission"):
        build_source("kemlu-case-api", {"url": "http://127.0.0.1:9/"}, plugin_context(tmp_path, "kemensos"))
    with pytest.raises(GatewayError, match=r"sources\[0\]\.url"):
        build_source("kemlu-case-api", {"url": "ftp://example.org/"}, ctx)
    with pytest.raises(GatewayError, match="page_size"):
        build_source("kemlu-case-api", {"url": "http://127.0.0.1:9/", "page_size": 0}, ctx)
    with pytest.raises(GatewayError, match=r"sources\[0\]\.poll_intervall: unknown setting"):
        build_source("kemlu-case-api", {"url": "http://127.0.0.1:9/", "poll_intervall": 1.0}, ctx)
    with pytest.raises(GatewayError, match=r"sources\[0\]\.maping: unknown setting"):
        build_sink("kemlu-case-api", {"url": "http://127.0.0.1:9/", "maping": "x.toml"}, ctx)
    (tmp_path / "token").write_text("s3cr3t\n")
    with_token = build_source("kemlu-case-api", {"url": "http://127.0.0.1:9/", "token_file": "token"}, ctx)
    assert with_token._headers["Authorization"] == "Bearer s3cr3t"


# ---- outbound ---------------------------------------------------------------------------------------------


def accepted_for_kbri(
    world: World, event_type: str, payload: Mapping[str, Any], *, sealed: bool = True
) -> Accepted:
    event = world.event(event_type, payload, by="kemensos", recipients=[KBRI] if sealed else [])
    verdict = world.verifier(KBRI).verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted), verdict
    return verdict


@pytest.fixture
def admission(world: World) -> Accepted:
    """Kemensos' shelter admission of case KBRI-KCH-2020-000123, sealed for (and verified by) KBRI Kuching."""
    return accepted_for_kbri(
        world, "id.trafficking.case.shelter-admission", example("case.shelter-admission", "1.0")[0][1]
    )


@pytest.fixture
async def updates(api: KemluCaseApiSimulator, tmp_path: Path) -> AsyncIterator[WebhookSink]:
    """The ``kemlu-case-api`` sink as an operator configures it, posting to ``api``; closed after the test."""
    sink = build_sink("kemlu-case-api", {"url": api.url}, plugin_context(tmp_path, KBRI))
    assert isinstance(sink, WebhookSink)  # the gateway's webhook sink, configured: nothing re-implemented
    yield sink
    await sink.close()


async def test_shelter_admission_and_closure_are_posted_as_case_updates(
    world: World, api: KemluCaseApiSimulator, updates: WebhookSink, admission: Accepted
) -> None:
    closure_payload = next(p for path, p in example("case.closure", "1.0") if "reintegrated" in path.name)
    closure = accepted_for_kbri(world, "id.trafficking.case.closure", closure_payload)
    await updates.deliver(admission)
    await updates.deliver(admission)  # redelivery: the API answers 409, which counts as delivered
    await updates.deliver(closure)
    assert [u.case_id for u in api.updates] == ["KBRI-KCH-2020-000123", "KBRI-KCH-2020-000123"]
    assert api.update_attempts == 3
    first, second = api.updates
    assert first.idempotency_key == f"kemensos/{admission.event.id}"
    assert first.body == {
        "jenis_pembaruan": "PENERIMAAN_SHELTER",
        "id_kasus": "KBRI-KCH-2020-000123",
        "sumber": {"pihak": "KEMENSOS", "id_event": admission.event.id, "waktu_event": admission.event.time},
        "penerimaan": {
            "shelter": "RPTC_PONTIANAK", "waktu_masuk": "2020-08-19T14:20:00+07:00",
            "datang_dari": "POS_PEMULANGAN_PONTIANAK", "jenis": "DARI_POS_PEMULANGAN",
            "rencana_keluar": "2020-09-15", "karantina": True,
            "rujukan_event": "5d0c2a4e-3b8f-4c61-9a57-0f1e2d3c4b01",
        },
        "kesehatan": {
            "covid19": "NEGATIF", "jenis_tes": "PCR", "tanggal_tes": "2020-08-19",
            "karantina_sampai": "2020-09-01", "butuh_dukungan_psikososial": True,
        },
    }  # fmt: skip
    assert second.body["penutupan"] == {
        "status": "DITUTUP", "tanggal": "2020-10-30", "alasan": "KEMBALI_KE_KELUARGA",
        "keterangan": closure_payload["cas_ReasonForCaseClosure"],
    }  # fmt: skip


async def test_outbound_without_a_native_mapping_is_dead_lettered_not_retried(
    world: World, api: KemluCaseApiSimulator, updates: WebhookSink, admission: Accepted
) -> None:
    referral = accepted_for_kbri(world, "id.trafficking.case.referral", example("case.referral", "1.0")[0][1])
    unknown_case = dict(example("case.closure", "1.0")[0][1], case_id="KBRI-KCH-2020-999999")
    with capture_logs() as logs:
        with pytest.raises(SinkError) as no_mapping:
            await deliver_with_retry(updates, referral, RETRY_3)
        assert not no_mapping.value.retryable
        with pytest.raises(SinkError) as unknown:
            await deliver_with_retry(
                updates, accepted_for_kbri(world, "id.trafficking.case.closure", unknown_case, sealed=False),
                RETRY_3,
            )  # fmt: skip
        assert (unknown.value.status, unknown.value.retryable) == (404, False)
        api.fail_next(1)
        await deliver_with_retry(updates, admission, RETRY_3)  # 503 then 201
    assert api.update_attempts == 3
    assert len(api.updates) == 1
    # the update URL names the case; like every webhook URL it is never put into an error or a log line
    for text in (str(no_mapping.value), str(unknown.value), repr(logs)):
        assert "/api/v1/cases" not in text
        assert "999999" not in text


def test_update_url_names_the_case_and_refuses_anything_but_a_case_id(admission: Accepted) -> None:
    base = URL("https://pwni.kemlu.example/")
    assert update_url(base, admission) == URL(
        "https://pwni.kemlu.example/api/v1/cases/KBRI-KCH-2020-000123/updates"
    )
    for subject in (SYNTHETIC_NAME, "../../admin", "KBRI-KCH-2020-000123/../x", "kbri-kch-2020-000123"):
        forged = dataclasses.replace(admission, event=dataclasses.replace(admission.event, subject=subject))
        with pytest.raises(MappingError) as info:
            update_url(base, forged)
        assert (info.value.reason, info.value.field) == (Reason.SCHEMA_INVALID, "case_id")
        assert subject not in str(info.value)


# ---- times that must not stop the feed (issue 18) ------------------------------------------------------


@pytest.mark.parametrize(
    ("updated_at", "reason"),
    [
        ("9999-12-31T23:59:59+00:00", "time.out-of-range"),  # would carry the cursor to the far future
        ("0001-01-01T00:00:00+01:00", "time.out-of-range"),  # no UTC form: every poll used to fail
    ],
)
async def test_an_unusable_updated_at_is_quarantined_and_never_moves_the_cursor(
    api: KemluCaseApiSimulator,
    source: KemluCaseApiSource,
    publish: WorldPublish,
    updated_at: str,
    reason: str,
) -> None:
    [poisoned, *_] = [c for c in api.cases if c["id_kasus"] in KCH_TPPO]
    api.add_case({**poisoned, "id_kasus": "KBRI-KCH-2099-000001", "updated_at": updated_at})
    first = await source.poll_once(publish)
    assert first.quarantined == 1
    cursor = parse_instant(source.cursor.since)
    assert cursor is not None
    assert cursor <= source.window.latest(datetime.now(UTC))
    assert publish.subjects("case.referral") == set(KCH_TPPO)  # every good case went through
    [entry] = [json.loads(line) for line in source.quarantine_file.read_text("utf-8").splitlines()]
    assert (entry["case_id"], entry["field"]) == ("KBRI-KCH-2099-000001", "updated_at")
    assert entry["reason"] == reason

    [fresh, *_] = [c for c in api.cases if c["id_kasus"] in KCH_TPPO]
    api.update_case(fresh["id_kasus"], {"catatan_status": "x"})  # a later good change still arrives
    second = await source.poll_once(publish)
    assert second.published >= 1


async def test_a_cursor_file_in_the_far_future_is_ignored(tmp_path: Path, mapping: KemluMapping) -> None:
    source = KemluCaseApiSource(
        base_url=URL("http://127.0.0.1:9"), mission="kuching", party=KBRI, state_dir=tmp_path, mapping=mapping
    )
    source.cursor.save("9999-12-31T23:59:59+00:00")  # left by a version without the bound
    with capture_logs() as logs:
        assert source.cursor.load() == source.cursor.initial
    assert [e["event"] for e in logs] == ["kemlu_api.cursor_in_future"]
