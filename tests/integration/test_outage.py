"""A case system down far longer than the old retry budget: no dead letter, nothing lost or doubled.

Issue 13's "done means", with real ``gateway run`` processes (KBRI Kuching publishing from a drop file,
Kemensos delivering to an HTTP case-system simulator) on a fresh embedded broker:

1. The case system answers 503 to everything while 1,000 alerts (40 "cases": alert ids repeat, so per-key
   order matters) are published. The outage lasts well beyond the old budget (5 attempts in about 3 s):
   the test waits until Kemensos's own ``xchg_sink_outage_seconds`` passes 8 s. Meanwhile ``/readyz`` is 503
   naming the sink, no dead letter is written, and a second ``gateway run`` on Kemensos's data_dir exits
   non-zero with ``gateway.already-running``. The system comes back: every event reaches it exactly once, each
   key's events in the order they were published.
2. Kemensos restarts with a horizon of 3.6 s (``horizon_hours = 0.001``; the scale is the only difference
   from production); the system goes down again for 200 more alerts: past the horizon they are dead-lettered
   as ``sink.failed``. It comes back; ``gateway dlq redrive --reason sink.failed --apply``, run while the
   gateway is stopped, queues the request, which the gateway runs when it starts: each delivered exactly
   once; running the command again (gateway up) finds only duplicates.

Runs in about 35 s on two cores (measured: 35.4 s); marked ``slow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import sqlite3
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.sandbox.broker import EmbeddedBroker, free_port
from gateway.sandbox.deployment import SandboxParty, create_sandbox
from tests.integration.agency_sim import AgencySimulator
from tests.integration.exchange import eventually, kafka_table
from tests.integration.test_resilience import (
    KCH,
    READER,
    SHUTDOWN_TIMEOUT,
    GatewayProcess,
    drop_file,
    gateway_processes,  # noqa: F401 - the fixture, used by name
    settings_for,
)
from tests.world import example

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CASES = 40
DOWN = 10**9  # "fail the next 10**9 requests": down until told otherwise


def alerts(count: int, run: str) -> list[dict[str, Any]]:
    """``count`` group-arrival alerts over :data:`CASES` alert ids (the partition key), synthetic."""
    base = example("alert.group-arrival", "1.0")[0][1]
    found = []
    for n in range(count):
        alert = copy.deepcopy(base)
        alert["alert_id"] = f"ALR-{run}-{n % CASES:03d}"
        alert["expected_count"] = 11 + n % 40
        found.append(alert)
    return found


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback test URL
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")


def metric(ops: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (with ``labels``) on the gateway's /metrics; 0 when it has none."""
    try:
        _, text = http(f"{ops}/metrics")
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def published_order(party: SandboxParty) -> list[str]:
    """The publisher's event ids in outbox order: the order they went onto their partitions."""
    uri = f"file:{party.data_dir / 'outbox.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        return [row[0] for row in connection.execute("SELECT event_id FROM outbox ORDER BY seq")]


def unsent(party: SandboxParty) -> int:
    uri = f"file:{party.data_dir / 'outbox.db'}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            return int(connection.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])
    except sqlite3.OperationalError:
        return -1


