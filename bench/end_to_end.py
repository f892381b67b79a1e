"""End to end through a Kafka-protocol broker: a publisher gateway process -> a subscriber gateway process,
against raw aiokafka producer -> consumer processes moving the same bytes, in the same run.

Run: ``.venv/bin/python -m bench.end_to_end`` (full) or ``--quick`` (smoke size). Writes
``bench/results/end_to_end.json``.

Each measured run starts a fresh embedded broker (Tansu, memory storage) and two child processes:

* gateway: a sandbox deployment (``gateway.sandbox.deployment.create_sandbox``: keys, registry, TOML configs)
  of the publisher (KBRI Kuching) and the reader (Kemensos), each a real ``gateway.runtime.gateway.Gateway``
  in its own process, production-like: JSON logs at info level to a file, durable outbox
  (``synchronous=FULL``), inbox, metrics, operations HTTP. The publisher process calls
  ``Gateway.publisher.publish`` for ~1 KB ``alert.network`` events (no sealed fields); the reader delivers
  them to a counting sink;
* raw: an ``AIOKafkaProducer`` sends the bytes of 1,000 such signed events (value, key, CloudEvents
  headers, plus one 8-byte timestamp header), cycled, with the gateway's producer settings; an
  ``AIOKafkaConsumer`` in the gateway's consumer settings reads them, committing after each batch.

Latency is publish call (raw: ``send`` call) -> sink delivery (raw: record in hand), wall clock, both
processes on this machine. Throughput is events / (last delivery - first publish). "Full speed" offers all
events at once (the publisher keeps ``--concurrency`` publish calls in flight, so the outbox group-commits);
"paced" offers ``--rate`` events per second, open loop. CPU is user + system time of each process during the
run; RSS is each process's peak. Runs alternate raw / gateway so both see the same machine conditions.
Both sides use the gateway's producer settings (256 KiB batches); one extra pair of runs uses aiokafka's
default 16 KiB batches, the previous round's setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import multiprocessing
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from bench._common import (
    ALERT_TYPE,
    PUBLISHER,
    READER,
    Deployment,
    alert_payload,
    argument_parser,
    machine,
    median,
    percentile,
    print_table,
    process_cpu_seconds,
    process_peak_rss_mb,
    self_cpu_seconds,
    self_peak_rss_mb,
    write_results,
)
from gateway.bus.kafka import (
    EMBEDDED_CLIENT_TIMINGS,
    EMBEDDED_FETCH_MAX_WAIT_MS,
    KAFKA_FETCH_MAX_WAIT_MS,
    KafkaSettings,
)
from gateway.contract.policy import topic_for
from gateway.contract.sign import build_event
from gateway.sandbox.broker import EmbeddedBroker

#: The embedded broker's client timings (gateway.bus.kafka.EMBEDDED_CLIENT_TIMINGS) and a request timeout.
EMBEDDED_KAFKA: Final = {**EMBEDDED_CLIENT_TIMINGS, "request_timeout_ms": 10000}
TOPIC: Final = topic_for(PUBLISHER, "alert", 1)
_AIOKAFKA_DEFAULT_BATCH: Final = 16_384
WARMUP: Final = 200
_SENT_HEADER: Final = "bench-sent"
_CHILD_TIMEOUT: Final = 600.0


@dataclass
class Plan:
    """What one run does (sent to the child processes)."""

    kind: str  # "gateway" or "raw"
    events: int
    rate: float | None  # events/s offered; None = full speed
    concurrency: int
    bootstrap: str
    directory: str
    fetch_wait_ms: int | None
    max_batch_bytes: int | None = None  # None: the gateway's setting
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    raw_group: str = "bench.raw"  # the raw consumer's group
    kafka: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per party, its ``[kafka]`` table on an Apache Kafka cluster (bench/kafka_cluster.py); empty: the
    embedded broker at ``bootstrap`` with its client timings."""


