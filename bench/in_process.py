"""Each half of the bus without a broker: what the gateway itself costs per event, publisher and subscriber.

Run: ``.venv/bin/python -m bench.in_process`` (full) or ``--quick`` (smoke size). Writes
``bench/results/in_process.json``.

* publisher: ``Publisher.publish`` (``build_event`` + the durable outbox's group commit, ``--concurrency``
  calls in flight) and its sender (``pending``, send, ``mark_sent``) with a producer that acknowledges at
  once; JSON logs at info level to a file, as in production;
* subscriber: ``Subscriber.run`` over the records the publisher produced, fed by a consumer that hands out
  batches of 500 (four partitions), delivering to a counting sink, with a real inbox (each outcome noted
  in its journal before the next delivery, settled into SQLite once per batch);
* a drop folder: a JSON Lines file of the same alerts through ``FileDropSource`` (read, publish, sender),
  its records published in chunks of ``PUBLISH_CHUNK`` concurrent calls and, for comparison, one at a time;
* the outbox alone: ``put`` in groups of 1, 32 and 256, then ``pending`` + ``mark_sent``.

CPU is the process's user + system time (its database threads included) per event. Modes alternate within
each repetition; medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench._common import (
    ALERT_TYPE,
    PUBLISHER,
    READER,
    Deployment,
    alert_payload,
    argument_parser,
    machine,
    median,
    print_table,
    self_cpu_seconds,
    write_results,
)
from gateway.bus.database import Database
from gateway.bus.inbox import Inbox
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.bus.receipts import ReceiptIssuer
from gateway.bus.subscriber import Route, Subscriber
from gateway.contract.envelope import Envelope
from gateway.contract.sign import build_event
from gateway.contract.verify import Accepted
from gateway.runtime.dropfolder import PUBLISH_CHUNK
from gateway.runtime.intake import IntakeBounds
from gateway.runtime.jsonlines import FileDropSource
from gateway.runtime.logs import configure_logging

_BATCH = 500
_PARTITIONS = 4


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class _AckingProducer:
    """Acknowledges every send at once and keeps the records (the subscriber's input)."""

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self._offsets = [0] * _PARTITIONS

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        partition = hash(key) % _PARTITIONS
        self.records.append(_Record(topic, partition, self._offsets[partition], key, value, headers))
        self._offsets[partition] += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes | None,
                            headers: list[tuple[str, bytes]]) -> None:  # fmt: skip
        return None


class _FeedingConsumer:
    """Hands out the records in fetched-batch shape; sets ``stop`` when they are all handed out."""

    def __init__(self, records: Sequence[_Record], stop: asyncio.Event) -> None:
        self._batches: list[dict[TopicPartition, list[_Record]]] = []
        for start in range(0, len(records), _BATCH):
            batch: dict[TopicPartition, list[_Record]] = {}
            for record in records[start : start + _BATCH]:
                batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
            self._batches.append(batch)
        self._stop = stop

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[_Record]]:  # fmt: skip
        if not self._batches:
            self._stop.set()
            return {}
        return self._batches.pop(0)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        return None

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    def pause(self, *partitions: TopicPartition) -> None:  # the counting sink never fails: nothing waits
        return None

    def resume(self, *partitions: TopicPartition) -> None:
        return None

    def seek(self, partition: TopicPartition, offset: int) -> None:
        return None


class _CountingSink:
    name = "bench-counter"

    def __init__(self) -> None:
        self.delivered = 0

    async def deliver(self, accepted: Accepted) -> None:
        self.delivered += 1

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def _publishing(
    deployment: Deployment, path: Path, party: str = PUBLISHER
) -> AsyncIterator[tuple[Publisher, _AckingProducer]]:
    """``party``'s publisher with a durable outbox at ``path`` and its sender running against an acking
    producer; on exit the sender drains the outbox and everything is closed."""
    database = Database(path, durable=True)
    await database.open()
    outbox = Outbox(database)
    await outbox.attach()
    publisher = Publisher(signer=deployment.members[party].signer, registry=deployment.registry,
                          schemas=deployment.schemas, outbox=outbox,
                          metrics=GatewayMetrics(party=party))  # fmt: skip
    producer = _AckingProducer()
    stop = asyncio.Event()
    sender = asyncio.create_task(publisher.run_sender(producer, stop))
    try:
        yield publisher, producer
    finally:
        stop.set()
        await sender
        await database.close()