async def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a child process, waited for in a thread: this loop serves the case-system simulator."""
    return await asyncio.to_thread(_gateway_cli, *args)


def _gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHG__")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def set_retry(party: SandboxParty, **retry: float) -> None:
    document = tomllib.loads(party.config.read_text("utf-8"))
    document["retry"] = {**document.get("retry", {}), **retry}
    party.config.write_text(tomli_w.dumps(document), "utf-8")


def check_per_key_order(agency: AgencySimulator, order: list[str], key_of: dict[str, str]) -> None:
    position = {event_id: n for n, event_id in enumerate(order)}
    seen: dict[str, int] = {}
    for post in agency.posts:
        if post.event_id not in key_of:
            continue
        key = key_of[post.event_id]
        assert position[post.event_id] > seen.get(key, -1), f"{key}: delivered out of order"
        seen[key] = position[post.event_id]


async def test_an_outage_is_ridden_out_and_beyond_the_horizon_redrive_delivers_exactly_once(
    tmp_path: Path,
    embedded_broker: EmbeddedBroker,
    gateway_processes: Callable[[SandboxParty], GatewayProcess],  # noqa: F811 - the fixture
) -> None:
    settings = settings_for(embedded_broker)
    port = free_port()
    ops = f"http://127.0.0.1:{port}"
    async with AgencySimulator() as agency:
        sandbox = create_sandbox(
            tmp_path, [KCH, READER], bootstrap_servers=settings.bootstrap_servers,
            sinks={READER: [{"kind": "webhook", "url": agency.url}]},
            settings={"kafka": kafka_table(settings), "shutdown": {"timeout_seconds": SHUTDOWN_TIMEOUT},
                      "retry": {"base_delay": 0.05, "max_delay": 0.5, "breaker_threshold": 3}},
            per_party={READER: {"ops": {"port": port, "host": "127.0.0.1"}}},
        )  # fmt: skip
        reader, publisher = gateway_processes(sandbox[READER]), gateway_processes(sandbox[KCH])

        # ---- 1. a long outage: ridden out ----------------------------------------------------------------
        agency.fail_next(DOWN)
        reader.start()
        publisher.start()
        batch = alerts(1000, "OUT")
        ids = drop_file(sandbox[KCH], batch, "arrivals-outage")
        key_of = {event_id: alert["alert_id"] for event_id, alert in zip(ids, batch, strict=True)}
        await eventually(lambda: unsent(sandbox[KCH]) == 0 and len(published_order(sandbox[KCH])) >= 1000,
                         timeout=90, what="all 1,000 published")  # fmt: skip
        await eventually(
            lambda: metric(ops, "xchg_sink_outage_seconds") > 8.0,
            timeout=60,
            what="an 8 s outage at the sink",
        )
        status, body = http(f"{ops}/readyz")
        assert status == 503
        assert "sinks" in body
        assert "open" in body or "half-open" in body
        assert metric(ops, "xchg_dead_lettered_total") == 0
        assert agency.received() == set()

        second = await gateway_cli("run", "--config", str(sandbox[READER].config))
        assert second.returncode != 0
        assert "gateway.already-running" in second.stderr

        agency.fail_next(0)  # the case system is back
        wanted = set(ids)
        await eventually(
            lambda: agency.received() >= wanted, timeout=120, what="all 1,000 at the case system"
        )
        counts = agency.counts()
        assert all(counts[event_id] == 1 for event_id in wanted), "an event reached the system twice"
        check_per_key_order(agency, published_order(sandbox[KCH]), key_of)
        assert metric(ops, "xchg_dead_lettered_total") == 0
        await eventually(lambda: metric(ops, "xchg_sink_state", state="closed") == 1, what="breaker closed")

        # ---- 2. beyond the horizon: dead letters, then one command --------------------------------------
        reader.signal(signal.SIGTERM)
        assert await reader.wait(SHUTDOWN_TIMEOUT + 5) == 0, reader.tail()
        set_retry(sandbox[READER], horizon_hours=0.001)
        agency.fail_next(DOWN)
        reader.start()
        late = alerts(200, "HOR")
        late_ids = set(drop_file(sandbox[KCH], late, "arrivals-horizon"))
        await eventually(
            lambda: metric(ops, "xchg_dead_lettered_total", reason="sink.failed") >= 200,
            timeout=90, what="200 dead letters past the horizon",
        )  # fmt: skip
        assert not (agency.received() & late_ids)
        agency.fail_next(0)

        config = str(sandbox[READER].config)
        redrive = ("dlq", "redrive", "--config", config, "--reason", "sink.failed")
        dry = await gateway_cli(*redrive)
        assert dry.returncode == 0, dry.stderr
        assert "dry run: 200 dead letter(s)" in dry.stderr
        assert not (agency.received() & late_ids)  # a dry run delivers nothing

        # applied while the gateway is stopped: the request waits in data_dir and runs when it starts
        reader.signal(signal.SIGTERM)
        assert await reader.wait(SHUTDOWN_TIMEOUT + 5) == 0, reader.tail()
        queued = await gateway_cli(*redrive, "--apply")
        assert queued.returncode == 1, queued.stdout + queued.stderr
        assert "no gateway runs on this data_dir" in queued.stderr
        assert not (agency.received() & late_ids)
        reader.start()
        await eventually(lambda: agency.received() >= late_ids, timeout=90, what="the queued re-drive")
        counts = agency.counts()
        assert all(counts[event_id] == 1 for event_id in late_ids)

        again = await gateway_cli(*redrive, "--apply")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "200 duplicate" in again.stderr
        assert agency.counts() == counts  # nothing sent twice

        for process in (reader, publisher):
            process.signal(signal.SIGTERM)
            assert await process.wait(SHUTDOWN_TIMEOUT + 5) == 0, process.tail()