@dataclass
class Target:
    """An already running cluster to measure on instead of a fresh embedded broker per run."""

    bootstrap: str
    kafka: dict[str, dict[str, Any]]  # per party, its [kafka] table (own SCRAM user, TLS)
    pids: list[int]  # the broker processes, whose CPU is counted as "broker"
    reset: Any  # async () -> None: empty the exchange topics before a run
    raw_group: str  # the consumer group the reader's user may use


@dataclass
class Outcome:
    """Figures of one run."""

    kind: str
    events: int
    rate: float | None
    delivered: int
    duplicates: int
    seconds: float
    events_per_second: float
    latency_ms: dict[str, float]
    cpu_seconds: dict[str, float]
    cpu_us_per_event: dict[str, float]
    peak_rss_mb: dict[str, float]


# ---- children ----------------------------------------------------------------------------------------------


def _settings(plan: Plan, party: str) -> KafkaSettings:
    if plan.kafka:
        settings = KafkaSettings.from_mapping(plan.kafka[party])
        if plan.fetch_wait_ms is not None:
            settings = dataclasses.replace(settings, fetch_max_wait_ms=plan.fetch_wait_ms)
        if plan.max_batch_bytes is not None:
            settings = dataclasses.replace(settings, max_batch_bytes=plan.max_batch_bytes)
        return settings
    settings = KafkaSettings(
        bootstrap_servers=(plan.bootstrap,),
        enable_idempotence=False,
        session_timeout_ms=EMBEDDED_KAFKA["session_timeout_ms"],
        heartbeat_interval_ms=EMBEDDED_KAFKA["heartbeat_interval_ms"],
        request_timeout_ms=EMBEDDED_KAFKA["request_timeout_ms"],
        fetch_max_wait_ms=plan.fetch_wait_ms,
    )
    if plan.max_batch_bytes is not None:
        settings = dataclasses.replace(settings, max_batch_bytes=plan.max_batch_bytes)
    return settings


def _payload(template: dict[str, Any], index: int) -> dict[str, Any]:
    return {**template, "alert_id": f"ALR-KCH-{index:09d}"}


