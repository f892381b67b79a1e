"""Case coordination: projection throughput and statistics over 1,000,000 events (docs/PERFORMANCE.md, 6).

Synthetic case histories (referral, answer, plans, arrival at a return post, admission, assistance, discharge,
closure, plus shelter-capacity snapshots), about nine events per case, fed to the coordination layer of one
party's gateway on one core (one asyncio loop; the store's own thread does the SQL):

* ``record``: :meth:`Coordinator.record` per event, waiting for each commit (projection + SOP engine with
  the shipped proposal SOP in one transaction per event; ``flush_ms = 0``), SQLite;
* ``group commit``: as the runtime feeds it by default (``flush_ms = 20``): events queued, committed in
  groups, the SOP engine in the same transaction;
* ``projection``: the timeline projection alone (``project`` + ``Store.add``) in batches of 500, SQLite
  (what a catch-up or a bulk import costs);
* ``statistics``: :func:`compute` of one month over a store holding 1,000,000 events and their cases'
  statistical profiles, with suppression (target: under 10 s).

Run: ``.venv/bin/python -m bench.coordination`` (full size, a few minutes) or ``--quick`` (smoke size).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench._common import machine, print_table, self_cpu_seconds, self_peak_rss_mb, write_results
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.coordination.clock import ManualClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.projection import project
from gateway.coordination.service import Coordinator
from gateway.coordination.statistics import compute, month_of
from gateway.coordination.store import Store

SAMPLE_REGISTRY = Path(__file__).resolve().parent.parent / "deploy" / "registry.example.toml"
_POSTS = ("pos-pemulangan-pontianak", "pos-pemulangan-nunukan", "pos-pemulangan-tanjungpinang")
_START = datetime(2020, 8, 1, tzinfo=UTC).timestamp()


def _zulu(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def case_events(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """The events of one synthetic case, in order (identifiers and codes only, as on the wire)."""
    case = f"KBRI-KCH-2020-{n:07d}"
    t = _START + rng.uniform(0, 30 * 86400)
    referral_id = str(uuid.UUID(int=rng.getrandbits(128)))
    events: list[dict[str, Any]] = []

    def add(kind: str, source: str, clear: dict[str, Any], dt: float, event_id: str | None = None) -> None:
        nonlocal t
        t += dt
        events.append(
            {
                "event_type": f"id.trafficking.{kind}",
                "source": source,
                "event_id": event_id or str(uuid.UUID(int=rng.getrandbits(128))),
                "subject": case,
                "time": _zulu(t),
                "clear": {"case_id": case, **clear},
            }
        )

    add("case.referral", "kemlu.kbri-kuching", {"cas_ReferredOrganisation": "kemensos"}, 0, referral_id)
    add(
        "case.referral-response",
        "kemensos",
        {"status": "accepted", "referral_event": {"source": "kemlu.kbri-kuching", "id": referral_id}},
        rng.uniform(1, 40) * 3600,
    )
    add("case.repatriation-plan", "kemlu.kbri-kuching", {"plan_status": "confirmed"}, 86400)
    post = rng.choice(_POSTS)
    arrived = t + 3 * 86400
    add(
        "case.repatriation-plan",
        "kemlu.kbri-kuching",
        {"plan_status": "completed", "arrival_point": post, "planned_arrival_date": _zulu(arrived)[:10]},
        3 * 86400,
    )
    add(
        "case.shelter-admission",
        "kemensos",
        {"shelter_id": "rptc-pontianak", "admitted_at": _zulu(t + 7200)},
        7200,
    )
    for _ in range(rng.randint(1, 2)):
        add(
            "case.assistance-record",
            "iom",
            {"assistance_type": "psychoeducation", "provided_on": _zulu(t)[:10]},
            86400,
        )
    add(
        "case.shelter-discharge",
        "kemensos",
        {
            "shelter_id": "rptc-pontianak",
            "discharged_at": _zulu(t + 600),
            "discharge_destination": "family-reunification",
        },
        14 * 86400,
    )
    add(
        "case.closure",
        "kemensos",
        {"closed_on": _zulu(t)[:10], "closure_reason_code": "reintegrated"},
        2 * 86400,
    )
    return events


def profile_payload(event: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    if not event["event_type"].endswith("case.referral"):
        return None
    return {
        **event["clear"],
        "vic_TypeOfExploitation": [rng.choice(["ForcedLabour", "SexualExploitation"])],
        "trafficking_events": [{"hte_Type": "Exploitation", "hte_Country": rng.choice(["MY", "SA", "HK"])}],
        "identity": {
            "prs_Gender": rng.choice(["Feminine", "Masculine"]),
            "prs_Birthdate": f"{rng.randint(1960, 2008)}-06-15",
            "prs_Citizenship": ["ID"],
        },
    }


def stream(count: int, seed: int = 7) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    rng = random.Random(seed)
    result: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    n = 0
    while len(result) < count:
        for event in case_events(n, rng):
            result.append((event, profile_payload(event, rng)))
        n += 1
    return result[:count]


async def bench_record(
    events: list[tuple[dict[str, Any], dict[str, Any] | None]],
    folder: Path,
    registry: Registry,
    schemas: SchemaStore,
) -> dict[str, Any]:
    store = Store.sqlite(folder / "record.db")
    coordinator = Coordinator(
        CoordinationConfig(sop_alerts=False, profiles=True),
        party="kemensos",
        registry=registry,
        schemas=schemas,
        clock=ManualClock(datetime(2020, 9, 1, tzinfo=UTC)),
        store=store,
    )
    await coordinator.start()
    cpu, wall = self_cpu_seconds(), time.perf_counter()
    for event, payload in events:
        await coordinator.record(**event, payload=payload)
    wall, cpu = time.perf_counter() - wall, self_cpu_seconds() - cpu
    instances = len(await store.instances())
    await coordinator.stop()
    return {
        "events": len(events),
        "seconds": wall,
        "cpu_seconds": cpu,
        "events_per_s": len(events) / wall,
        "sop_instances": instances,
    }


async def bench_group_commit(
    events: list[tuple[dict[str, Any], dict[str, Any] | None]],
    folder: Path,
    registry: Registry,
    schemas: SchemaStore,
) -> dict[str, Any]:
    """As the runtime feeds the coordinator with ``flush_ms = 20``: each event queued (yielding to the loop
    between events, as the subscriber does), committed in groups with the SOP engine."""
    store = Store.sqlite(folder / "group.db")
    coordinator = Coordinator(
        CoordinationConfig(sop_alerts=False, profiles=True, flush_ms=20.0),
        party="kemensos",
        registry=registry,
        schemas=schemas,
        clock=ManualClock(datetime(2020, 9, 1, tzinfo=UTC)),
        store=store,
    )
    await coordinator.start()
    cpu, wall = self_cpu_seconds(), time.perf_counter()
    futures = []
    for event, payload in events:
        futures.append(coordinator.submit(**event, payload=payload))
        await asyncio.sleep(0)
    await asyncio.gather(*(f for f in futures if f is not None))
    wall, cpu = time.perf_counter() - wall, self_cpu_seconds() - cpu
    instances = len(await store.instances())
    await coordinator.stop()
    return {
        "events": len(events),
        "seconds": wall,
        "cpu_seconds": cpu,
        "events_per_s": len(events) / wall,
        "sop_instances": instances,
        "flush_ms": 20.0,
    }


async def bench_projection(
    events: list[tuple[dict[str, Any], dict[str, Any] | None]], folder: Path, batch: int = 500
) -> tuple[dict[str, Any], Store]:
    store = Store.sqlite(folder / "projection.db")
    await store.open()
    cpu, wall = self_cpu_seconds(), time.perf_counter()
    for start in range(0, len(events), batch):
        entries = [
            entry
            for event, payload in events[start : start + batch]
            if (
                entry := project(
                    event_type=event["event_type"],
                    source=event["source"],
                    event_id=event["event_id"],
                    subject=event["subject"],
                    event_time=event["time"],
                    clear=event["clear"],
                    payload=payload,
                    profiles=True,
                )
            )
            is not None
        ]
        await store.add(entries)
    wall, cpu = time.perf_counter() - wall, self_cpu_seconds() - cpu
    return {
        "events": len(events),
        "batch": batch,
        "seconds": wall,
        "cpu_seconds": cpu,
        "events_per_s": len(events) / wall,
    }, store


async def bench_statistics(store: Store, events: int) -> dict[str, Any]:
    period = month_of(date(2020, 8, 1))
    runs = []
    for _ in range(3):
        cpu, wall = self_cpu_seconds(), time.perf_counter()
        stats = await compute(store, "kemensos", period)
        runs.append((time.perf_counter() - wall, self_cpu_seconds() - cpu))
    best = min(runs)
    payload = stats.payload()
    suppressed = sum(row.count("suppressed") for t in payload["tables"] for row in t["cells"])
    return {
        "events_in_store": events,
        "seconds": best[0],
        "cpu_seconds": best[1],
        "runs": runs,
        "tables": len(payload["tables"]),
        "suppressed_cells": suppressed,
    }


async def main(quick: bool) -> dict[str, Any]:
    record_n = 2_000 if quick else 50_000
    stats_n = 20_000 if quick else 1_000_000
    schemas = SchemaStore.load()
    registry = Registry.load(SAMPLE_REGISTRY)
    with tempfile.TemporaryDirectory(prefix="xchg-bench-coord-") as tmp:
        folder = Path(tmp)
        record = await bench_record(stream(record_n), folder, registry, schemas)
        group = await bench_group_commit(stream(record_n, seed=3), folder, registry, schemas)
        projection, store = await bench_projection(stream(stats_n, seed=11), folder)
        statistics = await bench_statistics(store, stats_n)
        await store.close()
    print_table(
        "Coordination (one core, SQLite)",
        ["measure", "events", "seconds", "events/s"],
        [
            (
                "projection + SOP engine, commit per event",
                record["events"],
                f"{record['seconds']:.2f}",
                f"{record['events_per_s']:,.0f}",
            ),
            (
                "projection + SOP engine, group commit 20 ms",
                group["events"],
                f"{group['seconds']:.2f}",
                f"{group['events_per_s']:,.0f}",
            ),
            (
                "projection alone, batches of 500",
                projection["events"],
                f"{projection['seconds']:.2f}",
                f"{projection['events_per_s']:,.0f}",
            ),
            (
                "statistics of one month (best of 3)",
                statistics["events_in_store"],
                f"{statistics['seconds']:.2f}",
                "",
            ),
        ],
    )
    document = {
        "quick": quick,
        "machine": machine(),
        "record": record,
        "group_commit": group,
        "projection": projection,
        "statistics": statistics,
        "peak_rss_mb": self_peak_rss_mb(),
    }
    write_results("coordination", document)
    return document


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke size (seconds)")
    asyncio.run(main(parser.parse_args().quick))
