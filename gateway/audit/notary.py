"""The notary: logs every record of every exchange and dead-letter topic and signs C2SP checkpoints.

Why a separate role: auditors must be able to prove what was exchanged without trusting any gateway's
operator, so one process that can read every topic but open nothing (no sealing key) appends one leaf per
Kafka record (:mod:`gateway.audit.leaf`) to an RFC 6962 tile log (:class:`~gateway.audit.tiles.TileLog`) and
publishes signed checkpoints that other agencies cosign (:mod:`gateway.audit.cosigner`).

Guarantees and how they are kept:

* **No gap, no duplicate, across crashes.** The notary has no consumer group and commits no offsets: its
  position in each (topic, partition) is *derived from the log* — the next offset is one past the highest
  offset any leaf of that partition records. An append is one atomic batch (``TileLog.append``); the
  derived positions are kept in ``index.sqlite`` next to the tiles, which is updated *after* each append
  and brought up to the log's size from the entries themselves at start (so it can lag, be deleted or be
  corrupt: it is rebuilt, never trusted over the log). Records at offsets below a partition's position are
  dropped as re-deliveries. A SIGKILL at any instant therefore resumes exactly after the last committed
  batch.
* **Every topic, including future ones.** Topics are discovered every ``refresh_seconds`` by listing the
  cluster's topics and matching ``topic_pattern`` (default :data:`TOPIC_PATTERN`), which covers every
  party's case/alert topics of every schema major and every dead-letter topic, including those created
  later. Partitions are assigned manually (not ``subscribe(pattern=...)``: a group-less pattern
  subscription re-assigns everything on each metadata change and resets positions, while manual assignment
  plus ``seek`` keeps the position exactly where the log says it is). The topics the registry and schemas
  predict (:func:`gateway.contract.policy.exchange_topics`) are logged when missing, never probed: on Tansu a
  metadata request naming a topic creates it.
* **Never two inconsistent checkpoints.** The last signed checkpoint is kept durably (``checkpoint`` and
  ``checkpoints/<size>`` in the log directory, written before it is published anywhere). Before signing a
  new one the notary proves, from its own log, that the new tree extends it (an RFC 6962 consistency proof,
  verified); on start it checks the log still reproduces it. If either fails it refuses to sign, logs
  ``notary.refused`` and answers 503 on ``/healthz`` (``checkpoint.inconsistent``): someone changed the log
  under it, and signing would publish a fork.
* **Deterministic verdicts.** Each leaf's verdict comes from :func:`~gateway.audit.leaf.leaf_for_record`,
  a pure function of the record, the registry and the schemas, so ``gateway audit verify`` recomputes every
  leaf byte for byte. The registry file is re-read when it changes.

A checkpoint is signed every ``checkpoint.entries`` new entries or ``checkpoint.interval_seconds``, whichever
comes first (and at shutdown), published to Kafka (``xchg.notary.checkpoints.v1``, value = the note bytes,
key = the origin; again with every cosignature attached) and served over HTTP:

* ``GET /checkpoint`` — the latest signed note with the cosignatures collected so far;
* ``GET /checkpoint/<size>`` — an earlier one;
* ``GET /consistency?from=m&to=n`` — an RFC 6962 consistency proof, one base64 hash per line;
* ``GET /proof/<event id>[?source=<party>]`` — a c2sp.org/tlog-proof@v1 receipt for the first leaf of that
  event (the entry itself in the ``extra`` line), against the latest checkpoint;
* ``POST /cosignature`` — a cosigner returns the checkpoint note with its cosignature line appended; the
  notary verifies it against the configured cosigner keys and attaches it;
* ``GET /healthz`` — liveness plus size, signed size and a refusal if any;
* ``GET /tile/...`` — the tlog-tiles files, for any tlog-tiles client.

``gateway notary run --config FILE`` runs it; :class:`Notary` is the in-process API (tests, the demo).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from gateway.audit import _fs
from gateway.audit.checkpoint import Checkpoint, SignedCheckpoint, deployment_origin, open_checkpoint
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, checkpoint_path, checkpoint_size
from gateway.audit.leaf import ConsumedRecord, Leaf, RecordLike, leaf_for_record
from gateway.audit.merkle import EMPTY_ROOT, leaf_hash, verify_consistency
from gateway.audit.note import (
    MAX_NOTE_SIZE,
    Ed25519Signer,
    Note,
    NoteSignature,
    NoteVerifier,
    open_note,
    sign_note,
    verifier_from_vkey,
)
from gateway.audit.proof import create_proof
from gateway.audit.tiles import TileLog
from gateway.bus.admin import ensure_topics
from gateway.bus.kafka import KafkaSettings
from gateway.contract.keys import SigningKey
from gateway.contract.policy import exchange_topics
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason
from gateway.runtime.ops import start_ops_server, stop_ops_server
from gateway.runtime.signals import stop_on_signals
from gateway.settings import load_toml, read_passphrase

__all__ = [
    "CHECKPOINT_TOPIC",
    "TOPIC_PATTERN",
    "CheckpointStore",
    "Notary",
    "NotaryConfig",
]

_log = structlog.get_logger(__name__)

#: Exchange and dead-letter topics of every party and major version.
TOPIC_PATTERN: Final = r"^xchg\..*\.(case|alert|dlq)\.v[0-9]+$"
CHECKPOINT_TOPIC: Final = "xchg.notary.checkpoints.v1"
_INDEX_FILE: Final = "index.sqlite"
_POLL_MS: Final = 300
_QUIET_POLLS: Final = 1  # empty polls, once every partition's end is reached, before a sync is answered


# ---- configuration --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NotaryConfig:
    """``gateway notary run --config FILE`` (TOML); relative paths are resolved against the file's folder.

    See ``docs/AUDIT.md`` section 11 for every key.
    """

    deployment: str
    registry: Path
    log_dir: Path
    key_file: Path
    schemas: Path | None = None
    passphrase_file: Path | None = None
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    cosigners: tuple[str, ...] = ()
    """Verifier keys (vkeys) of the cosigners whose cosignatures the notary attaches to its checkpoints."""
    topic_pattern: str = TOPIC_PATTERN
    checkpoint_topic: str = CHECKPOINT_TOPIC
    checkpoint_entries: int = 1000
    checkpoint_interval: float = 10.0
    batch_size: int = 1000
    refresh_seconds: float = 5.0
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    durable: bool = True

    @property
    def origin(self) -> str:
        return deployment_origin(self.deployment)

    @classmethod
    def load(cls, path: Path) -> NotaryConfig:
        return cls.from_mapping(load_toml(path), base_dir=path.parent)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], *, base_dir: Path) -> NotaryConfig:
        allowed = {
            "deployment", "registry", "schemas", "log_dir", "key_file", "passphrase_file", "kafka",
            "cosigners", "topic_pattern", "checkpoint_topic", "checkpoint", "batch_size", "refresh_seconds",
            "http", "durable",
        }  # fmt: skip
        unknown = sorted(set(document) - allowed)
        if unknown:
            raise _fail(unknown[0], "unknown setting")
        checkpoint = _table(document, "checkpoint")
        http = _table(document, "http")

        def path(name: str, required: bool = True) -> Path | None:
            value = document.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise _fail(name, "a path is required")
            candidate = Path(value).expanduser()
            return candidate if candidate.is_absolute() else base_dir / candidate

        cosigners = document.get("cosigners", [])
        if not isinstance(cosigners, list) or not all(isinstance(v, str) for v in cosigners):
            raise _fail("cosigners", "must be a list of vkey strings")
        for vkey in cosigners:
            verifier_from_vkey(vkey)  # fail at start-up, naming the setting's error
        pattern = document.get("topic_pattern", TOPIC_PATTERN)
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise _fail("topic_pattern", f"not a regular expression: {exc}") from exc
        deployment = document.get("deployment")
        if not isinstance(deployment, str):
            raise _fail(
                "deployment", "a deployment name is required (origin id.trafficking.xchg/notary/<it>)"
            )
        deployment_origin(deployment)
        registry, log_dir, key_file = path("registry"), path("log_dir"), path("key_file")
        if registry is None or log_dir is None or key_file is None:  # unreachable: required=True
            raise _fail("registry", "a path is required")
        return cls(
            deployment=deployment,
            registry=registry,
            log_dir=log_dir,
            key_file=key_file,
            schemas=path("schemas", required=False),
            passphrase_file=path("passphrase_file", required=False),
            kafka=KafkaSettings.from_mapping(_table(document, "kafka"), base_dir=base_dir),
            cosigners=tuple(cosigners),
            topic_pattern=str(pattern),
            checkpoint_topic=str(document.get("checkpoint_topic", CHECKPOINT_TOPIC)),
            checkpoint_entries=_int(checkpoint, "entries", 1000, 1, 10**9, "checkpoint"),
            checkpoint_interval=_float(checkpoint, "interval_seconds", 10.0, "checkpoint"),
            batch_size=_int(document, "batch_size", 1000, 1, 100_000, ""),
            refresh_seconds=_float(document, "refresh_seconds", 5.0, ""),
            http_host=str(http.get("host", "127.0.0.1")),
            http_port=_int(http, "port", 8090, 0, 65535, "http"),
            durable=_bool(document, "durable", True),
        )


def _fail(name: str, message: str) -> GatewayError:
    return GatewayError(Reason.CONFIG_INVALID, f"{name}: {message}")


def _table(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, Mapping):
        raise _fail(name, "must be a table")
    return value


def _int(table: Mapping[str, Any], name: str, default: int, low: int, high: int, where: str) -> int:  # noqa: PLR0917 - a bounds table
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{where}.{name}" if where else name, f"must be an integer in {low}..{high}")
    return value


def _bool(table: Mapping[str, Any], name: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise _fail(name, "must be true or false")
    return value


def _float(table: Mapping[str, Any], name: str, default: float, where: str) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(f"{where}.{name}" if where else name, "must be a positive number")
    return float(value)


# ---- signed checkpoints on disk ---------------------------------------------------------------------------


class CheckpointStore:
    """The notary's signed checkpoints: ``checkpoint`` (latest) and ``checkpoints/<size>`` (all of them).

    Why both: ``checkpoint`` is where tlog-tiles clients look; the history lets an auditor check the log
    against every tree head the notary ever signed, and lets the notary find its last one even if a crash
    left ``checkpoint`` one step behind (both are written by one durable batch, history first). Files are
    replaced atomically and durably, so a reader sees an old or a new note, never a torn one.
    """

    def __init__(
        self, directory: Path, *, origin: str, verifiers: Sequence[NoteVerifier], durable: bool = True
    ):
        self._dir = directory
        self._origin = origin
        self._verifiers = tuple(verifiers)
        self._durable = durable

    def path(self, size: int) -> Path:
        return self._dir / checkpoint_path(size)

    def sizes(self) -> list[int]:
        folder = self._dir / CHECKPOINT_HISTORY
        if not folder.is_dir():
            return []
        return sorted(size for p in folder.iterdir() if (size := checkpoint_size(p.name)) is not None)

    def get(self, size: int) -> bytes | None:
        try:
            return self.path(size).read_bytes()
        except FileNotFoundError:
            return None

    def latest(self) -> SignedCheckpoint | None:
        """The largest checkpoint this notary signed (verified with its key), from the history or
        ``checkpoint``; ``None`` before the first. A note that does not verify raises: it is not ours."""
        candidates = [self._dir / CHECKPOINT_FILE]
        sizes = self.sizes()
        if sizes:
            candidates.append(self.path(sizes[-1]))
        best: SignedCheckpoint | None = None
        for candidate in candidates:
            try:
                note = candidate.read_bytes()
            except FileNotFoundError:
                continue
            signed = open_checkpoint(note, origin=self._origin, verifiers=self._verifiers)
            if best is None or signed.checkpoint.size > best.checkpoint.size:
                best = signed
        return best

    def save(self, note: bytes, size: int, *, latest: bool = True) -> None:
        """Durably write ``note`` as ``checkpoints/<size>`` (and ``checkpoint`` when it is the latest)."""
        files = {self.path(size): note}
        if latest:
            files[self._dir / CHECKPOINT_FILE] = note
        _fs.replace_files(files, durable=self._durable, mode=0o644)


# ---- the derived index: positions and event ids -----------------------------------------------------------


class _Index:
    """``index.sqlite``: for every leaf its index, position and event id. Derived from the log, never ahead
    of it; used to resume (next offset per partition) and to find an event's leaf for ``/proof``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
            "part INTEGER NOT NULL, off INTEGER NOT NULL, event_id TEXT, source TEXT, hash BLOB NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS leaves_event ON leaves (event_id)")
        return db

    def sync_with(self, log: TileLog) -> int:
        """Make the index describe exactly the log's entries; returns how many entries were (re)indexed."""
        with self._lock:
            try:
                return self._sync(log)
            except sqlite3.DatabaseError:
                _log.warning("notary.index_rebuilt", reason="unreadable")
                self._db.close()
                _fs.remove_files([self._path, Path(f"{self._path}-wal"), Path(f"{self._path}-shm")])
                self._db = self._connect()
                return self._sync(log)

    def _sync(self, log: TileLog) -> int:
        size = log.size
        self._db.execute("DELETE FROM leaves WHERE idx >= ?", (size,))
        row = self._db.execute("SELECT idx, hash FROM leaves ORDER BY idx DESC LIMIT 1").fetchone()
        if row is not None and bytes(row[1]) != log.leaf_hash(int(row[0])):
            _log.warning("notary.index_rebuilt", reason="does not match the log")
            self._db.execute("DELETE FROM leaves")
            row = None
        start = 0 if row is None else int(row[0]) + 1
        batch: list[tuple[int, Leaf, bytes]] = []
        for index, entry in enumerate(log.iter_entries(start), start):
            batch.append((index, Leaf.decode(entry), entry))
            if len(batch) >= 1000:
                self._insert(batch)
                batch = []
        self._insert(batch)
        return size - start

    def add(self, first: int, leaves: Sequence[tuple[Leaf, bytes]]) -> None:
        with self._lock:
            self._insert([(index, leaf, entry) for index, (leaf, entry) in enumerate(leaves, first)])

    def _insert(self, batch: Sequence[tuple[int, Leaf, bytes]]) -> None:
        rows = [
            (index, leaf.topic, leaf.partition, leaf.offset, leaf.id, leaf.source, leaf_hash(entry))
            for index, leaf, entry in batch
        ]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO leaves VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to log per (topic, partition): one past the highest offset logged."""
        with self._lock:
            rows = self._db.execute("SELECT topic, part, MAX(off) + 1 FROM leaves GROUP BY topic, part")
            return {(str(t), int(p)): int(n) for t, p, n in rows}

    def find(self, event_id: str, source: str | None, below: int) -> int | None:
        with self._lock:
            if source is None:
                row = self._db.execute(
                    "SELECT MIN(idx) FROM leaves WHERE event_id = ? AND idx < ?", (event_id, below)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT MIN(idx) FROM leaves WHERE event_id = ? AND source = ? AND idx < ?",
                    (event_id, source, below),
                ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---- the notary ------------------------------------------------------------------------------------------


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
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._runner: web.AppRunner | None = None
        self._log: TileLog | None = None
        self._index: _Index | None = None
        self._registry_mtime = 0.0
        self.appended = 0
        """Leaves appended by this process (not counting what the log held at start)."""

    # ---- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        self.schemas = SchemaStore.load(config.schemas)
        self._load_registry()
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
            self._index = _Index(config.log_dir / _INDEX_FILE)
            reindexed = await asyncio.to_thread(self._index.sync_with, log)
            self._next = await asyncio.to_thread(self._index.positions)
            latest = await asyncio.to_thread(self.store.latest)
            self._latest = latest
            if latest is not None:
                await asyncio.to_thread(self._check_extends, latest.checkpoint)  # raises: refuse to start
            else:
                await self._sign()  # the first tree head (empty, or what an earlier run left unsigned)
            app = self._http_app()
            self._runner, self.http_port = await start_ops_server(app, config.http_host, config.http_port)
        except BaseException:
            if self._index is not None:
                self._index.close()
            log.close()
            raise
        self._tasks = [
            asyncio.create_task(self._run_consumer(), name="notary-consumer"),
            asyncio.create_task(self._run_publisher(), name="notary-publisher"),
        ]
        assert self._latest is not None  # noqa: S101 - loaded or signed above
        self._publish_queue.put_nowait(self._latest.note)  # (re)publish: a crash may have come before it
        _log.info("notary.started", origin=self.origin, size=log.size, reindexed=reindexed,
                  signed_size=self._latest.checkpoint.size, partitions=len(self._next),
                  http_port=self.http_port, kafka=self.kafka.redacted())  # fmt: skip

    def _load_registry(self) -> None:
        mtime = self.config.registry.stat().st_mtime if self.config.registry.exists() else 0.0
        registry = Registry.load(self.config.registry)
        self.registry = registry
        self.verifier = EventVerifier(registry=registry, schemas=self.schemas)  # no sealing keys, no party
        self._registry_mtime = mtime

    def _maybe_reload_registry(self) -> None:
        try:
            mtime = self.config.registry.stat().st_mtime
        except OSError:
            return
        if mtime != self._registry_mtime:
            try:
                self._load_registry()
            except GatewayError as exc:
                _log.error("notary.registry_unreadable", reason=str(exc.reason), detail=exc.detail)
                self._registry_mtime = mtime
            else:
                _log.info("notary.registry_reloaded", parties=len(self.registry.parties))

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
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self._consume()
                return
            except asyncio.CancelledError:
                raise
            except GatewayError as exc:
                if exc.reason == Reason.CHECKPOINT_INCONSISTENT:
                    return  # refused: stop appending, keep serving the last good checkpoint
                _log.error("notary.consume_failed", reason=str(exc.reason), detail=exc.detail, retry_in=delay)
            except Exception as exc:  # noqa: BLE001 - broker trouble: reconnect with backoff, never die
                _log.error("notary.consume_failed", error=type(exc).__name__, retry_in=delay)
            await self._close_clients()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        kafka = self.kafka
        consumer_kwargs = kafka.consumer_kwargs(None)
        consumer_kwargs.update(metadata_max_age_ms=int(self.config.refresh_seconds * 1000))
        self._consumer = AIOKafkaConsumer(**consumer_kwargs)
        self._admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
        await self._consumer.start()
        await self._admin.start()
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
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            for record in batches[tp]:
                if record.offset >= self._next.get((tp.topic, tp.partition), 0):  # else: a re-delivery
                    fresh.append(record)
        return fresh

    async def _refresh(self) -> None:
        """Assign every partition of every topic matching the pattern; seek new ones to the log's position."""
        admin, consumer = self._admin, self._consumer
        if admin is None or consumer is None:  # set by _consume before it calls us
            raise GatewayError(Reason.BUS_UNAVAILABLE, "notary: not connected")
        await asyncio.to_thread(self._maybe_reload_registry)
        names = sorted(t for t in await admin.list_topics() if self._pattern.fullmatch(t))
        wanted: set[TopicPartition] = set()
        if names:
            for entry in await admin.describe_topics(names):
                if entry.get("error_code", 0) == 0:
                    wanted.update(TopicPartition(entry["topic"], p["partition"]) for p in entry["partitions"])
        if wanted != self._assigned:
            consumer.assign(sorted(wanted, key=lambda t: (t.topic, t.partition)))
            for tp in wanted:
                consumer.seek(tp, self._next.get((tp.topic, tp.partition), 0))
            missing = sorted(set(exchange_topics(self.registry, self.schemas)) - set(names))
            _log.info(
                "notary.assigned", topics=len(names), partitions=len(wanted), not_yet_created=len(missing)
            )
            self._assigned = wanted

    async def _append(self, records: Sequence[RecordLike]) -> None:
        snapshot = [ConsumedRecord.of(r) for r in records]
        verifier = self.verifier
        try:
            first, entries = await asyncio.to_thread(self._ingest, snapshot, verifier)
        except GatewayError:
            # A failed append may or may not have committed (tiles.TileLog.append): look at the disk again
            # and derive the positions from what it holds, so the retry neither skips nor repeats a record.
            self._next = await asyncio.to_thread(self._resync)
            raise
        for record in snapshot:
            key = (record.topic, record.partition)
            self._next[key] = max(self._next.get(key, 0), record.offset + 1)
        self.appended += len(entries)
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

    def _ingest(self, records: Sequence[ConsumedRecord], verifier: EventVerifier) -> tuple[int, list[bytes]]:
        """Compute the leaves and append them as one atomic batch, then index them (worker thread)."""
        assert self._index is not None  # noqa: S101 - set in start()
        leaves = [leaf_for_record(record, verifier) for record in records]
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
                return latest.note
            previous = latest.checkpoint if latest is not None else Checkpoint(self.origin, 0, EMPTY_ROOT)
            note = await asyncio.to_thread(self._sign_and_store, previous)
            self._latest = open_checkpoint(note, origin=self.origin, verifiers=[self.signer.verifier()])
            self._last_signed_at = time.monotonic()
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

    # ---- HTTP ---------------------------------------------------------------------------------------
    def _http_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_NOTE_SIZE)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/checkpoint", self._get_checkpoint)
        app.router.add_get("/checkpoint/{size:[0-9]+}", self._get_checkpoint_at)
        app.router.add_get("/consistency", self._get_consistency)
        app.router.add_get("/proof/{event_id}", self._get_proof)
        app.router.add_post("/cosignature", self._post_cosignature)
        tiles = self.config.log_dir / "tile"
        tiles.mkdir(parents=True, exist_ok=True)
        app.router.add_static("/tile", tiles, follow_symlinks=False)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        body: dict[str, object] = {
            "status": "refusing" if self.refused else "alive",
            "origin": self.origin,
            "size": self.log.size,
            "signed_size": self.signed_size,
        }
        if self.refused is not None:
            body["reason"] = str(self.refused.reason)
            body["detail"] = self.refused.detail
        return web.json_response(body, status=503 if self.refused else 200, headers=_NO_CACHE)

    async def _get_checkpoint(self, request: web.Request) -> web.Response:
        return _note_response(self.latest_checkpoint)

    async def _get_checkpoint_at(self, request: web.Request) -> web.Response:
        note = await asyncio.to_thread(self.store.get, int(request.match_info["size"]))
        if note is None:
            return _error(404, Reason.PROOF_OUT_OF_RANGE, "no checkpoint of that size")
        return _note_response(note)

    async def _get_consistency(self, request: web.Request) -> web.Response:
        try:
            old, new = int(request.query["from"]), int(request.query["to"])
        except (KeyError, ValueError):
            return _error(400, Reason.PROOF_MALFORMED, "give from=<size>&to=<size> as decimal integers")
        try:
            proof = await asyncio.to_thread(self.log.consistency_proof, old, new)
        except GatewayError as exc:
            return _error(400, exc.reason, exc.detail)
        return web.Response(text="".join(_b64(h) + "\n" for h in proof), headers=_NO_CACHE)

    async def _get_proof(self, request: web.Request) -> web.Response:
        assert self._index is not None  # noqa: S101 - set in start()
        note = self.latest_checkpoint
        size = Checkpoint.parse(Note.parse(note).text).size
        event_id, source = request.match_info["event_id"], request.query.get("source")
        index = await asyncio.to_thread(self._index.find, event_id, source, size)
        if index is None:
            return _error(404, Reason.PROOF_OUT_OF_RANGE, "no such event in a signed checkpoint (yet)")

        def receipt() -> bytes:
            return create_proof(self.log, index, note, extra=self.log.entry(index))

        return _note_response(await asyncio.to_thread(receipt))

    async def _post_cosignature(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            updated = await self.attach_cosignatures(body)
        except GatewayError as exc:
            status = 409 if exc.reason == Reason.COSIGN_FORK else 403
            return _error(status, exc.reason, exc.detail)
        return _note_response(updated)

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


_NO_CACHE: Final = {"Cache-Control": "no-store"}


def _note_response(note: bytes) -> web.Response:
    return web.Response(body=note, content_type="text/plain", charset="utf-8", headers=_NO_CACHE)


def _error(status: int, reason: Reason, detail: str) -> web.Response:
    return web.json_response({"reason": str(reason), "detail": detail}, status=status, headers=_NO_CACHE)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


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