async def _recv(conn: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


class CountingSink:
    """Records the wall-clock time of each delivery by event id (the reader's agency system)."""

    name = "bench-counter"

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.calls = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def deliver(self, accepted: Any) -> None:
        self.times[accepted.event.id] = time.time()
        self.calls += 1
        if self.calls >= self.target:
            self.reached.set()

    async def close(self) -> None:
        return None

    def expect(self, count: int) -> None:
        self.target = count
        if self.calls >= count:
            self.reached.set()
        else:
            self.reached.clear()


async def _gateway_reader(conn: Connection, plan: Plan) -> None:
    from gateway.bus.subscriber import Route  # noqa: PLC0415
    from gateway.runtime.config import GatewayConfig  # noqa: PLC0415 - child process only
    from gateway.runtime.gateway import Gateway  # noqa: PLC0415
    from gateway.runtime.logs import configure_logging  # noqa: PLC0415

    directory = Path(plan.directory)
    with (directory / "reader.log").open("a", encoding="utf-8") as log:
        configure_logging(json_output=True, level="info", stream=log)
        sink = CountingSink()
        config = GatewayConfig.load(directory / READER / "gateway.toml")
        gateway = Gateway(config, kafka=_settings(plan, READER), routes=[Route(sink)])
        await gateway.start()
        sink.expect(WARMUP)
        conn.send(("ready", None))
        await asyncio.wait_for(sink.reached.wait(), _CHILD_TIMEOUT)
        sink.times.clear()
        calls, cpu = sink.calls, self_cpu_seconds()
        sink.expect(calls + plan.events)
        conn.send(("warm", None))
        await asyncio.wait_for(sink.reached.wait(), _CHILD_TIMEOUT)
        cpu = self_cpu_seconds() - cpu
        await gateway.stop()
        conn.send(("done", {"times": sink.times, "calls": sink.calls - calls, "cpu": cpu,
                            "rss": self_peak_rss_mb()}))  # fmt: skip


async def _gateway_publisher(conn: Connection, plan: Plan) -> None:
    from gateway.runtime.config import GatewayConfig  # noqa: PLC0415 - child process only
    from gateway.runtime.gateway import Gateway  # noqa: PLC0415
    from gateway.runtime.logs import configure_logging  # noqa: PLC0415

    directory = Path(plan.directory)
    template = alert_payload(0)
    with (directory / "publisher.log").open("a", encoding="utf-8") as log:
        configure_logging(json_output=True, level="info", stream=log)
        config = GatewayConfig.load(directory / PUBLISHER / "gateway.toml")
        gateway = Gateway(config, kafka=_settings(plan, PUBLISHER))
        await gateway.start()
        publish = gateway.publisher.publish
        for index in range(WARMUP):
            await publish(ALERT_TYPE, _payload(template, -1 - index))
        conn.send(("ready", None))
        await _recv(conn)  # go
        cpu = self_cpu_seconds()
        started: dict[str, float] = {}

        async def one(index: int) -> None:
            event_id = f"bench-{index:09d}"
            started[event_id] = time.time()
            await publish(ALERT_TYPE, _payload(template, index), event_id=event_id)

        await _offer(one, plan)
        await _drained(gateway)
        cpu = self_cpu_seconds() - cpu
        conn.send(("sent", {"started": started, "cpu": cpu, "rss": self_peak_rss_mb()}))
        await _recv(conn)  # the reader has them all
        await gateway.stop()
        conn.send(("done", None))


async def _drained(gateway: Any) -> None:
    """Until every committed event is on the broker (the outbox has no event to wait on for that)."""
    while gateway.outbox.depth:  # noqa: ASYNC110 - polling a counter, not an event
        await asyncio.sleep(0.01)


async def _offer(one: Any, plan: Plan) -> None:
    """Call ``one(index)`` for every event: ``concurrency`` at a time, or paced at ``rate`` (open loop)."""
    if plan.rate is None:
        indices = iter(range(plan.events))

        async def worker() -> None:
            for index in indices:
                await one(index)

        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
        return
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    for index in range(plan.events):
        delay = start + index / plan.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def _raw_consumer(conn: Connection, plan: Plan) -> None:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - child process only

    consumer = AIOKafkaConsumer(TOPIC, **_settings(plan, READER).consumer_kwargs(plan.raw_group))
    await consumer.start()
    conn.send(("ready", None))
    latencies: list[float] = []
    total, cpu, last = 0, 0.0, 0.0
    try:
        while total < WARMUP + plan.events:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            now = time.time()
            for records in batches.values():
                for record in records:
                    total += 1
                    if total == WARMUP:
                        cpu = self_cpu_seconds()
                        conn.send(("warm", None))
                    elif total > WARMUP:
                        sent = next(v for k, v in record.headers if k == _SENT_HEADER)
                        latencies.append(now - struct.unpack("<d", sent)[0])
                        last = now
            await consumer.commit()
        cpu = self_cpu_seconds() - cpu
    finally:
        await consumer.stop()
    conn.send(("done", {"latencies": latencies, "last": last, "calls": total - WARMUP, "cpu": cpu,
                        "rss": self_peak_rss_mb()}))  # fmt: skip


async def _raw_producer(conn: Connection, plan: Plan) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - child process only

    producer = AIOKafkaProducer(**_settings(plan, PUBLISHER).producer_kwargs())
    await producer.start()
    records = plan.records
    pending: list[asyncio.Future[Any]] = []

    async def send(index: int) -> None:
        value, key, headers = records[index % len(records)]
        stamp = (_SENT_HEADER, struct.pack("<d", time.time()))
        pending.append(await producer.send(TOPIC, value=value, key=key, headers=[*headers, stamp]))
        if len(pending) >= 500:  # like the gateway's sender: a batch in flight, then its acks
            batch = pending[:]
            pending.clear()
            await asyncio.gather(*batch)

    try:
        for index in range(WARMUP):
            await send(index)
        await asyncio.gather(*pending)
        pending.clear()
        conn.send(("ready", None))
        await _recv(conn)  # go
        cpu = self_cpu_seconds()
        first = time.time()
        await _offer(send, Plan(**{**asdict(plan), "concurrency": 1, "records": []}))
        await asyncio.gather(*pending)
        cpu = self_cpu_seconds() - cpu
        conn.send(("sent", {"first": first, "cpu": cpu, "rss": self_peak_rss_mb()}))
        await _recv(conn)
    finally:
        await producer.stop()
    conn.send(("done", None))


def _child(role: str, conn: Connection, plan: Plan) -> None:
    runner = {"gateway-reader": _gateway_reader, "gateway-publisher": _gateway_publisher,
              "raw-consumer": _raw_consumer, "raw-producer": _raw_producer}[role]  # fmt: skip
    asyncio.run(runner(conn, plan))


# ---- orchestration -----------------------------------------------------------------------------------------


def _sandbox(directory: Path, bootstrap: str, tables: dict[str, dict[str, Any]]) -> None:
    from gateway.sandbox.deployment import create_sandbox  # noqa: PLC0415

    kafka = {"bootstrap_servers": [bootstrap], "enable_idempotence": False, **EMBEDDED_KAFKA}
    create_sandbox(
        directory, [PUBLISHER, READER], bootstrap_servers=bootstrap.split(","),
        settings={"kafka": kafka, "shutdown": {"timeout_seconds": 30.0}, "sources": []},
        per_party={party: {"kafka": table} for party, table in tables.items()},
    )  # fmt: skip


def _signed_records(count: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The Kafka records of ``count`` signed ~1 KB alerts (what the raw run sends)."""
    deployment = Deployment.build()
    signer = deployment.members[PUBLISHER].signer
    template = alert_payload(0)
    records = []
    for index in range(count):
        event = build_event(signer=signer, registry=deployment.registry, schemas=deployment.schemas,
                            event_type=ALERT_TYPE, data=_payload(template, index))  # fmt: skip
        record = event.to_kafka()
        records.append((record.value, record.key, list(record.headers)))
    return records


async def _expect(conn: Connection, what: str) -> Any:
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, _CHILD_TIMEOUT)
    if not ready:
        raise TimeoutError(f"no {what!r} from a child within {_CHILD_TIMEOUT:.0f}s")
    message, payload = conn.recv()
    if message != what:
        raise RuntimeError(f"expected {what!r} from a child, got {message!r}")
    return payload


async def run_once(plan_kind: str, events: int, rate: float | None, *, concurrency: int,
                   records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
                   fetch_wait_ms: int | None, profile: Path | None = None,
                   max_batch_bytes: int | None = None, target: Target | None = None) -> Outcome:  # fmt: skip
    """One measured run with fresh processes (sampled by py-spy into ``profile``) on a fresh embedded
    broker, or on ``target``'s cluster with its exchange topics emptied first."""
    context = multiprocessing.get_context("spawn")
    directory = Path(tempfile.mkdtemp(prefix=f"xchg-bench-{plan_kind}-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if target is None:
                broker = await stack.enter_async_context(EmbeddedBroker(log_path=directory / "broker.log"))
                assert broker.pid is not None  # noqa: S101 - a started broker has a process
                bootstrap, pids, tables, group = broker.bootstrap_servers, [broker.pid], {}, "bench.raw"
            else:
                await target.reset()
                bootstrap, pids, tables, group = target.bootstrap, target.pids, target.kafka, target.raw_group
            plan = Plan(plan_kind, events, rate, concurrency, bootstrap, str(directory),
                        fetch_wait_ms, max_batch_bytes, raw_group=group, kafka=tables)  # fmt: skip
            if plan_kind == "gateway":
                _sandbox(directory, bootstrap, tables)
                roles = ("gateway-reader", "gateway-publisher")
            else:
                plan.records = records
                roles = ("raw-consumer", "raw-producer")
            links = [context.Pipe() for _ in roles]
            children = [context.Process(target=_child, args=(role, link[1], plan), daemon=True)
                        for role, link in zip(roles, links, strict=True)]  # fmt: skip
            reader_conn, sender_conn = links[0][0], links[1][0]
            try:
                children[0].start()
                await _expect(reader_conn, "ready")
                children[1].start()
                await _expect(sender_conn, "ready")
                await _expect(reader_conn, "warm")
                broker_cpu = sum(process_cpu_seconds(pid) for pid in pids)
                spies = _profilers(profile, plan_kind, roles, children)
                sender_conn.send(("go", None))
                sent = await _expect(sender_conn, "sent")
                received = await _expect(reader_conn, "done")
                broker_cpu = sum(process_cpu_seconds(pid) for pid in pids) - broker_cpu
                broker_rss = sum(process_peak_rss_mb(pid) for pid in pids)
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                sender_conn.send(("stop", None))
                await _expect(sender_conn, "done")
            finally:
                for child in children:
                    child.join(timeout=30)
                    if child.is_alive():
                        child.kill()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return _outcome(plan, sent, received, broker_cpu, broker_rss)


def _profilers(profile: Path | None, kind: str, roles: Sequence[str],
               children: Sequence[Any]) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    """``py-spy record`` (raw collapsed stacks, 250 Hz) of each child, when ``--profile`` names a folder."""
    if profile is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profile.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--pid", str(child.pid), "--rate", "250", "--format", "raw",
                              "--output", str(profile / f"{kind}-{role}.txt"), "--nonblocking"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, child in zip(roles, children, strict=True)]  # fmt: skip


def _outcome(plan: Plan, sent: dict[str, Any], received: dict[str, Any], broker_cpu: float,
             broker_rss: float) -> Outcome:  # fmt: skip
    if plan.kind == "gateway":
        started: dict[str, float] = sent["started"]
        times: dict[str, float] = received["times"]
        latencies = [times[i] - started[i] for i in started if i in times]
        first, last = min(started.values()), max(times.values())
        delivered = len(times)
    else:
        latencies = received["latencies"]
        first, last = sent["first"], received["last"]
        delivered = received["calls"]
    seconds = last - first
    names = ("publisher", "subscriber") if plan.kind == "gateway" else ("producer", "consumer")
    cpu = {names[0]: sent["cpu"], names[1]: received["cpu"], "broker": broker_cpu}
    return Outcome(
        kind=plan.kind, events=plan.events, rate=plan.rate, delivered=delivered,
        duplicates=received["calls"] - delivered, seconds=seconds, events_per_second=delivered / seconds,
        latency_ms={name: percentile(latencies, q) * 1000 for name, q in (("p50", 0.5), ("p95", 0.95),
                                                                            ("p99", 0.99), ("max", 1.0))},
        cpu_seconds=cpu,
        cpu_us_per_event={name: value / plan.events * 1e6 for name, value in cpu.items()},
        peak_rss_mb={names[0]: sent["rss"], names[1]: received["rss"], "broker": broker_rss},
    )  # fmt: skip


def _row(label: str, outcome: Outcome) -> list[object]:
    cpu = list(outcome.cpu_us_per_event.values())
    rss = list(outcome.peak_rss_mb.values())
    return [label, outcome.delivered, outcome.events_per_second, outcome.latency_ms["p50"],
            outcome.latency_ms["p95"], outcome.latency_ms["p99"], cpu[0], cpu[1], cpu[2], rss[0], rss[1],
            rss[2]]  # fmt: skip


_HEADERS: Final = ["run", "events", "events/s", "p50 ms", "p95 ms", "p99 ms", "CPU us/ev send side",
                   "CPU us/ev receive side", "CPU us/ev broker", "RSS MiB send side",
                   "RSS MiB receive side", "RSS MiB broker"]  # fmt: skip


async def main_async(args: argparse.Namespace) -> None:
    events = args.events or (300 if args.quick else 100_000)
    paced = args.paced_events or (300 if args.quick else 15_000)
    repetitions = args.repetitions or (1 if args.quick else 3)
    small = args.small_events if args.small_events is not None else (0 if args.quick else 10_000)
    facts = machine()
    records = _signed_records(50 if args.quick else 1000)
    runs: dict[str, list[Outcome]] = {}

    async def measure(label: str, kind: str, count: int, rate: float | None, *,
                      fetch_wait_ms: int | None = args.fetch_max_wait_ms,
                      max_batch_bytes: int | None = None) -> None:  # fmt: skip
        profile = args.profile if (args.profile and rate is None and count == events) else None
        outcome = await run_once(kind, count, rate, concurrency=args.concurrency, records=records,
                                 fetch_wait_ms=fetch_wait_ms, profile=profile,
                                 max_batch_bytes=max_batch_bytes)  # fmt: skip
        runs.setdefault(label, []).append(outcome)
        print(f"  {label}: {outcome.events_per_second:,.0f} events/s, "
              f"p99 {outcome.latency_ms['p99']:.1f} ms", flush=True)  # fmt: skip

    for repetition in range(repetitions):
        print(f"repetition {repetition + 1}/{repetitions}", flush=True)
        await measure("raw aiokafka, full speed", "raw", events, None)
        await measure("gateway, full speed", "gateway", events, None)
    wait = f"fetch_max_wait_ms {args.fetch_max_wait_ms}"
    await measure(f"raw aiokafka, {args.rate:,.0f}/s offered, {wait}", "raw", paced, args.rate)
    await measure(f"gateway, {args.rate:,.0f}/s offered, {wait}", "gateway", paced, args.rate)
    if not args.quick:
        await measure(f"gateway, {args.rate:,.0f}/s offered, aiokafka default wait", "gateway", paced,
                      args.rate, fetch_wait_ms=KAFKA_FETCH_MAX_WAIT_MS)  # fmt: skip
    if small:
        await measure(f"gateway, full speed, {small:,} events", "gateway", small, None)
    if not args.quick:  # the previous round's producer batches (aiokafka's default), for comparison
        for kind in ("raw", "gateway"):
            await measure(f"{'raw aiokafka' if kind == 'raw' else kind}, full speed, 16 KiB batches", kind,
                          events, None, max_batch_bytes=_AIOKAFKA_DEFAULT_BATCH)  # fmt: skip

    title = f"end to end, ~1 KB alerts (median run of {repetitions} at full speed)"
    report("end_to_end", title, runs, args=args, facts=facts, events=events, paced=paced,
           repetitions=repetitions)  # fmt: skip


def report(
    name: str,
    title: str,
    runs: Mapping[str, list[Outcome]],
    *,
    args: argparse.Namespace,
    facts: Mapping[str, Any],
    events: int,
    paced: int,
    repetitions: int,
) -> None:
    """Print the median run of each label and the gateway/raw throughput ratio; write ``bench/results``."""
    chosen = {label: sorted(outcomes, key=lambda o: o.events_per_second)[len(outcomes) // 2]
              for label, outcomes in runs.items()}  # the run with the median throughput  # fmt: skip
    print_table(title, _HEADERS, [_row(label, outcome) for label, outcome in chosen.items()])
    raw = median(o.events_per_second for o in runs["raw aiokafka, full speed"])
    gateway = median(o.events_per_second for o in runs["gateway, full speed"])
    print(f"\ngateway / raw aiokafka throughput (medians): {gateway / raw:.2f}x")
    path = write_results(name, {
        "benchmark": name, "quick": args.quick, "machine": facts, "events": events, "paced_events": paced,
        "rate": args.rate, "concurrency": args.concurrency, "repetitions": repetitions,
        "median_throughput": {"raw": raw, "gateway": gateway, "ratio": gateway / raw},
        "median_runs": {label: asdict(o) for label, o in chosen.items()},
        "all_runs": {label: [asdict(o) for o in outcomes] for label, outcomes in runs.items()},
    })  # fmt: skip
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, help="events per full-speed run (default 100,000)")
    parser.add_argument("--paced-events", type=int, help="events of the paced run (default 15,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s offered in the paced run")
    parser.add_argument("--repetitions", type=int, help="full-speed repetitions per side (default 3)")
    parser.add_argument("--small-events", type=int, help="extra gateway run of this size (default 10,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="publish calls in flight at full speed")
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=EMBEDDED_FETCH_MAX_WAIT_MS,
        help="consumers' fetch_max_wait_ms (default: the embedded broker's; Kafka's default is 500)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the full-speed runs' processes into this folder")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
