"""Statistics from the timeline: tables, exports, the statistics alert; erasure in the timeline."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway.coordination.clock import ManualClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.service import Coordinator, write_report
from gateway.coordination.statistics import month_of
from gateway.coordination.store import Store
from gateway.coordination.suppression import SUPPRESSED
from tests.unit.coordination.lp_attacker import recovered_cells
from tests.world import World

AUGUST = month_of(date(2020, 8, 10))


def _referral(case_id: str, gender: str, born: str) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "cas_ReferredOrganisation": "kemensos",
        "vic_TypeOfExploitation": ["ForcedLabour"],
        "trafficking_events": [{"hte_Type": "Exploitation", "hte_Country": "MY"}],
        "identity": {
            "prs_FirstName": "Contoh",
            "prs_Gender": gender,
            "prs_Birthdate": born,
            "prs_Citizenship": ["ID"],
        },
    }


async def _coordinator(store: Store, world: World) -> tuple[Coordinator, ManualClock]:
    clock = ManualClock(datetime(2020, 8, 5, tzinfo=UTC))
    config = CoordinationConfig(profiles=True, statistics=True)
    return Coordinator(
        config, party="kemensos", registry=world.registry, schemas=world.schemas, clock=clock, store=store
    ), clock


async def test_a_month_of_statistics(store: Store, world: World, tmp_path: Path) -> None:
    c, clock = await _coordinator(store, world)
    for n in range(14):  # 14 women 30-38, 3 men 18-20: the men's cells are small
        gender, born = ("Feminine", "1985-01-01") if n < 14 else ("Masculine", "2001-01-01")
        payload = _referral(f"KBRI-KCH-2020-{n:06d}", gender, born)
        clear = {k: v for k, v in payload.items() if k != "identity"}
        await c.record(
            event_type="id.trafficking.case.referral",
            source="kemlu.kbri-kuching",
            event_id=str(uuid.uuid4()),
            subject=payload["case_id"],
            time="2020-08-10T08:00:00Z",
            clear=clear,
            payload=payload,
        )
    for n in range(3):
        payload = _referral(f"KBRI-KCH-2020-{100 + n:06d}", "Masculine", "2001-01-01")
        await c.record(
            event_type="id.trafficking.case.referral",
            source="kemlu.kbri-kuching",
            event_id=str(uuid.uuid4()),
            subject=payload["case_id"],
            time="2020-08-11T08:00:00Z",
            clear={k: v for k, v in payload.items() if k != "identity"},
            payload=payload,
        )
    await c.record(
        event_type="id.trafficking.alert.shelter-capacity",
        source="kemensos",
        event_id="cap-1",
        subject="CAP-RPTC-PONTIANAK",
        time="2020-08-26T01:00:00Z",
        clear={
            "alert_id": "CAP-RPTC-PONTIANAK",
            "shelter_id": "rptc-pontianak",
            "as_of": "2020-08-26T01:00:00Z",
            "capacity_beds": 60,
            "occupied_beds": 56,
            "available_beds": 4,
        },
    )
    clock.advance(days=30)
    stats = await c.statistics(AUGUST)
    payload = stats.payload()
    world.schemas.latest("id.trafficking.alert.statistics").validate(payload)
    by_id = {t["id"]: t for t in payload["tables"]}
    sex_age = by_id["cases-by-sex-and-age-band"]
    assert sex_age["total"] == 17
    # 3 men are suppressed; with the grand total published, the women's 14 must go too (complementary)
    assert sex_age["row_totals"][sex_age["rows"].index("Masculine")] == SUPPRESSED
    assert sex_age["row_totals"][sex_age["rows"].index("Feminine")] == SUPPRESSED
    assert recovered_cells(payload["tables"]) == []
    assert payload["shelters"] == [
        {
            "shelter_id": "rptc-pontianak",
            "capacity_beds": 60,
            "peak_occupied_beds": 56,
            "min_available_beds": 4,
            "peak_occupancy": 0.933,
        }
    ]
    assert by_id["open-cases-by-stage"]["cells"][0][0] == 17  # all still at the referral stage
    csv_text, html_text = stats.to_csv(), stats.to_html()
    assert "cases-by-sex-and-age-band,Masculine,total,suppressed" in csv_text
    assert "suppressed" in html_text
    assert "<svg" in html_text
    files = write_report(stats, tmp_path / "reports")
    assert json.loads(files[0].read_text("utf-8"))["alert_id"] == "STAT-KEMENSOS-2020-08"
    for text in (csv_text, html_text, json.dumps(payload)):
        assert "Contoh" not in text  # names never reach statistics


async def test_an_erasure_is_recorded_without_content_and_deletes_the_profile(
    store: Store, world: World
) -> None:
    c, _ = await _coordinator(store, world)
    payload = _referral("KBRI-KCH-2020-000777", "Feminine", "1990-05-05")
    await c.record(
        event_type="id.trafficking.case.referral",
        source="kemlu.kbri-kuching",
        event_id="r-1",
        subject=payload["case_id"],
        time="2020-08-10T08:00:00Z",
        clear={k: v for k, v in payload.items() if k != "identity"},
        payload=payload,
    )
    assert (await c.statistics(AUGUST)).payload()["tables"][2]["total"] == SUPPRESSED  # one case: counted
    change = {
        "case_id": payload["case_id"],
        "change": "withdrawn",
        "con_Consent": False,
        "scope": [],
        "effective_at": "2020-08-12T08:00:00Z",
        "erasure_requested": True,
    }
    await c.record(
        event_type="id.trafficking.case.consent-change",
        source="kemlu.kbri-kuching",
        event_id="cc-1",
        subject=payload["case_id"],
        time="2020-08-12T08:00:00Z",
        clear=change,
    )
    assert await store.erasures() == [(payload["case_id"], datetime(2020, 8, 12, 8, tzinfo=UTC).timestamp())]
    stages = [e["stage"] for e in await store.events(payload["case_id"])]
    assert stages == ["referral", "consent-change"]
    assert (await c.statistics(AUGUST)).payload()["tables"][2]["total"] == 0  # the profile is gone


async def test_retention_deletes_what_is_older_than_the_cutoff(store: Store, world: World) -> None:
    c, _ = await _coordinator(store, world)
    for n, day in enumerate(("2020-08-01", "2020-08-20")):
        payload = _referral(f"KBRI-KCH-2020-00080{n}", "Feminine", "1990-05-05")
        await c.record(
            event_type="id.trafficking.case.referral",
            source="kemlu.kbri-kuching",
            event_id=f"r-{n}",
            subject=payload["case_id"],
            time=f"{day}T08:00:00Z",
            clear={k: v for k, v in payload.items() if k != "identity"},
            payload=payload,
        )
    removed = await store.prune(datetime(2020, 8, 10, tzinfo=UTC).timestamp())
    assert removed >= 2  # the old referral's timeline row and its profile
    assert await store.events("KBRI-KCH-2020-000800") == []
    assert len(await store.events("KBRI-KCH-2020-000801")) == 1