async def _drained(publisher: Publisher) -> None:
    while publisher.outbox.depth:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.001)


async def publisher_side(
    deployment: Deployment, directory: Path, events: int, concurrency: int
) -> tuple[dict[str, float], list[_Record]]:
    """Publish ``events`` through the outbox and sender; CPU per event and the records sent."""
    template = alert_payload(0)
    indices = iter(range(events))
    async with _publishing(deployment, directory / "outbox.db") as (publisher, producer):

        async def worker() -> None:
            for index in indices:
                await publisher.publish(ALERT_TYPE, {**template, "alert_id": f"ALR-KCH-{index:09d}"})

        start, cpu = time.perf_counter(), self_cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await _drained(publisher)
        seconds, cpu = time.perf_counter() - start, self_cpu_seconds() - cpu
    return {"events_per_second": events / seconds, "cpu_us_per_event": cpu / events * 1e6}, producer.records


async def subscriber_side(
    deployment: Deployment, directory: Path, records: Sequence[_Record], *, receipts: bool = False
) -> dict[str, float]:
    """Verify, deduplicate, deliver and record every record; CPU per event. With ``receipts``, the reader
    also signs a delivery receipt for each (journal, then its own outbox and sender, as a gateway does)."""
    database = Database(directory / "inbox.db", durable=False)
    await database.open()
    inbox = Inbox(database)
    await inbox.attach()
    sink = _CountingSink()
    async with contextlib.AsyncExitStack() as stack:
        issuer: ReceiptIssuer | None = None
        if receipts:
            publisher, _ = await stack.enter_async_context(
                _publishing(deployment, directory / "receipts-outbox.db", READER)
            )
            issuer = ReceiptIssuer(party=READER, registry=deployment.registry, publish=publisher.publish,
                                   journal=directory / "receipts.journal",
                                   metrics=GatewayMetrics(party=READER))  # fmt: skip
            await issuer.attach()
            stack.callback(issuer.close)
        subscriber = Subscriber(party=READER, verifier=deployment.verifier(READER), inbox=inbox,
                                routes=[Route(sink)], dlq_topic="xchg.kemensos.dlq.v1",
                                metrics=GatewayMetrics(party=READER), finished=issuer)  # fmt: skip
        stop = asyncio.Event()
        start, cpu = time.perf_counter(), self_cpu_seconds()
        await subscriber.run(_FeedingConsumer(records, stop), _AckingProducer(), stop)
        if receipts:
            await _drained(publisher)
        seconds, cpu = time.perf_counter() - start, self_cpu_seconds() - cpu
    await database.close()
    if sink.delivered != len(records):
        raise SystemExit(f"subscriber delivered {sink.delivered} of {len(records)}")
    return {"events_per_second": len(records) / seconds, "cpu_us_per_event": cpu / len(records) * 1e6}


async def outbox_alone(deployment: Deployment, directory: Path, events: int, group: int) -> dict[str, float]:
    """``put`` in groups of ``group`` concurrent calls, then drain with ``pending`` + ``mark_sent``."""
    member = deployment.members[PUBLISHER]
    template = alert_payload(0)
    envelopes: list[Envelope] = [
        build_event(signer=member.signer, registry=deployment.registry, schemas=deployment.schemas,
                    event_type=ALERT_TYPE, data={**template, "alert_id": f"ALR-KCH-{i:09d}"})
        for i in range(events)
    ]  # fmt: skip
    database = Database(directory / f"outbox-{group}.db", durable=True)
    await database.open()
    outbox = Outbox(database)
    await outbox.attach()
    cpu = self_cpu_seconds()
    for first in range(0, events, group):
        await asyncio.gather(*(outbox.put("topic", e) for e in envelopes[first : first + group]))
    put = self_cpu_seconds() - cpu
    cpu = self_cpu_seconds()
    while batch := await outbox.pending(_BATCH):
        await outbox.mark_sent([entry.seq for entry in batch])
    drain = self_cpu_seconds() - cpu
    await database.close()
    return {"put_cpu_us_per_event": put / events * 1e6, "drain_cpu_us_per_event": drain / events * 1e6}


