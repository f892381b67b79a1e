"""End to end on the 3-node Apache Kafka cluster: the gateway pair beside raw aiokafka, on the same cluster.

Run: ``.venv/bin/python -m bench.kafka_cluster`` (full) or ``--quick`` (smoke size). Writes
``bench/results/kafka_cluster.json``. Needs Java and the Kafka jars ``tests/kafka/fetch.sh`` fetches
(``./xchg test`` does both).

The cluster is the test suite's (``tests/kafka/cluster.py``): three combined broker+controller nodes on
loopback, SASL_SSL with SCRAM-SHA-512, StandardAuthorizer with the ACLs ``gateway deploy render`` derived from
the sample registry (applied by the rendered ``kafka-init.sh``), replication 3, ``min.insync.replicas=2``.
It is started once; every run empties the exchange topics first. The runs are those of
``bench/end_to_end.py`` (the same child processes and figures): KBRI Kuching's gateway publishes ~1 KB
``alert.network`` events that Kemensos's gateway delivers to a counting sink, against a raw
``AIOKafkaProducer`` -> ``AIOKafkaConsumer`` pair moving the same signed bytes. Every client connects as its
party's own SCRAM user over TLS, with an idempotent producer and ``acks=all``, as in production. Consumers
use Kafka's default ``fetch.max.wait.ms`` (500 ms): a real broker answers a fetch as soon as records arrive.
"Broker" CPU and RSS are the three nodes' sums (not counted with ``--attach DIR``, which measures on a cluster
another process runs, e.g. the test session's: the smoke test in tests/integration/test_kafka_cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench._common import PUBLISHER, READER, argument_parser, machine
from bench.end_to_end import Outcome, Target, _signed_records, report, run_once
from gateway.bus.kafka import KAFKA_FETCH_MAX_WAIT_MS, KafkaSettings
from gateway.deploy.acls import group_for
from gateway.sandbox.deployment import SAMPLE_REGISTRY
from tests.kafka.cluster import ClusterDeployment, KafkaCluster, Rendering, apply_init_script, render

__all__ = ["main"]

NAME: Final = "kafka_cluster"


def _table(settings: KafkaSettings) -> dict[str, Any]:
    """``settings`` as a ``[kafka]`` table (what an operator writes; the password stays in its file)."""
    assert settings.sasl is not None  # noqa: S101 - the cluster's settings always have SCRAM
    assert settings.tls is not None  # noqa: S101 - and TLS
    return {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "security_protocol": settings.security_protocol,
        "enable_idempotence": True,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "tls": {"ca_file": str(settings.tls.ca_file)},
        "sasl": {
            "mechanism": settings.sasl.mechanism,
            "username": settings.sasl.username,
            "password_file": str(settings.sasl.password_file),
        },
    }


async def main_async(args: argparse.Namespace) -> None:
    events = args.events or (300 if args.quick else 50_000)
    paced = args.paced_events or (300 if args.quick else 10_000)
    repetitions = args.repetitions or (1 if args.quick else 3)
    facts = machine()
    records = _signed_records(50 if args.quick else 1000)
    root = args.attach or Path(tempfile.mkdtemp(prefix="xchg-bench-kafka-"))
    cluster = KafkaCluster.attach(root) if args.attach else KafkaCluster(root)
    runs: dict[str, list[Outcome]] = {}
    try:
        if args.attach:
            rendering = Rendering.load(root / "rendered")
        else:
            cluster.start()  # in this (main) thread: the nodes die with the thread that started them
            rendering = await asyncio.to_thread(render, SAMPLE_REGISTRY, root / "rendered")
            await asyncio.to_thread(apply_init_script, cluster, rendering)
        deployment = ClusterDeployment(cluster, rendering)
        pids = [n.process.pid for n in cluster.nodes.values() if n.process is not None]
        target = Target(
            bootstrap=",".join(cluster.bootstrap_servers),
            kafka={party: _table(deployment.party(party)) for party in (PUBLISHER, READER)},
            pids=pids,
            reset=deployment.truncate,
            raw_group=group_for(READER),
        )

        async def measure(label: str, kind: str, count: int, rate: float | None) -> None:
            outcome = await run_once(kind, count, rate, concurrency=args.concurrency, records=records,
                                     fetch_wait_ms=KAFKA_FETCH_MAX_WAIT_MS, target=target)  # fmt: skip
            runs.setdefault(label, []).append(outcome)
            print(f"  {label}: {outcome.events_per_second:,.0f} events/s, "
                  f"p99 {outcome.latency_ms['p99']:.1f} ms", flush=True)  # fmt: skip

        for repetition in range(repetitions):
            print(f"repetition {repetition + 1}/{repetitions}", flush=True)
            await measure("raw aiokafka, full speed", "raw", events, None)
            await measure("gateway, full speed", "gateway", events, None)
        await measure(f"raw aiokafka, {args.rate:,.0f}/s offered", "raw", paced, args.rate)
        await measure(f"gateway, {args.rate:,.0f}/s offered", "gateway", paced, args.rate)
    finally:
        if not args.attach:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)

    title = f"end to end on 3-node Apache Kafka (SASL_SSL, RF 3), ~1 KB alerts (median of {repetitions})"
    report(NAME, title, runs, args=args, facts=facts, events=events, paced=paced, repetitions=repetitions)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, help="events per full-speed run (default 50,000)")
    parser.add_argument("--paced-events", type=int, help="events of the paced run (default 10,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s offered in the paced run")
    parser.add_argument("--repetitions", type=int, help="full-speed repetitions per side (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="publish calls in flight at full speed")
    parser.add_argument(
        "--attach",
        type=Path,
        help="measure on the cluster `python -m tests.kafka.cluster --dir DIR` runs (broker CPU not counted)",
    )
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
