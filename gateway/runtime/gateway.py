"""One party's gateway at run time: publisher + outbox sender, subscriber, sources, sinks, operations HTTP.

Lifecycle (one order, always): ``start`` loads the signed registry (its own copy, the configured file,
checked from the configured anchor: :class:`~gateway.runtime.trust.LiveRegistry`), schemas and keys (any
problem stops start-up with a clear error), opens the outbox and inbox, starts the operations server, then
connects to Kafka in the background — a broker that is down at start-up only delays sending; ``publish``
already works. ``stop``:

1. stop intake: sources stop reading, ``publish`` refuses new events (``gateway.stopping``);
2. stop the consume loop: the batch in hand is finished, its offsets committed;
3. drain the outbox to the broker, bounded by the shutdown timeout (what is left stays on disk);
4. flush and close the producer, close the consumer, sinks, databases and the operations server.

The registry changes live: a new version from ``xchg.registry.v1`` or the file source that verifies is put in
force by :meth:`Gateway._registry_changed` — verifier, subscriber, publisher, coordinator and the topic list
replaced in one synchronous call, so every event is handled wholly with one version — and the consumer
resubscribes when the topics this party may read changed.

Every long-running task (the outbox sender, the consumer, the registry follower, each source, the receipts
sweep, the re-drive service) runs under a :class:`~gateway.runtime.supervisor.Supervisor`: restarted with
backoff when it raises, counted in ``xchg_task_restarts_total``, reported by ``/readyz`` and, when it keeps
failing, by ``/healthz``. Every task is awaited after it is cancelled; nothing is left running.

One process per ``data_dir`` (:mod:`gateway.runtime.lock`): ``start`` takes its exclusive lock before
anything else and ``stop`` releases it last; a second gateway on the same folder stops at once with
``gateway.already-running``.

Readiness tells the truth about the producer (:mod:`gateway.runtime.producer`): ``/readyz`` check
``producer`` fails until it has started, and a broker that refuses idempotent producing is said once, in
one log line, instead of being retried in a loop.

Delivery receipts (:mod:`gateway.bus.receipts`): the subscriber reports every finished record to the
receipt issuer (``[receipts] issue``), receipts for our own events go to the delivery ledger in the outbox
database, and a ``receipts`` task keeps ``xchg_unacknowledged_events``/``xchg_undelivered_events`` current.
Sink outages are ridden out per sink (:mod:`gateway.bus.breaker`; readiness check ``sinks``); dead letters
are re-driven through :mod:`gateway.runtime.redrive` (task ``redrive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.bus.admin import ensure_topics, max_message_bytes, refused_topics
from gateway.bus.connectivity import start_client
from gateway.bus.consent import CONSENT_CHANGE, ConsentGate, ConsentRegister, withholds
from gateway.bus.database import Database
from gateway.bus.delivery import RetryPolicy, Sink
from gateway.bus.inbox import Inbox
from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.bus.receipts import JOURNAL_FILE, DeliveryLedger, ReceiptIssuer
from gateway.bus.subscriber import CommitOnRevoke, Route, Subscriber
from gateway.bus.wait import wait_any
from gateway.contract.keys import SealingKey, SigningKey
from gateway.contract.policy import dlq_topic, own_topics, readable_topics
from gateway.contract.registry import Registry
from gateway.contract.registry_chain import Anchor
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.schemas import SchemaStore
from gateway.contract.sign import EventSigner
from gateway.contract.verify import EventVerifier
from gateway.coordination.clock import Clock
from gateway.coordination.metrics import CoordinationMetrics
from gateway.coordination.service import Coordinator
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig
from gateway.runtime.lock import DataDirLock
from gateway.runtime.ops import (
    CheckFailed,
    ReadinessCheck,
    StatusOptions,
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
from gateway.runtime.producer import ProducerLink, close_producer
from gateway.runtime.redrive import RedriveService
from gateway.runtime.signals import stop_on_signals
from gateway.runtime.sources import Source
from gateway.runtime.status import History, StatusFacts
from gateway.runtime.supervisor import Supervisor
from gateway.runtime.trust import LiveRegistry
from gateway.settings import read_passphrase

__all__ = ["Gateway"]

_log = structlog.get_logger(__name__)

#: The broker being away: a supervised task restarts, but this never makes /healthz fail.
_TRANSIENT: tuple[type[BaseException], ...] = (KafkaError, ConnectionError)


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
        clock: Clock | None = None,
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
        self._resubscribe = asyncio.Event()
        self._send_stop = asyncio.Event()
        self._closing = asyncio.Event()
        ops = config.ops
        self.supervisor = Supervisor(
            owner=config.party, initial_backoff=ops.task_initial_backoff, max_backoff=ops.task_max_backoff,
            unhealthy_after=ops.task_unhealthy_after, healthy_after=ops.task_healthy_after,
            on_restart=lambda task: self.metrics.task_restarts.labels(task=task).inc(),
        )  # fmt: skip
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer_link = ProducerLink(self.kafka)
        self._lock = DataDirLock(config.data_dir)
        self._sink_retry: dict[str, RetryPolicy] = {}
        self.issuer: ReceiptIssuer | None = None
        self._runner: web.AppRunner | None = None
        self._databases: list[Database] = []
        self._sinks: list[Sink] = []
        self.sources: list[Source] = []
        self.clock = clock
        """Time of the coordination component (SOP deadlines, statistics periods); None: the system clock."""
        self.coordinator: Coordinator | None = None

    # ---- start ------------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The registry in force (it changes live: read it again rather than keeping it)."""
        return self.trust.current.registry

    async def start(self) -> None:
        self._lock.acquire()  # before anything is opened: a second process on this data_dir stops here
        try:
            await self._start()
        except BaseException:
            self._lock.release()
            raise

    async def _start(self) -> None:
        config = self.config
        self.schemas = SchemaStore.load(config.schemas)
        self.trust = self._live_registry()
        version = self.trust.load()
        if self.registry.party(self.party) is None:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"party: {self.party!r} is not in the registry ({version.label()})"
            )
        passphrase = self._passphrase()
        signing = self._load_signing_key()
        kid = self._own_kid(signing.public_key.raw, "sig", config.signing_key)
        self._sealing_files = [(path, SealingKey.load(path, passphrase)) for path in config.sealing_keys]
        self.signer = EventSigner(party=self.party, kid=kid, key=signing)
        self.verifier = EventVerifier(
            registry=self.registry, schemas=self.schemas, party=self.party,
            sealing_keys=self._sealing(self.registry, at_start=True), limits=config.limits,
            max_event_age=timedelta(days=config.max_event_age_days),
        )  # fmt: skip

        outbox_db = Database(config.data_dir / "outbox.db", durable=True)
        inbox_db = Database(config.data_dir / "inbox.db", durable=False)
        for db in (outbox_db, inbox_db):
            await db.open()
            self._databases.append(db)
        self.outbox = Outbox(
            outbox_db,
            max_backlog=config.outbox_max_backlog,
            retention_seconds=config.outbox_retention_days * 86400.0,
        )
        await self.outbox.attach()
        self.inbox = Inbox(inbox_db, retention_seconds=config.inbox_retention_days * 86400.0)
        await self.inbox.attach()
        self.metrics.outbox_depth.set(self.outbox.depth)

        self.publisher = Publisher(
            signer=self.signer, registry=self.registry, schemas=self.schemas, outbox=self.outbox,
            metrics=self.metrics, batch_size=config.batch_size,
        )  # fmt: skip
        await self._receipts(outbox_db)
        routes = await self._routes()
        self._sinks = list(dict.fromkeys(route.sink for route in routes))
        self.topics = readable_topics(self.registry, self.schemas, self.party)
        self.subscriber = Subscriber(
            party=self.party, verifier=self.verifier, inbox=self.inbox, routes=routes,
            dlq_topic=dlq_topic(self.party), metrics=self.metrics, retry=config.retry,
            sink_retry=self._sink_retry, max_records=config.batch_size,
            commit_timeout=self.kafka.request_timeout_ms / 1000, finished=self.issuer, receipts=self.ledger,
            withholding=functools.partial(withholds, self.consent),  # the receipt of a withheld event says so
        )  # fmt: skip
        self.subscriber.use_verifier(self.verifier, stale_after=version.expires.timestamp())
        self.trust.on_change = self._registry_changed
        self.sources = list(self._extra_sources)
        for index, source_config in enumerate(config.sources):
            context = self._plugin_context(f"sources[{index}]")
            self.sources.append(build_source(source_config.kind, source_config.options, context))
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            raise GatewayError(Reason.CONFIG_INVALID, f"sources: names must be unique, got {names}")

        app = build_ops_app(
            metrics=self.metrics, checks=self._checks(), check_timeout=config.ops.check_timeout,
            liveness=self.supervisor.liveness, status=self._status_options(),
        )  # fmt: skip
        self._runner, self.ops_port = await start_ops_server(app, config.ops.host, config.ops.port)

        # Every long-running task is supervised (gateway/runtime/supervisor.py): restarted with backoff when
        # it raises, reported by /readyz and, when it keeps failing, /healthz. Broker errors are transient.
        supervise = self.supervisor.spawn
        supervise("sender", self._sender_loop, stop=self._closing, transient=_TRANSIENT)
        supervise("consumer", self._consumer_loop, stop=self._consume_stop, transient=_TRANSIENT)
        self._spawn_delivery_tasks()
        if config.follow_registry:
            follow = functools.partial(self.trust.follow, self.kafka, self._consume_stop)
            supervise("registry", follow, stop=self._consume_stop, transient=_TRANSIENT)
        supervise("registry-file", functools.partial(self.trust.watch, self._consume_stop),
                  stop=self._consume_stop)  # fmt: skip
        if self.coordinator is not None:
            supervise("coordination", functools.partial(self.coordinator.run, self._consume_stop),
                      stop=self._consume_stop)  # fmt: skip
        for source in self.sources:
            run = functools.partial(source.run, self.publisher.publish, self._intake_stop)
            supervise(_source_task(source), run, stop=self._intake_stop)
        _log.info("gateway started", party=self.party, ops_port=self.ops_port, reads=len(self.topics),
                  kafka=self.kafka.redacted())  # fmt: skip

    async def _receipts(self, outbox_db: Database) -> None:
        """The delivery ledger (receipts for our events) and, with ``[receipts] issue``, the issuer."""
        config = self.config
        self.ledger = DeliveryLedger(
            outbox_db, party=self.party, registry=self.registry, metrics=self.metrics,
            retention_seconds=config.receipts.retention_days * 86400.0,
        )  # fmt: skip
        await self.ledger.attach()
        if config.receipts.issue:
            self.issuer = ReceiptIssuer(
                party=self.party, registry=self.registry, publish=self.publisher.publish,
                journal=config.data_dir / JOURNAL_FILE, metrics=self.metrics,
            )  # fmt: skip
            await self.issuer.attach()
            await self.issuer.flush()  # receipts a crash left in the journal

    async def _routes(self) -> list[Route]:
        """The subscriber's routes: extra routes, each configured agency sink behind the consent gate (with
        consent changes routed to every one of them), and the coordination component when configured."""
        config = self.config
        consent_db = Database(config.data_dir / "consent.db", durable=True)
        await consent_db.open()
        self._databases.append(consent_db)
        self.consent = ConsentRegister(consent_db)
        await self.consent.attach()
        withheld = ConsentGate.counter(self.metrics.registry)
        routes = list(self._extra_routes)
        for index, sink_config in enumerate(config.sinks):
            context = self._plugin_context(f"sinks[{index}]")
            sink = ConsentGate(
                build_sink(sink_config.kind, sink_config.options, context), self.consent, withheld
            )
            if sink_config.retry is not None:
                self._sink_retry[sink.name] = sink_config.retry
            # consent changes and erasure requests reach every agency sink, whatever types it takes
            routes.append(Route(sink, (*sink_config.types, CONSENT_CHANGE)))
        if config.coordination is not None:
            self.coordinator = Coordinator(
                config.coordination, party=self.party, registry=self.registry, schemas=self.schemas,
                publish=self.publisher.publish, clock=self.clock,
                metrics=CoordinationMetrics(self.metrics.registry),
            )  # fmt: skip
            await self.coordinator.start()
            self.publisher.observers.append(self.coordinator)
            routes.append(Route(self.coordinator))
        return routes

    def _plugin_context(self, where: str) -> PluginContext:
        return PluginContext(
            party=self.party, base_dir=self.config.base_dir, data_dir=self.config.data_dir,
            metrics=self.metrics, where=where,
        )  # fmt: skip

    def _live_registry(self) -> LiveRegistry:
        config = self.config
        if config.registry_anchor is None:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                "registry_anchor: required: the trust anchor of the signed registry (written by "
                "`gateway registry anchor`; docs/REGISTRY.md)",
            )
        return LiveRegistry(
            anchor=Anchor.load(config.registry_anchor), source=config.registry,
            state_dir=config.data_dir / "registry", metrics=self.metrics,
        )  # fmt: skip

    def _registry_changed(self, version: RegistryVersion) -> None:
        """A new registry version is in force: everything that verifies, signs, seals or subscribes uses it
        from the next event on. One synchronous call (no await), so no task sees half of the change."""
        registry = version.registry
        self.verifier = dataclasses.replace(
            self.verifier, registry=registry, sealing_keys=self._sealing(registry)
        )
        self.subscriber.use_verifier(self.verifier, stale_after=version.expires.timestamp())
        self.publisher.use_registry(registry, self.signer)
        if self.coordinator is not None:
            self.coordinator.registry = registry
        self.ledger.registry = registry  # who may have received our events (receipts)
        if self.issuer is not None:
            self.issuer.registry = registry
        topics = readable_topics(registry, self.schemas, self.party)
        if topics != self.topics:
            _log.info("registry.topics_changed", party=self.party, reads=len(topics))
            self.topics = topics
            self._resubscribe.set()

    def _sealing(self, registry: Registry, *, at_start: bool = False) -> dict[str, SealingKey]:
        """Our sealing keys by their key id in ``registry``; a key file not (yet) registered is left out
        (added by the maintainers later, it is picked up live) — except at start, where it is an error as
        for the signing key (the wrong file deployed)."""
        party = registry.party(self.party)
        found: dict[str, SealingKey] = {}
        for path, key in self._sealing_files:
            kid = next(
                (k.kid for k in (party.keys if party else ()) if k.use == "seal"
                 and k.public_key.raw == key.public_key.raw),
                None,
            )  # fmt: skip
            if kid is not None:
                found[kid] = key
            elif at_start:
                raise GatewayError(
                    Reason.KEYFILE_INVALID, f"{path}: its public key is not a seal key of {self.party}"
                )
        return found

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

    def _status_options(self) -> StatusOptions | None:
        """The status page's facts (signing key validity, registry) and the notary's checkpoint, if set."""
        ops = self.config.ops
        registered = self.registry.key(self.signer.kid)
        ends = (
            [t for t in (registered.valid_until, registered.revoked_at) if t is not None]
            if registered
            else []
        )
        if ends:
            self.metrics.signing_key_expiry.labels(kid=self.signer.kid).set(min(ends).timestamp())
        if not ops.status:
            return None
        facts = StatusFacts(
            kid=self.signer.kid, key_valid_until=min(ends) if ends else None,
            registry_parties=len(self.registry.parties),
        )  # fmt: skip
        return StatusOptions(
            facts=lambda: facts,
            history=History(interval=ops.status_interval, span=max(3600.0, ops.status_interval)),
            refresh_seconds=max(1, round(ops.status_interval)),
            checkpoint=_notary_checkpoint(ops.notary_url) if ops.notary_url else None,
            statistics=lambda: self.coordinator.latest_statistics if self.coordinator is not None else None,
        )

    def _checks(self) -> list[ReadinessCheck]:
        ops = self.config.ops
        registered = self.registry.key(self.signer.kid)
        assert registered is not None  # noqa: S101 - _own_kid found it in start()
        return [
            kafka_check(self.kafka, timeout=max(0.5, ops.check_timeout * 0.75)),
            signing_key_check(self.signer, registered.public_key, load=self._load_signing_key),
            registry_check(
                lambda: self.registry, self.party, kid=self.signer.kid, min_days=ops.key_expiry_days
            ),
            self.trust.readiness_check(),
            schemas_check(self.schemas),
            threshold_check(
                "outbox-backlog", lambda: float(self.outbox.depth), ops.max_outbox_backlog, "events"
            ),
            threshold_check("consumer-lag", lambda: self.subscriber.lag, ops.max_consumer_lag, "records"),
            self.supervisor.readiness_check("tasks"),
            ReadinessCheck("dead-letters", self._dead_letters_probe),
            ReadinessCheck("producer", self._producer_link.probe),
            ReadinessCheck("sinks", self._sinks_probe),
        ]

    async def _dead_letters_probe(self) -> str:
        if self.subscriber.stalled is not None:
            raise CheckFailed(self.subscriber.stalled)
        return "dead-letter topic writable"

    async def _sinks_probe(self) -> str:
        """Not ready while a sink's circuit breaker is open or half-open (its system is down)."""
        states = self.subscriber.sink_states()
        down = [
            f"{name} {state} for {outage:.0f}s after {failures} failure(s) "
            f"({self.subscriber.health[name].last_error or 'unavailable'}), {waiting} partition(s) waiting"
            for name, state, failures, outage, waiting in states
            if state != "closed"
        ]
        if down:
            raise CheckFailed("; ".join(down))
        retrying = sum(1 for _, _, failures, _, _ in states if failures)
        retries = f", {retrying} retrying" if retrying else ""
        return f"{len(states)} sink(s), none down (circuit closed){retries}"

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
                await start_client(client)  # stopped again if it fails or the gateway stops meanwhile
            except Exception as exc:  # noqa: BLE001 - broker not reachable yet: retry
                _log.warning(f"{what} cannot connect; retrying", error=type(exc).__name__, retry_in=delay)
                watch = [self._closing] if wake.is_set() else [self._closing, wake]  # a set event would spin
                await wait_any(*watch, seconds=delay)
                delay = min(delay * 2, 10.0)
                continue
            return client
        return None

    async def _sender_loop(self) -> None:
        """Connect the producer (once), provision topics, then send the outbox until the drain ends.

        Supervised: when it raises (the outbox cannot be written, say the disk is full), it is restarted
        with the same producer and sends on from the outbox, which is the record of what is left.
        """
        if self._producer is None:
            producer = await self._producer_link.start(
                self._closing, self._send_stop, left=lambda: self.outbox.depth
            )
            if producer is None:
                return
            self.kafka = self._producer_link.kafka  # without idempotence if the broker refused it
            self._producer = producer
            await self._provision()
            self._producer_link.ready.set()
        await self.publisher.run_sender(self._producer, self._send_stop)

    def _spawn_delivery_tasks(self) -> None:
        """The receipts sweep and the re-drive service (issue 13), supervised like every task."""
        self.redrive = RedriveService(
            data_dir=self.config.data_dir, kafka=self.kafka, dlq_topic=dlq_topic(self.party),
            subscriber=self.subscriber, metrics=self.metrics, poll_seconds=self.config.redrive_poll_seconds,
        )  # fmt: skip
        self.supervisor.spawn("receipts", self._receipts_loop, stop=self._consume_stop)
        self.supervisor.spawn("redrive", self._redrive_loop, stop=self._consume_stop, transient=_TRANSIENT)

    async def _receipts_loop(self) -> None:
        """Keep the unacknowledged/undelivered gauges current and prune old delivery records."""
        receipts = self.config.receipts
        while not self._consume_stop.is_set():
            await self.ledger.sweep(unacknowledged_after=receipts.unacknowledged_after_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._consume_stop.wait(), timeout=receipts.sweep_seconds)

    async def _redrive_loop(self) -> None:
        await self.redrive.run(self._consume_stop)

    async def _provision(self) -> None:
        """Our topics exist; the dead-letter record bound knows the producer's and the DLQ topic's limits."""
        try:
            await ensure_topics(
                self.kafka.admin_kwargs(), own_topics(self.schemas, self.party),
                self.config.topic_partitions, self.config.topic_replication,
            )  # fmt: skip
        except GatewayError as exc:
            _log.error("topics not ensured; continuing", reason=str(exc.reason), detail=exc.detail)
        limits = self.subscriber.dead_letter_limits
        limits.max_request_bytes = self.kafka.max_request_bytes
        dlq = self.subscriber.dlq_topic
        limits.topic_max_message_bytes = (await max_message_bytes(self.kafka.admin_kwargs(), [dlq])).get(dlq)
        _log.info("dead-letter bound", topic=dlq, max_record_bytes=limits.max_record_bytes)

    async def _consumer_loop(self) -> None:
        """Join the group and run the subscriber until the consume stop.

        Supervised: when the loop raises, records it had fetched may be unhandled while the consumer's
        position is past them, so the consumer is closed (after committing what was handled) and the restart
        joins afresh from the committed offsets: nothing is skipped, what is read again is deduplicated.

        The topics come from the registry in force: when a new version changes what this party may read,
        the subscriber finishes and commits the batch in hand and the consumer subscribes to the new list.
        """
        while not self.topics:
            _log.info("this party reads no topics", party=self.party)
            await wait_any(self._resubscribe, self._consume_stop)
            if self._consume_stop.is_set():
                return
            self._resubscribe.clear()
        await wait_any(self._producer_link.ready, self._consume_stop)
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
        listener = CommitOnRevoke(self.subscriber, consumer)
        assert self._producer is not None  # noqa: S101 - set before the link is ready
        try:
            while not self._consume_stop.is_set():
                self._resubscribe.clear()
                await self._report_refused_topics()
                consumer.subscribe(topics=self.topics, listener=listener)
                round_stop = asyncio.Event()
                ender = asyncio.create_task(
                    _set_when_first(round_stop, self._consume_stop, self._resubscribe)
                )
                try:
                    await self.subscriber.run(consumer, self._producer, round_stop)
                finally:
                    ender.cancel()
                    await asyncio.gather(ender, return_exceptions=True)
                if self._resubscribe.is_set():
                    _log.info("consumer resubscribing", party=self.party, reads=len(self.topics))
        except Exception:
            with contextlib.suppress(Exception):
                await self.subscriber.commit(consumer)
            self.subscriber.reset()
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise

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

    # ---- stop ---------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """The shutdown order in the module docstring, bounded by ``config.shutdown_timeout``."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        # 1. stop intake
        self._intake_stop.set()
        self.publisher.stop_intake()
        await self.supervisor.stop([_source_task(source) for source in self.sources], deadline)
        # 2. stop the consume loop (it finishes and commits the batch in hand)
        self._consume_stop.set()
        await self.supervisor.stop(["redrive", "consumer", "coordination", "receipts"], deadline)
        # 3. drain the outbox
        self._send_stop.set()
        await self.supervisor.stop(["sender"], deadline)
        # 4. flush and close
        self._closing.set()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            await close_producer(self._producer, seconds=max(1.0, deadline - time.monotonic()))
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        if self._runner is not None:
            await stop_ops_server(self._runner)
        if self.coordinator is not None:
            await self.coordinator.stop()
        await self.outbox.wait_flushed()
        self.inbox.close()
        if self.issuer is not None:
            self.issuer.close()
        for db in self._databases:
            await db.close()
        self._lock.release()
        _log.info("gateway stopped", party=self.party, outbox_left=self.outbox.depth)

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop in order."""
        async with stop_on_signals() as stop:
            await stop.wait()
        await self.stop()


def _notary_checkpoint(base_url: str) -> Callable[[], Awaitable[bytes]]:
    """Fetch ``<base_url>/checkpoint`` (the notary's latest signed note), bounded to 2 s and 64 KiB."""
    url = base_url.rstrip("/") + "/checkpoint"

    async def fetch() -> bytes:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            response.raise_for_status()
            return await response.content.read(65536)

    return fetch


def _source_task(source: Source) -> str:
    """The supervised task name of a source (also the ``task`` label of ``xchg_task_restarts_total``)."""
    return f"source:{source.name}"


async def _set_when_first(target: asyncio.Event, *events: asyncio.Event) -> None:
    """Set ``target`` as soon as one of ``events`` is set."""
    await wait_any(*events)
    target.set()