async def drop_folder(deployment: Deployment, directory: Path, events: int, chunk: int) -> dict[str, float]:
    """A JSON Lines file of ``events`` alerts through :class:`FileDropSource` into the outbox and out through
    the sender, the records published ``chunk`` at a time (1 = one ``publish`` after the other)."""
    source = FileDropSource(directory / f"drop-{chunk}", bounds=IntakeBounds(settle_seconds=0))
    source.publish_chunk = chunk
    source.ensure_directories()
    template = alert_payload(0)
    lines = (
        json.dumps({"type": ALERT_TYPE, "data": {**template, "alert_id": f"ALR-KCH-{i:09d}"}})
        for i in range(events)
    )
    (source.inbox / "alerts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with _publishing(deployment, directory / f"drop-outbox-{chunk}.db") as (publisher, _):
        start, cpu = time.perf_counter(), self_cpu_seconds()
        if await source.process_pending(publisher.publish) != 1:
            raise SystemExit("the drop file was not processed completely")
        await _drained(publisher)
        seconds, cpu = time.perf_counter() - start, self_cpu_seconds() - cpu
    return {"events_per_second": events / seconds, "cpu_us_per_event": cpu / events * 1e6}


async def main_async(args: argparse.Namespace) -> None:
    events = args.events or (200 if args.quick else 10_000)
    repetitions = args.repetitions or (1 if args.quick else 3)
    facts = machine()
    deployment = Deployment.build()
    root = Path(tempfile.mkdtemp(prefix="xchg-bench-inprocess-"))
    log = (root / "gateway.log").open("a", encoding="utf-8")
    configure_logging(json_output=True, level="info", stream=log)
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        for repetition in range(repetitions):
            directory = root / str(repetition)
            directory.mkdir()
            published, records = await publisher_side(deployment, directory, events, args.concurrency)
            samples.setdefault("publisher", []).append(published)
            inbox_dir = directory / "inbox"
            inbox_dir.mkdir()
            result = await subscriber_side(deployment, inbox_dir, records)
            samples.setdefault("subscriber", []).append(result)
            receipts_dir = directory / "inbox-receipts"
            receipts_dir.mkdir()
            result = await subscriber_side(deployment, receipts_dir, records, receipts=True)
            samples.setdefault("subscriber, signing a delivery receipt per event", []).append(result)
            for chunk in (1, PUBLISH_CHUNK):
                label = f"drop folder file, {'one record at a time' if chunk == 1 else f'chunks of {chunk}'}"
                samples.setdefault(label, []).append(await drop_folder(deployment, directory, events, chunk))
            for group in (1, 32, 256):
                count = min(events, 1000) if group == 1 else events
                samples.setdefault(f"outbox alone, groups of {group}", []).append(
                    await outbox_alone(deployment, directory, count, group)
                )
    finally:
        log.close()
        shutil.rmtree(root, ignore_errors=True)
    medians = {
        label: {key: median(s[key] for s in runs) for key in runs[0]} for label, runs in samples.items()
    }
    print(
        f"in process: {events:,} events, {repetitions} repetitions, {args.concurrency} publish calls at once"
    )
    print_table("per event (medians)", ["side", "events/s", "CPU us/event"],
                [(label, m["events_per_second"], m["cpu_us_per_event"])
                 for label, m in medians.items() if "events_per_second" in m])  # fmt: skip
    print_table("the durable outbox alone (CPU us/event, medians)", ["outbox", "put", "pending + mark_sent"],
                [(label, m["put_cpu_us_per_event"], m["drain_cpu_us_per_event"])
                 for label, m in medians.items() if "put_cpu_us_per_event" in m])  # fmt: skip
    path = write_results("in_process", {
        "benchmark": "in_process", "quick": args.quick, "machine": facts, "events": events,
        "repetitions": repetitions, "concurrency": args.concurrency, "medians": medians, "samples": samples,
    })  # fmt: skip
    print(f"\nwrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, help="events per run (default 10,000)")
    parser.add_argument("--repetitions", type=int, help="repetitions (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="publish calls in flight")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
