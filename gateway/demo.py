"""``gateway demo``: the exchange between Kemensos, KBRI Kuching and IOM on an embedded broker.

A synthetic scenario built on the source article (IOM's hygiene kits for Pos Pemulangan Pontianak, 2020):
one process starts the embedded Kafka-protocol broker, generates a sandbox deployment (fresh keys, registry,
one configuration per party), starts one gateway per party through the same code path as ``gateway run``,
plays the scenario's steps, prints a timeline of who received what, a per-party summary, and keeps the
operations endpoints (``/healthz``, ``/readyz``, ``/metrics``) up until interrupted (``--once`` exits).
All data is synthetic; names in it are invented.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.broker import EmbeddedBroker
from gateway.config import GatewayConfig
from gateway.kafka import KafkaSettings
from gateway.runtime import Gateway
from gateway.sandbox import create_sandbox
from gateway.schemas import default_schema_root
from gateway.sinks import MemorySink
from gateway.subscriber import Route
from gateway.verify import Accepted

__all__ = ["SCENARIO", "Step", "load_scenario", "run_demo"]

SCENARIO = Path(__file__).resolve().parent / "scenario" / "pontianak-2020.toml"
#: Group timings the embedded broker needs (see gateway.broker's notes on Tansu).
_EMBEDDED_KAFKA: dict[str, Any] = {
    "session_timeout_ms": 1000,
    "heartbeat_interval_ms": 100,
    "enable_idempotence": False,
}


@dataclass(frozen=True, slots=True)
class Step:
    party: str
    type: str
    example: str
    caption: str
    recipients: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        name, _, file = self.example.partition("/")
        path = default_schema_root() / name / "examples" / "1.0" / f"{file}.json"
        loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return loaded


def load_scenario(path: Path = SCENARIO) -> tuple[list[str], list[Step]]:
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    steps = [
        Step(s["party"], s["type"], s["example"], s["caption"], tuple(s.get("recipients", ())))
        for s in document["steps"]
    ]
    return list(document["parties"]), steps


class _TimelineSink(MemorySink):
    """A MemorySink that also prints each first delivery as a timeline line."""

    def __init__(self, party: str, started: float, out: TextIO) -> None:
        super().__init__(name=f"{party}-case-system")
        self.party = party
        self._started = started
        self._out = out

    async def deliver(self, accepted: Accepted) -> None:
        first = (accepted.event.source, accepted.event.id) not in self.log
        await super().deliver(accepted)
        if first:
            event = accepted.event
            sealed = "opened sealed fields" if accepted.unsealed else "clear fields only"
            elapsed = time.monotonic() - self._started
            kind = event.type.removeprefix("id.trafficking.")
            line = f"  +{elapsed:6.2f}s  {self.party:<20} <- {event.source:<20} {kind:<26} {event.subject}"
            print(f"{line}  ({sealed})", file=self._out, flush=True)


async def run_demo(
    *, directory: Path | None = None, once: bool = False, out: TextIO = sys.stdout, patience: float = 60.0
) -> dict[str, dict[str, int]]:
    """Run the scenario; return the per-party summary (published, received, rejected)."""
    parties, steps = load_scenario()
    with contextlib.ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xchg-demo-")))
        async with EmbeddedBroker() as broker:
            kafka = KafkaSettings(bootstrap_servers=(broker.bootstrap_servers,), **_EMBEDDED_KAFKA)
            sandbox = create_sandbox(
                root, parties, bootstrap_servers=kafka.bootstrap_servers,
                settings={"kafka": dict(_EMBEDDED_KAFKA), "sources": [], "shutdown": {"timeout_seconds": 10}},
            )  # fmt: skip
            started = time.monotonic()
            print(f"Embedded broker on {broker.bootstrap_servers}; deployment in {root}", file=out)
            gateways: dict[str, Gateway] = {}
            sinks: dict[str, _TimelineSink] = {}
            try:
                for party in parties:
                    sinks[party] = _TimelineSink(party, started, out)
                    config = GatewayConfig.load(sandbox[party].config)
                    gateways[party] = Gateway(config, kafka=kafka, routes=[Route(sinks[party])])
                    await gateways[party].start()
                    print(
                        f"  gateway {party:<20} ops http://127.0.0.1:{gateways[party].ops_port}/readyz",
                        file=out,
                    )
                print("\nTimeline (publisher -> receivers):", file=out)
                expected = await _play(steps, gateways, out, started)
                await _wait_delivered(expected, sinks, patience)
                summary = _summary(parties, gateways)
                _print_summary(summary, out)
                if not once:
                    print("\nOperations endpoints stay up; press Ctrl-C to stop.", file=out, flush=True)
                    await _until_interrupted()
            finally:
                for gateway in gateways.values():
                    await gateway.stop()
    return summary


async def _play(
    steps: Sequence[Step], gateways: dict[str, Gateway], out: TextIO, started: float
) -> dict[str, set[str]]:
    """Publish each step; return, per party, the event ids it should receive (per the registry)."""
    expected: dict[str, set[str]] = {party: set() for party in gateways}
    for step in steps:
        gateway = gateways[step.party]
        event = await gateway.publisher.publish(step.type, step.payload(), recipients=step.recipients)
        print(
            f"  +{time.monotonic() - started:6.2f}s  {step.party:<20} -> {step.caption}", file=out, flush=True
        )
        readers = gateway.registry.readers(gateway.publisher.topic_of(event))
        for party in gateways:
            if party != step.party and party in readers:
                expected[party].add(event.id)
    return expected


async def _wait_delivered(
    expected: dict[str, set[str]], sinks: dict[str, _TimelineSink], patience: float
) -> None:
    deadline = time.monotonic() + patience
    while any(not ids <= {a.event.id for a in sinks[p].events} for p, ids in expected.items()):
        if time.monotonic() > deadline:
            missing = {p: len(ids - {a.event.id for a in sinks[p].events}) for p, ids in expected.items()}
            raise TimeoutError(f"events not delivered within {patience}s: {missing}")
        await asyncio.sleep(0.05)


def _summary(parties: Sequence[str], gateways: dict[str, Gateway]) -> dict[str, dict[str, int]]:
    def total(gateway: Gateway, name: str) -> int:
        return int(
            sum(s.value for f in gateway.metrics.registry.collect() for s in f.samples if s.name == name)
        )

    return {
        party: {
            "published": total(gateways[party], "xchg_published_total"),
            "received": total(gateways[party], "xchg_delivered_total"),
            "rejected": total(gateways[party], "xchg_rejected_total"),
        }
        for party in parties
    }


def _print_summary(summary: dict[str, dict[str, int]], out: TextIO) -> None:
    print("\nSummary", file=out)
    print(f"  {'party':<22}{'published':>10}{'received':>10}{'rejected':>10}", file=out)
    for party, row in summary.items():
        print(f"  {party:<22}{row['published']:>10}{row['received']:>10}{row['rejected']:>10}", file=out)
    sys.stdout.flush()


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
