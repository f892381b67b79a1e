"""One party's gateway at run time: publisher + outbox sender, subscriber, sources, sinks, operations HTTP.

Lifecycle (one order, always): ``start`` loads the registry, schemas and keys (any problem stops start-up with
a clear error), opens the outbox and inbox, starts the operations server, then connects to Kafka in the
background — a broker that is down at start-up only delays sending; ``publish`` already works. ``stop``:

1. stop intake: sources stop reading, ``publish`` refuses new events (``gateway.stopping``);
2. stop the consume loop: the batch in hand is finished, its offsets committed;
3. drain the outbox to the broker, bounded by the shutdown timeout (what is left stays on disk);
4. flush and close the producer, close the consumer, sinks, databases and the operations server.

Every task is awaited after it is cancelled; nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.bus.admin import ensure_topics, refused_topics
from gateway.bus.database import Database
from gateway.bus.delivery import Sink
from gateway.bus.inbox import Inbox
from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.bus.subscriber import CommitOnRevoke, Route, Subscriber
from gateway.contract.keys import SealingKey, SigningKey
from gateway.contract.policy import dlq_topic, own_topics, readable_topics
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.sign import EventSigner
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig
from gateway.runtime.ops import (
    ReadinessCheck,
    build_ops_app,
    kafka_check,
    registry_check,
    schemas_check,
    signing_key_check,
    start_ops_server,
    stop_ops_server,
    threshold_check,
)
from gateway.runtime.plugins import PluginContext, build_sink, build_source
from gateway.runtime.signals import stop_on_signals
from gateway.runtime.sources import Source
from gateway.settings import read_passphrase

__all__ = ["Gateway"]

_log = structlog.get_logger(__name__)


class Gateway:
    """A running gateway for ``config.party``. ``kafka`` must point at a running broker (not embedded)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        kafka: KafkaSettings | None = None,
        sources: Sequence[Source] = (),
        routes: Sequence[Route] = (),
        consumer_group: str | None = None,
    ) -> None:
        self.config = config
        self.kafka = kafka or config.kafka
        if self.kafka.embedded:
            raise GatewayError(Reason.CONFIG_INVALID, "kafka: start the embedded broker first (for_embedded)")
        self.party = config.party
        self.group_id = consumer_group or f"xchg.{config.party}"
        self._extra_sources = tuple(sources)
        self._extra_routes = tuple(routes)
        self.metrics = GatewayMetrics(party=config.party)
        self.ops_port: int | None = None
        self._intake_stop = asyncio.Event()
        self._consume_stop = asyncio.Event()
        self._send_stop = asyncio.Event()
        self._closing = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._source_tasks: list[asyncio.Task[None]] = []
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer_ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._databases: list[Database] = []
        self._sinks: list[Sink] = []
        self.sources: list[Source] = []

    # ---- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        self.registry = Registry.load(config.registry)
        self.schemas = SchemaStore.load(config.schemas)
        if self.registry.party(self.party) is None:
            raise GatewayError(Reason.CONFIG_INVALID, f"party: {self.party!r} is not in {config.registry}")
        passphrase = self._passphrase()
        signing = self._load_signing_key()
        kid = self._own_kid(signing.public_key.raw, "sig", config.signing_key)
        sealing = {}
        for path in config.sealing_keys:
            key = SealingKey.load(path, passphrase)
            sealing[self._own_kid(key.public_key.raw, "seal", path)] = key
        self.signer = EventSigner(party=self.party, kid=kid, key=signing)
        self.verifier = EventVerifier(
            registry=self.registry, schemas=self.schemas, party=self.party, sealing_keys=sealing,
            limits=config.limits,
        )  # fmt: skip

        outbox_db = Database(config.data_dir / "outbox.db", durable=True)
        inbox_db = Database(config.data_dir / "inbox.db", durable=False)
        for db in (outbox_db, inbox_db):
            await db.open()
            self._databases.append(db)
        self.outbox = Outbox(outbox_db, max_backlog=config.outbox_max_backlog)
        await self.outbox.attach()
        self.inbox = Inbox(inbox_db)
        await self.inbox.attach()
        self.metrics.outbox_depth.set(self.outbox.depth)

        self.publisher = Publisher(
            signer=self.signer, registry=self.registry, schemas=self.schemas, outbox=self.outbox,
            metrics=self.metrics, batch_size=config.batch_size,
        )  # fmt: skip
        routes = list(self._extra_routes)
        for index, sink_config in enumerate(config.sinks):
            context = self._plugin_context(f"sinks[{index}]")
            routes.append(
                Route(build_sink(sink_config.kind, sink_config.options, context), sink_config.types)
            )
        self._sinks = list(dict.fromkeys(route.sink for route in routes))
        self.topics = readable_topics(self.registry, self.schemas, self.party)
        self.subscriber = Subscriber(
            party=self.party, verifier=self.verifier, inbox=self.inbox, routes=routes,
            dlq_topic=dlq_topic(self.party), metrics=self.metrics, retry=config.retry,
            max_records=config.batch_size, commit_timeout=self.kafka.request_timeout_ms / 1000,
        )  # fmt: skip
        self.sources = list(self._extra_sources)
        for index, source_config in enumerate(config.sources):
            context = self._plugin_context(f"sources[{index}]")
            self.sources.append(build_source(source_config.kind, source_config.options, context))

        app = build_ops_app(
            metrics=self.metrics, checks=self._checks(), check_timeout=config.ops.check_timeout
        )
        self._runner, self.ops_port = await start_ops_server(app, config.ops.host, config.ops.port)

        self._tasks["sender"] = asyncio.create_task(self._run_sender(), name=f"{self.party}-sender")
        self._tasks["consumer"] = asyncio.create_task(self._run_consumer(), name=f"{self.party}-consumer")
        for source in self.sources:
            self._source_tasks.append(
                asyncio.create_task(self._run_source(source), name=f"{self.party}-{source.name}")
            )
        _log.info("gateway started", party=self.party, ops_port=self.ops_port, reads=len(self.topics),
                  kafka=self.kafka.redacted())  # fmt: skip

    def _plugin_context(self, where: str) -> PluginContext:
        return PluginContext(
            party=self.party, base_dir=self.config.base_dir, data_dir=self.config.data_dir,
            metrics=self.metrics, where=where,
        )  # fmt: skip

    def _own_kid(self, raw: bytes, use: str, path: Path) -> str:
        party = self.registry.party(self.party)
        assert party is not None  # noqa: S101 - checked in start()
        for key in party.keys:
            if key.use == use and key.public_key.raw == raw:
                return key.kid
        raise GatewayError(
            Reason.KEYFILE_INVALID, f"{path}: its public key is not a {use} key of {self.party}"
        )

    def _passphrase(self) -> bytes | None:
        return read_passphrase(self.config.passphrase_file, "keys.passphrase_file")

    def _load_signing_key(self) -> SigningKey:
        """Read the signing key file (and passphrase file) as configured: at start-up and by /readyz."""
        return SigningKey.load(self.config.signing_key, self._passphrase())

    def _checks(self) -> list[ReadinessCheck]:
        ops = self.config.ops
        registered = self.registry.key(self.signer.kid)
        assert registered is not None  # noqa: S101 - _own_kid found it in start()
        return [
            kafka_check(self.kafka, timeout=max(0.5, ops.check_timeout * 0.75)),
            signing_key_check(self.signer, registered.public_key, load=self._load_signing_key),
            registry_check(self.registry, self.party, kid=self.signer.kid, min_days=ops.key_expiry_days),
            schemas_check(self.schemas),
            threshold_check(
                "outbox-backlog", lambda: float(self.outbox.depth), ops.max_outbox_backlog, "events"
            ),
            threshold_check("consumer-lag", lambda: self.subscriber.lag, ops.max_consumer_lag, "records"),
        ]

    # ---- background work ----------------------------------------------------------------------------
    async def _connect(
        self, factory: Any, what: str, give_up: Callable[[], bool], wake: asyncio.Event
    ) -> Any:
        """Start a Kafka client, retrying with backoff until it works, the gateway closes or ``give_up()``
        (checked again whenever ``wake`` is set)."""
        delay = 0.5
        while not self._closing.is_set() and not give_up():
            client = factory()
            try:
                await client.start()
            except Exception as exc:  # noqa: BLE001 - broker not reachable yet: retry
                with contextlib.suppress(Exception):
                    await client.stop()
                _log.warning(f"{what} cannot connect; retrying", error=type(exc).__name__, retry_in=delay)
                watch = [self._closing] if wake.is_set() else [self._closing, wake]  # a set event would spin
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_wait_first(*watch), timeout=delay)
                delay = min(delay * 2, 10.0)
                continue
            return client
        return None

    async def _run_sender(self) -> None:
        producer = await self._connect(
            lambda: AIOKafkaProducer(**self.kafka.producer_kwargs()),
            "producer",
            give_up=lambda: self._send_stop.is_set() and self.outbox.depth == 0,  # nothing left to drain
            wake=self._send_stop,
        )
        if producer is None:
            return
        self._producer = producer
        try:
            await ensure_topics(
                self.kafka.admin_kwargs(), own_topics(self.schemas, self.party),
                self.config.topic_partitions, self.config.topic_replication,
            )  # fmt: skip
        except GatewayError as exc:
            _log.error("topics not ensured; continuing", reason=str(exc.reason), detail=exc.detail)
        self._producer_ready.set()
        await self.publisher.run_sender(producer, self._send_stop)

    async def _run_consumer(self) -> None:
        if not self.topics:
            _log.info("this party reads no topics", party=self.party)
            return
        await _wait_first(self._producer_ready, self._consume_stop)
        if self._consume_stop.is_set():
            return
        consumer = await self._connect(
            lambda: AIOKafkaConsumer(**self.kafka.consumer_kwargs(self.group_id)),
            "consumer",
            give_up=self._consume_stop.is_set,
            wake=self._consume_stop,
        )
        if consumer is None:
            return
        self._consumer = consumer
        await self._report_refused_topics()
        consumer.subscribe(topics=self.topics, listener=CommitOnRevoke(self.subscriber, consumer))
        assert self._producer is not None  # noqa: S101 - set before _producer_ready
        await self.subscriber.run(consumer, self._producer, self._consume_stop)

    async def _report_refused_topics(self) -> None:
        """Log (``bus.not-authorized``) the topics this party reads that the broker's ACLs refuse it: the
        consumer would only wait on them in silence (gateway.bus.admin.refused_topics). With SASL only: ACLs
        name authenticated users, and asking the embedded broker about a missing topic would create it."""
        if self.kafka.sasl is None:
            return
        try:
            refused = await refused_topics(self.kafka.admin_kwargs(), self.topics)
        except GatewayError as exc:
            _log.warning("read permissions not checked", reason=str(exc.reason), detail=exc.detail)
            return
        if refused:
            _log.error("the broker refuses topics this party reads; their events will not arrive",
                       reason=str(Reason.BUS_NOT_AUTHORIZED), topics=refused, party=self.party)  # fmt: skip

    async def _run_source(self, source: Source) -> None:
        delay = 1.0
        while not self._intake_stop.is_set():
            try:
                await source.run(self.publisher.publish, self._intake_stop)
                return
            except Exception as exc:  # noqa: BLE001 - a failed source is restarted, never kills the gateway
                _log.error("source failed; restarting", source=source.name, error=type(exc).__name__)
                await _sleep_unless(self._intake_stop, delay)
                delay = min(delay * 2, 30.0)

    # ---- stop ---------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """The shutdown order in the module docstring, bounded by ``config.shutdown_timeout``."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        # 1. stop intake
        self._intake_stop.set()
        self.publisher.stop_intake()
        await _finish(self._source_tasks, deadline)
        # 2. stop the consume loop (it finishes and commits the batch in hand)
        self._consume_stop.set()
        await _finish([self._tasks["consumer"]], deadline)
        # 3. drain the outbox
        self._send_stop.set()
        await _finish([self._tasks["sender"]], deadline)
        # 4. flush and close
        self._closing.set()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), timeout=max(1.0, deadline - time.monotonic()))
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        if self._runner is not None:
            await stop_ops_server(self._runner)
        await self.outbox.wait_flushed()
        self.inbox.close()
        for db in self._databases:
            await db.close()
        _log.info("gateway stopped", party=self.party, outbox_left=self.outbox.depth)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop in order."""
        async with stop_on_signals() as stop:
            await stop.wait()
        await self.stop()


async def _finish(tasks: Sequence[asyncio.Task[None]], deadline: float) -> None:
    """Wait for ``tasks`` until ``deadline``; cancel what is left and await it (never leave a task behind)."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            _log.error("task failed", task=task.get_name(), error=type(task.exception()).__name__)


async def _wait_first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set (the waiters are cancelled and awaited)."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
