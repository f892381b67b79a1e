"""The notary service: consume every exchange and dead-letter topic, append, sign, publish (:class:`Notary`).

How it keeps its guarantees (no gap, no duplicate, every topic, never two inconsistent checkpoints,
deterministic verdicts) is told in :mod:`gateway.audit.notary`; its configuration is
:class:`~gateway.audit.notary.config.NotaryConfig`, its signed checkpoints on disk
:class:`~gateway.audit.notary.checkpoints.CheckpointStore`, its HTTP endpoints :mod:`._http`.

Lifecycle: ``await start()`` opens (and recovers) the tile log, brings the index up to it, checks the log
still extends the last signed checkpoint (or signs the first), starts the HTTP server, the consumer and the
publisher; ``await stop()`` stops consuming, signs what was appended, publishes pending checkpoints
(bounded) and closes everything, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.leaf import ConsumedRecord, RecordLike, leaf_for_record, leaf_for_registry_record
from gateway.audit.merkle import EMPTY_ROOT, verify_consistency
from gateway.audit.notary._http import notary_app
from gateway.audit.notary._index import INDEX_FILE, LeafIndex
from gateway.audit.notary.checkpoints import CheckpointStore
from gateway.audit.notary.config import NotaryConfig
from gateway.audit.note import Ed25519Signer, Note, NoteSignature, open_note, sign_note, verifier_from_vkey
from gateway.audit.proof import create_proof
from gateway.audit.tiles import TileLog
from gateway.bus.admin import ensure_topics, partitions_of
from gateway.bus.kafka import KafkaSettings
from gateway.contract.keys import SigningKey
from gateway.contract.policy import REGISTRY_TOPIC, exchange_topics
from gateway.contract.registry import Registry
from gateway.contract.registry_chain import Anchor, RegistryChain
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason
from gateway.runtime.ops import start_ops_server, stop_ops_server
from gateway.runtime.signals import stop_on_signals
from gateway.runtime.supervisor import Supervisor
from gateway.settings import read_passphrase

__all__ = ["Notary"]

_log = structlog.get_logger(__name__)

_POLL_MS: Final = 300
_QUIET_POLLS: Final = 1  # empty polls, once every partition's end is reached, before a sync is answered
#: The broker being away: the supervised tasks reconnect, and it never makes /healthz fail.
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (KafkaError, ConnectionError)


class Notary:
    """The notary process: ``await start()``, then it consumes, appends and signs until ``await stop()``."""

    def __init__(self, config: NotaryConfig, *, kafka: KafkaSettings | None = None) -> None:
        self.config = config
        self.kafka = kafka or config.kafka
        if self.kafka.embedded:
            raise GatewayError(Reason.CONFIG_INVALID, "kafka.bootstrap_servers: the notary needs a broker")
        self.origin = config.origin
        self._pattern = re.compile(config.topic_pattern)
        self.http_port: int | None = None
        self.refused: GatewayError | None = None
        """Set when the notary refused to sign (its log no longer extends its last checkpoint)."""
        self._stop = asyncio.Event()
        self.supervisor = Supervisor(owner="notary")
        self._tasks: list[asyncio.Task[None]] = []
        self._sign_lock = asyncio.Lock()
        self._sync_waiters: list[asyncio.Future[bytes]] = []
        self._armed: list[asyncio.Future[bytes]] = []
        self._quiet = 0
        self._refresh_due = 0.0
        self._assigned: set[TopicPartition] = set()
        self._next: dict[tuple[str, int], int] = {}
        self._publish_queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._publish_idle = asyncio.Event()
        self._publish_idle.set()
        self._last_signed_at = time.monotonic()
        self.last_signed_wall: float | None = None
        """Unix time the notary last signed (or confirmed unchanged) its checkpoint; for /metrics."""
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._runner: web.AppRunner | None = None
        self._log: TileLog | None = None
        self._index: LeafIndex | None = None
        self._chain: RegistryChain
        self.verifier: EventVerifier | None = None
        self.appended = 0
        """Leaves appended by this process (not counting what the log held at start)."""

    # ---- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        self.schemas = SchemaStore.load(config.schemas)
        self._chain = RegistryChain(Anchor.load(config.registry_anchor))
        self.verifier = None
        passphrase = read_passphrase(config.passphrase_file, "passphrase_file")
        key = SigningKey.load(config.key_file, passphrase)
        self.signer = Ed25519Signer(self.origin, key)
        self.vkey = str(self.signer.verifier().vkey())
        self._cosigners = tuple(verifier_from_vkey(v) for v in config.cosigners)
        self.store = CheckpointStore(
            config.log_dir, origin=self.origin, verifiers=[self.signer.verifier()], durable=config.durable
        )
        log = await asyncio.to_thread(TileLog.open, config.log_dir, durable=config.durable)
        self._log = log
        try:
            if log.recovered:
                _log.warning("notary.recovered", files_removed=log.recovered, size=log.size)
            self._index = LeafIndex(config.log_dir / INDEX_FILE)
            reindexed = await asyncio.to_thread(self._index.sync_with, log)
            self._next = await asyncio.to_thread(self._index.positions)
            latest = await asyncio.to_thread(self.store.latest)
            self._latest = latest
            if latest is not None:
                await asyncio.to_thread(self._check_extends, latest.checkpoint)  # raises: refuse to start
            else:
                await self._sign()  # the first tree head (empty, or what an earlier run left unsigned)
            app = notary_app(self)
            self._runner, self.http_port = await start_ops_server(app, config.http_host, config.http_port)
        except BaseException:
            if self._index is not None:
                self._index.close()
            log.close()
            raise
        # supervised (gateway/runtime/supervisor.py): restarted with backoff when they raise; /healthz
        # answers 503 naming the task when one keeps failing (broker errors never count there)
        self._tasks = [
            self.supervisor.spawn("consumer", self._run_consumer, stop=self._stop, transient=_TRANSIENT),
            self.supervisor.spawn("publisher", self._run_publisher, stop=self._stop, transient=_TRANSIENT),
        ]
        assert self._latest is not None  # noqa: S101 - loaded or signed above
        self._publish_queue.put_nowait(self._latest.note)  # (re)publish: a crash may have come before it
        _log.info("notary.started", origin=self.origin, size=log.size, reindexed=reindexed,
                  signed_size=self._latest.checkpoint.size, partitions=len(self._next),
                  http_port=self.http_port, kafka=self.kafka.redacted())  # fmt: skip

    @property
    def registry(self) -> Registry:
        """The registry version in force at the end of the log (what the next event is verified with)."""
        version = self._chain.current
        if version is None:
            raise GatewayError(Reason.REGISTRY_UNAVAILABLE, "no registry version logged yet")
        return version.registry

    def _in_force(self, chain: RegistryChain) -> None:
        """Make ``chain`` (after a committed append) the notary's: its version verifies the next records."""
        version = chain.current
        if version is not None and (
            self._chain.current is None or version.digest != self._chain.current.digest
        ):
            self.verifier = EventVerifier(registry=version.registry, schemas=self.schemas)
            _log.info("notary.registry_in_force", serial=version.serial, digest=version.digest)
        self._chain = chain

    async def _restore_registry(self, consumer: AIOKafkaConsumer) -> None:
        """Replay the registry records the log already holds (offsets below its position in the registry
        topic), so the version in force is the one the log says: verdicts stay a function of the log."""
        end = self._next.get((REGISTRY_TOPIC, 0), 0)
        if end == 0 or self._chain.current is not None:
            return
        tp = TopicPartition(REGISTRY_TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        chain = self._chain.copy()
        idle = 0
        while await consumer.position(tp) < end and idle < 3:
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=100)
            records = [r for r in batch.get(tp, []) if r.offset < end]
            idle = 0 if records else idle + 1
            for record in records:
                chain.update(record.value or b"")
        self._in_force(chain)
        current = chain.current
        _log.info("notary.registry_restored", serial=None if current is None else current.serial, below=end)

    # ---- properties --------------------------------------------------------------------------------
    @property
    def log(self) -> TileLog:
        if self._log is None:
            raise GatewayError(Reason.TLOG_IO_FAILED, "notary not started")
        return self._log

    @property
    def size(self) -> int:
        return self.log.size

    @property
    def latest_checkpoint(self) -> bytes:
        """The latest signed checkpoint note (with the cosignatures attached so far)."""
        if self._latest is None:
            raise GatewayError(Reason.TLOG_IO_FAILED, "notary not started")
        return self._latest.note

    @property
    def signed_size(self) -> int:
        return 0 if self._latest is None else self._latest.checkpoint.size

    # ---- consuming --------------------------------------------------------------------------------
    async def _run_consumer(self) -> None:
        """Consume until stopped. Anything that escapes closes the clients and is left to the supervisor,
        which logs it and reconnects after a backoff (broker trouble), or, when it keeps failing for another
        reason (the log cannot be written), also makes ``/healthz`` answer 503."""
        try:
            await self._consume()
        except GatewayError as exc:
            if exc.reason == Reason.CHECKPOINT_INCONSISTENT:
                return  # refused: stop appending, keep serving the last good checkpoint
            _log.error("notary.consume_failed", reason=str(exc.reason), detail=exc.detail)
            raise
        finally:
            await self._close_clients()

    async def _consume(self) -> None:
        kafka = self.kafka
        consumer_kwargs = kafka.consumer_kwargs(None)
        consumer_kwargs.update(metadata_max_age_ms=int(self.config.refresh_seconds * 1000))
        self._consumer = AIOKafkaConsumer(**consumer_kwargs)
        self._admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
        await self._consumer.start()
        await self._admin.start()
        await self._restore_registry(self._consumer)
        self._assigned = set()
        self._refresh_due = 0.0
        targets: dict[TopicPartition, int] | None = None
        while not self._stop.is_set():
            if self._sync_waiters:
                self._armed.extend(self._sync_waiters)
                self._sync_waiters.clear()
                self._quiet = 0
                self._refresh_due = 0.0
                targets = None
            if time.monotonic() >= self._refresh_due:
                await self._refresh()
                self._refresh_due = time.monotonic() + self.config.refresh_seconds
            if self._armed and targets is None:
                # where the partitions end now (a lower bound on Tansu, see gateway.sandbox.broker: enough,
                # since fetches return whole batches): a sync waits until the log got there
                targets = await self._consumer.end_offsets(list(self._assigned)) if self._assigned else {}
            records = await self._poll()
            if records:
                self._quiet = 0
                await self._append(records)
            else:
                self._quiet += 1
            if self._armed and self._quiet >= _QUIET_POLLS and await self._reached(targets or {}):
                targets = None
                note = await self._sign()
                armed, self._armed = self._armed, []
                for waiter in armed:
                    if not waiter.done():
                        waiter.set_result(note)
            elif self._due():
                await self._sign()

    async def _reached(self, targets: Mapping[TopicPartition, int]) -> bool:
        """Whether every partition's log position (or fetch position, past markers) reached its target."""
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - set by _consume
        for tp, end in targets.items():
            if self._next.get((tp.topic, tp.partition), 0) >= end:
                continue
            if tp in self._assigned and await consumer.position(tp) < end:  # (a deleted topic: skip it)
                return False
        return True

    async def _poll(self) -> list[RecordLike]:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - set by _consume
        if not self._assigned:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=_POLL_MS / 1000)
            return []
        batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=self.config.batch_size)
        fresh: list[RecordLike] = []
        # registry versions first: an event fetched with the version that admits its key is judged by it
        for tp in sorted(batches, key=lambda t: (t.topic != REGISTRY_TOPIC, t.topic, t.partition)):
            for record in batches[tp]:
                if record.offset >= self._next.get((tp.topic, tp.partition), 0):  # else: a re-delivery
                    fresh.append(record)
        return fresh

    async def _refresh(self) -> None:
        """Assign every partition of every topic matching the pattern; seek new ones to the log's position."""
        admin, consumer = self._admin, self._consumer
        if admin is None or consumer is None:  # set by _consume before it calls us
            raise GatewayError(Reason.BUS_UNAVAILABLE, "notary: not connected")
        judging = self._chain.current is not None  # nothing can be judged before a registry version is logged
        wanted: set[TopicPartition] = set(
            await partitions_of(
                admin, lambda t: bool(self._pattern.fullmatch(t)) and (judging or t == REGISTRY_TOPIC)
            )
        )
        names = {tp.topic for tp in wanted}
        if wanted != self._assigned:
            consumer.assign(sorted(wanted, key=lambda t: (t.topic, t.partition)))
            for tp in wanted:
                consumer.seek(tp, self._next.get((tp.topic, tp.partition), 0))
            current = self._chain.current
            predicted = exchange_topics(current.registry, self.schemas) if current is not None else []
            missing = sorted(set(predicted) - set(names))
            _log.info(
                "notary.assigned", topics=len(names), partitions=len(wanted), not_yet_created=len(missing)
            )
            self._assigned = wanted

    async def _append(self, records: Sequence[RecordLike]) -> None:
        snapshot = [ConsumedRecord.of(r) for r in records]
        chain = self._chain.copy()  # kept only once the batch is committed: a retried batch is judged alike
        before = chain.current
        try:
            first, entries = await asyncio.to_thread(self._ingest, snapshot, chain, self.verifier)
        except GatewayError:
            # A failed append may or may not have committed (tiles.TileLog.append): look at the disk again
            # and derive the positions from what it holds, so the retry neither skips nor repeats a record.
            self._next = await asyncio.to_thread(self._resync)
            raise
        for record in snapshot:
            key = (record.topic, record.partition)
            self._next[key] = max(self._next.get(key, 0), record.offset + 1)
        self.appended += len(entries)
        self._in_force(chain)
        if before is None and chain.current is not None:
            self._refresh_due = 0.0  # the first registry version: start logging every topic now
        _log.debug("notary.appended", first=first, count=len(entries), size=first + len(entries))

    def _resync(self) -> dict[tuple[str, int], int]:
        """After a failed append: reopen the log if it closed itself, re-index, recompute the positions."""
        assert self._index is not None  # noqa: S101 - set in start()
        log = self.log
        try:
            log.root_at(log.size)  # raises if the instance is unusable
            log.append([])  # raises TLOG_LOCKED once the log closed itself after a failed reload
        except GatewayError:
            log.close()
            log = TileLog.open(self.config.log_dir, durable=self.config.durable)
            self._log = log
        self._index.sync_with(log)
        return self._index.positions()

    def _ingest(
        self, records: Sequence[ConsumedRecord], chain: RegistryChain, verifier: EventVerifier | None
    ) -> tuple[int, list[bytes]]:
        """Compute the leaves and append them as one atomic batch, then index them (worker thread).

        A registry record is offered to ``chain`` and logged with the chain's verdict; a version it puts in
        force judges every record after it in the batch (and in the log)."""
        assert self._index is not None  # noqa: S101 - set in start()
        leaves = []
        for record in records:
            if record.topic == REGISTRY_TOPIC:
                outcome = chain.update(record.value or b"")
                if outcome.status == "applied" and outcome.version is not None:
                    verifier = EventVerifier(registry=outcome.version.registry, schemas=self.schemas)
                leaves.append(leaf_for_registry_record(record, outcome))
            else:
                leaves.append(leaf_for_record(record, verifier))
        pairs = [(leaf, leaf.encode()) for leaf in leaves]
        entries = [entry for _, entry in pairs]
        first = self.log.append(entries)
        self._index.add(first, pairs)
        return first, entries

    def _due(self) -> bool:
        pending = self.log.size - self.signed_size
        if pending <= 0:
            return False
        elapsed = time.monotonic() - self._last_signed_at
        return pending >= self.config.checkpoint_entries or elapsed >= self.config.checkpoint_interval

    # ---- signing ----------------------------------------------------------------------------------
    def _check_extends(self, previous: Checkpoint) -> tuple[int, bytes]:
        """The log's (size, root), after proving it extends ``previous``; raises CHECKPOINT_INCONSISTENT."""
        log = self.log
        size, root = log.size, log.root()
        if size < previous.size:
            self._refuse(f"log size {size} is below the signed checkpoint size {previous.size}")
        proof = log.consistency_proof(previous.size, size)
        if not verify_consistency(previous.size, size, previous.root_hash, root, proof):
            self._refuse(f"the log at size {size} does not extend the signed checkpoint at {previous.size}")
        return size, root

    def _refuse(self, detail: str) -> None:
        error = GatewayError(Reason.CHECKPOINT_INCONSISTENT, detail)
        self.refused = error
        _log.error("notary.refused", reason=str(error.reason), detail=detail)
        raise error

    async def _sign(self) -> bytes:
        """Sign the current tree head if it grew (after the consistency check); returns the latest note."""
        async with self._sign_lock:
            if self.refused is not None:
                raise self.refused
            latest = self._latest
            if latest is not None and latest.checkpoint.size == self.log.size:
                self._last_signed_at = time.monotonic()
                self.last_signed_wall = time.time()
                return latest.note
            previous = latest.checkpoint if latest is not None else Checkpoint(self.origin, 0, EMPTY_ROOT)
            note = await asyncio.to_thread(self._sign_and_store, previous)
            self._latest = open_checkpoint(note, origin=self.origin, verifiers=[self.signer.verifier()])
            self._last_signed_at = time.monotonic()
            self.last_signed_wall = time.time()
            self._publish_queue.put_nowait(note)
            _log.info("notary.checkpoint", size=self._latest.checkpoint.size, origin=self.origin)
            return note

    def _sign_and_store(self, previous: Checkpoint) -> bytes:
        size, root = self._check_extends(previous)
        note = sign_note(Checkpoint(self.origin, size, root).to_note_body(), [self.signer])
        self.store.save(note, size)  # durable before anyone sees it
        return note

    async def sync(self, timeout: float = 60.0) -> bytes:  # noqa: ASYNC109 - a bound on waiting, by design
        """Wait until everything in the topics *now* is logged and signed; returns that checkpoint note.

        "Everything now": topics are re-listed, their partitions' end offsets are read, and the log must have
        reached every one of them and a poll must come back empty before the checkpoint is signed.
        """
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(waiter)
        return await asyncio.wait_for(waiter, timeout=timeout)

    # ---- cosignatures -------------------------------------------------------------------------------
    async def attach_cosignatures(self, note: bytes) -> bytes:
        """Attach the valid cosignatures by configured cosigners found in ``note`` to the stored checkpoint
        with the same body; returns the updated note. Raises when none is valid or the body is unknown."""
        parsed = Note.parse(note)
        checkpoint = Checkpoint.parse(parsed.text)
        if checkpoint.origin != self.origin:
            raise GatewayError(Reason.CHECKPOINT_ORIGIN_MISMATCH, "not a checkpoint of this notary")
        if not self._cosigners:
            raise GatewayError(Reason.NOTE_UNVERIFIED, "this notary is configured with no cosigners")
        verified = open_note(note, self._cosigners)  # every configured cosigner's line must verify
        async with self._sign_lock:
            stored = await asyncio.to_thread(self.store.get, checkpoint.size)
            if stored is None or Note.parse(stored).text != parsed.text:
                raise GatewayError(
                    Reason.COSIGN_FORK, f"this notary signed no such checkpoint at {checkpoint.size}"
                )
            current = Note.parse(stored)
            have = {(s.name, s.key_id) for s in current.signatures}
            added: list[NoteSignature] = [s for s in verified.verified if (s.name, s.key_id) not in have]
            if not added:
                return stored
            updated = Note(current.text, (*current.signatures, *added)).to_bytes()
            is_latest = self._latest is not None and self._latest.checkpoint.size == checkpoint.size
            await asyncio.to_thread(self.store.save, updated, checkpoint.size, latest=is_latest)
            if is_latest:
                self._latest = open_checkpoint(
                    updated, origin=self.origin, verifiers=[self.signer.verifier()]
                )
            self._publish_queue.put_nowait(updated)
            _log.info("notary.cosigned", size=checkpoint.size, cosigners=[s.name for s in added])
            return updated

    # ---- publishing checkpoints to Kafka -----------------------------------------------------------------
    async def _run_publisher(self) -> None:
        delay = 0.5
        ensured = False
        while True:
            note = await self._publish_queue.get()
            self._publish_idle.clear()
            while True:
                try:
                    if self._producer is None:
                        # assigned before start(): a start that fails is stopped below, never leaked
                        self._producer = AIOKafkaProducer(**self.kafka.producer_kwargs())
                        await self._producer.start()
                    if not ensured:
                        with contextlib.suppress(GatewayError):
                            await ensure_topics(
                                self.kafka.admin_kwargs(), [self.config.checkpoint_topic], 1, 1
                            )
                        ensured = True
                    await self._producer.send_and_wait(
                        self.config.checkpoint_topic, value=note, key=self.origin.encode("utf-8")
                    )
                    delay = 0.5
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - broker down: keep the note, retry with backoff
                    _log.warning("notary.publish_failed", error=type(exc).__name__, retry_in=delay)
                    if self._producer is not None:
                        with contextlib.suppress(Exception):
                            await self._producer.stop()
                        self._producer = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            if self._publish_queue.empty():
                self._publish_idle.set()

    # ---- receipts ---------------------------------------------------------------------------------
    async def receipt(self, event_id: str, source: str | None = None) -> bytes | None:
        """A c2sp.org/tlog-proof@v1 receipt for the first leaf of event ``event_id`` (from ``source``, when
        given) below the latest checkpoint's size, against that checkpoint, with the entry itself in the
        ``extra`` line; None when there is no such leaf (yet)."""
        assert self._index is not None  # noqa: S101 - set in start()
        note = self.latest_checkpoint
        size = Checkpoint.parse(Note.parse(note).text).size
        index = await asyncio.to_thread(self._index.find, event_id, source, size)
        if index is None:
            return None

        def receipt() -> bytes:
            return create_proof(self.log, index, note, extra=self.log.entry(index))

        return await asyncio.to_thread(receipt)

    # ---- stop ---------------------------------------------------------------------------------------
    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounds the drain, by design
        """Stop consuming, sign what was appended, publish pending checkpoints (bounded), close everything."""
        self._stop.set()
        consumer_task = self._tasks[0] if self._tasks else None
        if consumer_task is not None:
            await _finish([consumer_task], timeout)
        if self._log is not None and self.refused is None:
            with contextlib.suppress(GatewayError):
                await self._sign()
        for waiter in [*self._armed, *self._sync_waiters]:
            if not waiter.done():
                waiter.set_exception(GatewayError(Reason.STOPPING, "notary stopped"))
        if len(self._tasks) > 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish_idle.wait(), timeout=min(timeout, 5.0))
            await _finish(self._tasks[1:], 0)
        await self._close_clients()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._runner is not None:
            await stop_ops_server(self._runner)
            self._runner = None
        if self._index is not None:
            self._index.close()
        if self._log is not None:
            self._log.close()
        _log.info("notary.stopped", size=self._log.size if self._log else 0, signed_size=self.signed_size)

    async def _close_clients(self) -> None:
        consumer, admin = self._consumer, self._admin
        self._consumer = self._admin = None
        self._assigned = set()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop in order."""
        async with stop_on_signals() as stop:
            await stop.wait()
        await self.stop()

    async def __aenter__(self) -> Notary:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _finish(tasks: Iterable[asyncio.Task[None]], timeout: float) -> None:  # noqa: ASYNC109 - a bound
    """Wait up to ``timeout`` for ``tasks``; cancel what is left and await it (never leave one behind)."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=max(0.0, timeout))
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError):
                await task
