"""Resilience of the exchange: broker frozen or restarted empty, subscriber killed, publisher terminated.

Every test owns a fresh embedded broker (skipped when ``XCHG_TEST_KAFKA`` names an external cluster, whose
processes a test cannot freeze or restart) and checks the promise of the docs: an event accepted by
``publish`` reaches each permitted reader, and the reader's agency system sees it once (or, in the one
documented window of :mod:`gateway.bus.inbox`, a second time under the same ``Idempotency-Key``).

Gateways killed or terminated by signal run as real ``gateway run --config FILE`` child processes; the
fixture :func:`gateway_processes` kills and reaps every one of them, whatever the outcome of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from gateway.bus.kafka import KafkaSettings
from gateway.errors import GatewayError, Reason
from gateway.runtime.jsonlines import drop_event_id
from gateway.sandbox.broker import EmbeddedBroker
from gateway.sandbox.deployment import SandboxParty, create_sandbox
from tests.integration.agency_sim import AgencySimulator
from tests.integration.exchange import (
    Node,
    eventually,
    exchange,
    kafka_settings_for,
    kafka_table,
    metric_total,
    received_ids,
    start_node,
)
from tests.world import example

KCH, READER = "kemlu.kbri-kuching", "kemensos"
ARRIVAL = "id.trafficking.alert.group-arrival"
REFERRAL = "id.trafficking.case.referral"
SHUTDOWN_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]


# ---- helpers --------------------------------------------------------------------------------------------
def settings_for(broker: EmbeddedBroker, *, request_timeout_ms: int | None = None) -> KafkaSettings:
    """PLAINTEXT settings for ``broker`` with the group timings it needs (see ``exchange.EMBEDDED_KAFKA``)."""
    extra = {"request_timeout_ms": request_timeout_ms} if request_timeout_ms else {}
    return kafka_settings_for(broker.bootstrap_servers, **extra)


def sandbox_for(
    root: Path,
    settings: KafkaSettings,
    *,
    sinks: dict[str, list[dict[str, Any]]] | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> dict[str, SandboxParty]:
    return create_sandbox(
        root, [KCH, READER], bootstrap_servers=settings.bootstrap_servers, sinks=sinks,
        settings={"kafka": kafka_table(settings), "shutdown": {"timeout_seconds": shutdown_timeout}},
    )  # fmt: skip


def arrivals(count: int, run: str) -> list[dict[str, Any]]:
    """``count`` distinct group-arrival alerts (synthetic: the example with an alert id of its own each)."""
    base = example("alert.group-arrival", "1.0")[0][1]
    alerts = []
    for n in range(count):
        alert = copy.deepcopy(base)
        alert["alert_id"] = f"ALR-{run}-{n:06d}"
        alert["expected_count"] = 11 + n % 40
        alerts.append(alert)
    return alerts


async def publish_all(node: Node, alerts: Sequence[dict[str, Any]]) -> set[str]:
    """Publish every alert concurrently (the outbox group-commits them); the ids of the accepted events."""
    events = await asyncio.gather(*(node.gateway.publisher.publish(ARRIVAL, a) for a in alerts))
    return {event.id for event in events}


async def warm_up(publisher: Node, reader: Node, *, on_alert_topic: bool = False) -> None:
    """One event end to end: the producer is connected and the reader's consumer group is assigned.

    A case referral by default, so the alert topic the tests load stays untouched; ``on_alert_topic`` sends
    an alert instead, as a gateway that has been publishing alerts would have (the producer then holds the
    alert topic's metadata).
    """
    if on_alert_topic:
        [event_id] = await publish_all(publisher, arrivals(1, "WARM"))
    else:
        referral = example("case.referral", "1.0")[0][1]
        event_id = (await publisher.gateway.publisher.publish(REFERRAL, referral, recipients=[READER])).id
    await eventually(lambda: event_id in received_ids(reader, {event_id}), what="the warm-up event")


def assert_exactly_once(reader: Node, ids: set[str]) -> None:
    counts = Counter(received_ids(reader, ids))
    missing = ids - set(counts)
    assert not missing, f"{len(missing)} of {len(ids)} events never reached the reader"
    repeated = {i: n for i, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} events reached the reader's agency system more than once"


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structured log events of this process while the block runs (structlog's capture)."""
    with structlog.testing.capture_logs() as events:
        yield events


class GatewayProcess:
    """``gateway run --config FILE`` as a child process: the real CLI, terminated and killed for real.

    Its stdout and stderr (JSON log lines) are appended to ``log`` across restarts.
    """

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running, "already running"
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("XCHG__")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli.main", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:  # noqa: ASYNC109 - a bound on polling the child
        """The exit status, polled for at most ``timeout`` seconds."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (status := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway process still running after {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return status

    def kill(self) -> None:
        """SIGKILL and reap (no-op when not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def count(self, log_event: str) -> int:
        """How many log lines of the current run carry ``"event": log_event``."""
        with self.log.open("rb") as handle:
            handle.seek(self._log_offset)
            text = handle.read().decode("utf-8", errors="replace")
        return text.count(json.dumps({"event": log_event})[1:-1])

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def gateway_processes(tmp_path: Path) -> Iterator[Callable[[SandboxParty], GatewayProcess]]:
    """Factory of :class:`GatewayProcess` for a sandbox party; every process is killed and reaped after."""
    processes: list[GatewayProcess] = []

    def make(party: SandboxParty) -> GatewayProcess:
        process = GatewayProcess(party.config, tmp_path / f"{party.party}.log")
        processes.append(process)
        return process

    try:
        yield make
    finally:
        for process in processes:
            process.kill()


@contextlib.asynccontextmanager
async def in_process(party: SandboxParty) -> AsyncIterator[Node]:
    """A gateway in this process (MemorySink for what it receives), stopped after unless already stopped."""
    node = await start_node(party)
    try:
        yield node
    finally:
        if not node.gateway._closing.is_set():  # a test may have stopped it already
            await node.gateway.stop()


# ---- broker faults --------------------------------------------------------------------------------------
async def test_broker_frozen_while_publishing_loses_nothing_and_repeats_nothing(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    # A short request timeout, so the freeze outlasts it and the sender's send fails while records it had
    # already handed to the client (and requests the kernel buffered, see gateway.sandbox.broker) are still
    # written once the broker thaws: the sender's retry of the batch may put duplicates on the topic, which
    # the reader's inbox must drop. Whether it does varies from run to run, hence no assertion on their count.
    settings = settings_for(embedded_broker, request_timeout_ms=2_000)
    async with exchange(tmp_path, [KCH, READER], settings) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        await warm_up(publisher, reader)

        with captured_logs() as logs:
            embedded_broker.pause()
            try:
                ids = await publish_all(publisher, arrivals(1_000, "FRZ"))  # returns while frozen
                assert embedded_broker.paused
                assert len(ids) == 1_000
                assert publisher.gateway.outbox.depth > 0  # on disk, not (all) acknowledged
                await eventually(
                    lambda: any(e["event"] == "send failed; entries stay in the outbox" for e in logs),
                    what="the sender's request to the frozen broker to fail",
                )
            finally:
                embedded_broker.resume()

        await eventually(
            lambda: set(received_ids(reader, ids)) == ids, timeout=45, what="all 1,000 events at the reader"
        )
        await eventually(lambda: publisher.gateway.outbox.depth == 0, what="the outbox to drain")
        assert_exactly_once(reader, ids)
        assert metric_total(reader, "xchg_duplicates_total") >= 0  # usually > 0: maybe-written sends
        assert metric_total(reader, "xchg_rejected_total") == 0


async def test_broker_restarted_empty_delivers_what_waited_in_the_outbox(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    """Published while the broker is down, delivered after it restarts with nothing (memory storage).

    Events acknowledged before a stop are lost with the test broker's memory (a property of the test
    broker, not of the gateway), so everything is published while it is down: all of it is in the outbox,
    none acknowledged. The restarted broker knows no topic, group or committed offset; both gateways must
    reconnect and the reader's consumer rejoin its group on their own.

    The warm-up is an alert, so the publisher's producer still holds the alert topic's metadata and, after
    the restart, produces to it without asking: Tansu then stores the records but never creates the topic,
    and every offset commit for it fails with the retriable UNKNOWN_TOPIC_OR_PARTITION, which aiokafka
    retries forever. The subscriber must not wait for such a commit (it bounds it), or delivery stops
    after the first batch. No record can be skipped on the rejoin: those commits never succeed, so the
    consumer's positions restart from the earliest offset and the inbox drops what it already handled.
    """
    # A short request timeout: the outage outlasts the producer's own buffering, so the sends fail and it
    # is the gateway's outbox that must deliver the events after the restart.
    settings = settings_for(embedded_broker, request_timeout_ms=2_000)
    async with exchange(tmp_path, [KCH, READER], settings) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        await warm_up(publisher, reader, on_alert_topic=True)  # the group exists, with a committed offset

        with captured_logs() as logs:
            await embedded_broker.stop()
            try:
                ids = await publish_all(publisher, arrivals(1_000, "RST"))
                assert len(ids) == 1_000
                assert publisher.gateway.outbox.depth == 1_000  # nothing can have been acknowledged
                await eventually(
                    lambda: any(e["event"] == "send failed; entries stay in the outbox" for e in logs),
                    what="the sender to give up on the stopped broker",
                )
            finally:
                await embedded_broker.start()  # same port, empty

        await eventually(
            lambda: set(received_ids(reader, ids)) == ids, timeout=45, what="all 1,000 events at the reader"
        )
        await eventually(lambda: publisher.gateway.outbox.depth == 0, what="the outbox to drain")
        assert_exactly_once(reader, ids)
        assert metric_total(reader, "xchg_rejected_total") == 0


# ---- subscriber killed ------------------------------------------------------------------------------------
async def test_subscriber_killed_mid_stream_loses_nothing_and_repeats_only_under_the_same_key(
    tmp_path: Path,
    embedded_broker: EmbeddedBroker,
    gateway_processes: Callable[[SandboxParty], GatewayProcess],
) -> None:
    """SIGKILL the reading gateway twice while it delivers to the agency system, restart it each time.

    The inbox's guarantee: nothing lost; an event is POSTed again only if the crash fell between the
    agency system accepting it and the inbox mark (at most one per crash), and then with the same
    ``Idempotency-Key`` so the agency system drops it.
    """
    settings = settings_for(embedded_broker)
    async with AgencySimulator() as agency:
        sandbox = sandbox_for(tmp_path, settings, sinks={READER: [{"kind": "webhook", "url": agency.url}]})
        async with in_process(sandbox[KCH]) as publisher:
            ids = await publish_all(publisher, arrivals(500, "KIL"))
            await eventually(lambda: publisher.gateway.outbox.depth == 0, what="all 500 on the broker")

        def at_agency(count: int) -> Callable[[], bool]:
            return lambda: len(agency.received() & ids) >= count

        reader = gateway_processes(sandbox[READER])
        kills = 0
        for at_least in (100, 250):
            reader.start()
            await eventually(at_agency(at_least), timeout=30, what=f"{at_least} events at the agency system")
            reader.kill()  # SIGKILL: no shutdown, no final commit
            kills += 1
            at_kill = len(agency.received() & ids)
            assert at_kill < len(ids), "the reader delivered everything before the kill; nothing was tested"

        reader.start()
        await eventually(
            lambda: agency.received() >= ids, timeout=45, what="all 500 events at the agency simulator"
        )
        reader.signal(signal.SIGTERM)
        assert await reader.wait(SHUTDOWN_TIMEOUT + 5) == 0, reader.tail()

    ours = [post for post in agency.posts if post.event_id in ids]
    assert all(post.idempotency_key == f"{KCH}/{post.event_id}" for post in ours)
    assert all(post.body_event_id == post.event_id and post.source == KCH for post in ours)
    repeated = {event_id: n for event_id, n in agency.counts().items() if event_id in ids and n > 1}
    assert len(repeated) <= kills, f"{len(repeated)} events POSTed again after {kills} kills: {repeated}"
    for event_id in repeated:
        keys = agency.keys_of(event_id)
        assert keys == [keys[0]] * len(keys), "a repeat carried another Idempotency-Key"


# ---- publisher terminated ---------------------------------------------------------------------------------
def accepted(party: SandboxParty) -> int:
    """Events the party's gateway has accepted: rows committed to its outbox (read alongside it: WAL)."""
    path = party.data_dir / "outbox.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # the gateway has not created its table yet
            return 0


def drop_file(party: SandboxParty, alerts: Sequence[dict[str, Any]], name: str) -> list[str]:
    """Drop a JSON Lines file into the party's file-drop inbox (write a dotfile, then rename); its ids."""
    inbox = party.drop_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = b"".join(json.dumps({"type": ARRIVAL, "data": a}).encode("utf-8") + b"\n" for a in alerts)
    temporary = inbox / f".{name}.tmp"
    temporary.write_bytes(content)
    temporary.rename(inbox / f"{name}.jsonl")
    digest = hashlib.sha256(content).hexdigest()
    return [drop_event_id(digest, line) for line in range(1, len(alerts) + 1)]


async def test_sigterm_while_publishing_from_a_drop_file_loses_nothing(
    tmp_path: Path,
    embedded_broker: EmbeddedBroker,
    gateway_processes: Callable[[SandboxParty], GatewayProcess],
) -> None:
    """SIGTERM the publishing gateway while it works through a 3,000-line drop file; it exits 0 in time and,
    restarted, finishes the file: the reader gets every line's event exactly once."""
    settings = settings_for(embedded_broker)
    sandbox = sandbox_for(tmp_path, settings)
    async with in_process(sandbox[READER]) as reader:
        publisher = gateway_processes(sandbox[KCH])
        publisher.start()
        ids = set(drop_file(sandbox[KCH], arrivals(3000, "TRM"), "arrivals-0001"))
        await eventually(lambda: accepted(sandbox[KCH]) >= 30, what="the publisher to be mid-file")
        publisher.signal(signal.SIGTERM)
        status = await publisher.wait(SHUTDOWN_TIMEOUT + 5)
        assert status == 0, f"exit status {status}:\n{publisher.tail()}"
        # the source sees the stop between chunks (interrupted), or a chunk it just started is refused
        # with gateway.stopping (deferred): either way the file stays in the inbox
        interrupted = sum(map(publisher.count, ("file_drop.file_interrupted", "file_drop.file_deferred")))
        accepted_before = accepted(sandbox[KCH])

        publisher.start()
        # its signal handlers are installed right after this line (a SIGTERM before them would kill it)
        await eventually(lambda: publisher.count("gateway started") == 1, what="the restarted publisher")
        await eventually(
            lambda: set(received_ids(reader, ids)) == ids, timeout=45, what="all 3,000 events at the reader"
        )
        await eventually(
            (sandbox[KCH].drop_dir / "done" / "arrivals-0001.jsonl").exists, what="the file to be done"
        )
        publisher.signal(signal.SIGTERM)
        status = await publisher.wait(SHUTDOWN_TIMEOUT + 5)
        assert status == 0, f"exit status {status}:\n{publisher.tail()}"

        assert interrupted == 1, "SIGTERM did not land mid-file; nothing was tested"
        assert accepted_before < len(ids)
        assert_exactly_once(reader, ids)
        assert metric_total(reader, "xchg_rejected_total") == 0


@pytest.mark.parametrize("broker_during_stop", ["running", "frozen"])
async def test_stop_during_a_publish_burst_keeps_every_accepted_event(
    tmp_path: Path, embedded_broker: EmbeddedBroker, broker_during_stop: str
) -> None:
    """``stop()`` while four tasks publish: every ``publish`` that returned is delivered, every one called
    after stop began is refused with ``gateway.stopping``.

    With the broker running, stop's drain empties the outbox. With the broker frozen, the drain cannot
    finish: stop must still return (bounded by the shutdown timeout), leave the rest on disk, and the
    publisher restarted from the same data_dir must send it.
    """
    shutdown_timeout = 3.0
    sandbox = sandbox_for(tmp_path, settings_for(embedded_broker), shutdown_timeout=shutdown_timeout)
    accepted: list[str] = []
    refused: list[tuple[bool, str]] = []  # (began after stop, reason)
    succeeded_after_stop: list[str] = []
    stopping = asyncio.Event()

    async def burst(node: Node, alerts: Sequence[dict[str, Any]]) -> None:
        for alert in alerts:
            began_after_stop = stopping.is_set()
            try:
                event = await node.gateway.publisher.publish(ARRIVAL, alert)
            except GatewayError as exc:
                refused.append((began_after_stop, str(exc.reason)))
                return
            accepted.append(event.id)
            if began_after_stop:
                succeeded_after_stop.append(event.id)

    async with in_process(sandbox[READER]) as reader:
        async with in_process(sandbox[KCH]) as publisher:
            await warm_up(publisher, reader)
            alerts = arrivals(4 * 2_000, "STP")
            workers = [asyncio.create_task(burst(publisher, alerts[w::4])) for w in range(4)]
            await eventually(lambda: len(accepted) >= 200, what="the burst to be under way")
            try:
                if broker_during_stop == "frozen":
                    embedded_broker.pause()
                    await eventually(
                        lambda: publisher.gateway.outbox.depth >= 100, what="a backlog the broker cannot take"
                    )
                # stop() runs in this task: intake is closed before any worker runs again
                stopping.set()
                async with asyncio.timeout(shutdown_timeout + 5):
                    await publisher.gateway.stop()
                await asyncio.gather(*workers)
            finally:
                if embedded_broker.paused:
                    embedded_broker.resume()
            left = publisher.gateway.outbox.depth
            with pytest.raises(GatewayError) as late:
                await publisher.gateway.publisher.publish(ARRIVAL, alerts[0])
            assert late.value.reason is Reason.STOPPING

        assert not succeeded_after_stop
        assert refused == [(True, str(Reason.STOPPING))] * 4  # refused only after stop, each worker once
        assert len(accepted) < len(alerts), "the burst finished before stop; nothing was tested"
        if broker_during_stop == "running":
            assert left == 0, f"stop's drain left {left} events in the outbox with the broker up"
        else:
            assert left > 0, "the drain finished against a frozen broker; nothing was tested"

        ids = set(accepted)
        async with in_process(sandbox[KCH]):  # the publisher again, from the same data_dir
            await eventually(
                lambda: set(received_ids(reader, ids)) == ids,
                timeout=45, what=f"all {len(ids)} accepted events at the reader",
            )  # fmt: skip
        assert_exactly_once(reader, ids)
