"""``gateway audit verify``: replay the notary's log, recompute everything, and locate every discrepancy.

Why replay and not trust: the auditor trusts the notary's public key (and, optionally, k of n cosigners),
nothing on the notary's disk and nothing the broker's operator says. So this module

1. reads every signed checkpoint it can find — the log directory's ``checkpoint`` and ``checkpoints/<size>``,
   files the auditor brings (receipts' checkpoints kept by agencies), and the notary's Kafka topic
   ``xchg.notary.checkpoints.v1`` — and verifies each signature (and cosignature quorum);
2. streams the log's entry bundles (C2SP tlog-tiles layout, read directly and tolerantly: a damaged log is a
   finding, not a crash) through a constant-memory :class:`~gateway.audit.merkle.MerkleAccumulator`,
   recomputing every leaf hash (and comparing it with the stored level-0 tile) and the root at every signed
   checkpoint size; two signed checkpoints of one size with different roots are a proven fork;
3. decodes every leaf strictly and checks that each partition's offsets strictly increase (a duplicate or a
   reordering shows exactly where);
4. when Kafka records are available (from the broker, each partition read from its first offset and fetched
   by offset, or from a records dump), recomputes the leaf each record must have — which re-verifies its
   signature, key validity and schema with :class:`gateway.contract.verify.EventVerifier` against the registry
   — and requires it to be byte-identical to the logged one; every record must have its leaf and every leaf
   its record (matched by topic/partition/offset; the data and record digests and the verdict must agree).
   Recomputing a leaf is by far the most expensive step (~0.15 ms of CPU per record, over a third of it the
   Ed25519 check) and a pure function of the record, so with ``workers > 1`` worker processes do it, chunk
   by chunk, while the bookkeeping and the findings stay here, in record order (``record_checks``);
5. checks the upper tile levels against the level below and the ``state`` file's root against the entries.

Every discrepancy becomes a :class:`Finding` with a stable reason code and its exact position (leaf index,
topic/partition/offset, checkpoint size, source file); the report (:class:`AuditReport`) is printed as a
summary and written as JSON. Leaves and record digests are kept in a temporary SQLite file, so memory stays
constant however long the log is.

"The registry as it was at event time": the registry's keys carry ``valid_from``/``valid_until``/
``revoked_at``, and the verifier checks the key at the event's ``time`` with the Kafka record timestamp as
"now" — the same rule the notary applied. A verdict that differs from the logged one therefore means the
registry now says something else about that time (typically a retroactive revocation): reported as
``leaf.verdict-mismatch`` for a human to judge, never silently re-decided.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import multiprocessing
import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

import orjson

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.layout import (
    CHECKPOINT_FILE,
    CHECKPOINT_HISTORY,
    STATE_FILE,
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_prefix,
    checkpoint_size,
    decode_state,
    entries_path,
    split_bundle,
    tile_hashes,
    tile_path,
    tile_root,
)
from gateway.audit.leaf import ConsumedRecord, Leaf, RecordLike, leaf_for_record
from gateway.audit.note import Note, NoteVerifier
from gateway.audit.witness import verify_cosigned
from gateway.bus.kafka import KafkaSettings
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason

__all__ = [
    "REPORT_FORMAT",
    "AuditReport",
    "Auditor",
    "CheckpointStatus",
    "Finding",
    "audit_kafka",
    "read_kafka_records",
    "read_records_dump",
    "write_records_dump",
]

REPORT_FORMAT: Final = "xchg-audit-report/v1"
_HASH: Final = merkle.HASH_SIZE
_FLUSH: Final = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One discrepancy, located as precisely as the evidence allows."""

    reason: Reason
    detail: str
    leaf_index: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    checkpoint_size: int | None = None
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": str(self.reason),
            "detail": self.detail,
            "leaf_index": self.leaf_index,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "checkpoint_size": self.checkpoint_size,
            "source": self.source,
        }

    def where(self) -> str:
        parts = []
        if self.leaf_index is not None:
            parts.append(f"leaf {self.leaf_index}")
        if self.topic is not None:
            parts.append(f"{self.topic}:{self.partition}:{self.offset}")
        if self.checkpoint_size is not None:
            parts.append(f"checkpoint size {self.checkpoint_size}")
        if self.source is not None:
            parts.append(self.source)
        return ", ".join(parts) or "log"


@dataclass(slots=True, kw_only=True)
class CheckpointStatus:
    """One distinct signed tree head (size, root) and what the replay found about it."""

    size: int
    root: bytes
    sources: list[str] = field(default_factory=list)
    cosigned: bool = False
    cosigners: list[str] = field(default_factory=list)
    matches: bool | None = None
    """True: the log reproduces it; False: it does not; None: the log is shorter than its size."""

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "sources": self.sources,
            "matches_log": self.matches,
            "cosigned": self.cosigned,
            "cosigners": self.cosigners,
        }


@dataclass(slots=True, kw_only=True)
class AuditReport:
    """The verdict: what was checked, the signed and cosigned sizes, and every finding."""

    origin: str
    log_dir: str
    log_size: int = 0
    state_size: int | None = None
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: list[CheckpointStatus] = field(default_factory=list)
    quorum: int = 0
    records: dict[str, Any] | None = None
    verdicts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    """Findings beyond the cap, counted per reason."""

    @property
    def ok(self) -> bool:
        return not self.findings and not self.suppressed

    @property
    def signed_size(self) -> int:
        """The largest signed checkpoint size the log reproduces (0 if none)."""
        return max((c.size for c in self.checkpoints if c.matches), default=0)

    @property
    def cosigned_size(self) -> int | None:
        """The largest size reproduced *and* cosigned by the quorum (None when no quorum was asked)."""
        if self.quorum <= 0:
            return None
        return max((c.size for c in self.checkpoints if c.matches and c.cosigned), default=0)

    def count(self, reason: Reason) -> int:
        return sum(1 for f in self.findings if f.reason == reason) + self.suppressed.get(str(reason), 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "ok": self.ok,
            "origin": self.origin,
            "log": self.log_dir,
            "log_size": self.log_size,
            "state_size": self.state_size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "signed_size": self.signed_size,
            "unsigned_entries": max(0, self.log_size - self.signed_size),
            "quorum": self.quorum,
            "cosigned_size": self.cosigned_size,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "records": self.records,
            "verdicts": dict(sorted(self.verdicts.items())),
            "findings": [f.to_json() for f in self.findings],
            "suppressed_findings": self.suppressed,
        }

    def summary(self) -> str:
        lines = [f"audit of {self.log_dir} ({self.origin})"]
        lines.append(
            f"  log: {self.log_size} entries; {len(self.checkpoints)} signed checkpoint(s), "
            f"the log reproduces them up to size {self.signed_size}"
            + (f"; cosigned by {self.quorum}+ up to size {self.cosigned_size}" if self.quorum else "")
        )
        if self.records is None:
            lines.append("  records: not checked (give --bootstrap-servers or --records)")
        else:
            r = self.records
            lines.append(
                f"  records ({r['source']}): {r['read']} read, {r['matched']} matched their leaf, "
                f"{r['pending']} after the log's end tolerated, {r['expired']} leaves past retention"
            )
        accepted = self.verdicts.get("accepted", 0)
        rejected = sum(n for k, n in self.verdicts.items() if k != "accepted")
        lines.append(f"  verdicts: {accepted} accepted, {rejected} rejected")
        if self.ok:
            lines.append("VERDICT: OK - no discrepancy")
        else:
            total = len(self.findings) + sum(self.suppressed.values())
            lines.append(f"VERDICT: FAIL - {total} discrepancy(ies)")
            for finding in self.findings[:50]:
                lines.append(f"  {finding.reason}: {finding.where()}: {finding.detail}")
            if total > 50:
                lines.append(f"  ... and {total - 50} more (see the JSON report)")
        return "\n".join(lines)


class _Progress:
    """A one-line progress indicator on stderr, only when it is a terminal (never in logs or pipes)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream if stream is not None and stream.isatty() else None
        self._last = 0.0
        self._shown = False

    def update(self, label: str, done: int, total: int | None) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{label} [{bar}] {done:,}/{total:,}"
        else:
            text = f"\r{label} {done:,}"
        self._stream.write(text)
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._stream is not None and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


class Auditor:
    """One audit run. Order: checkpoints (``add_checkpoint`` / ``load_stored_checkpoints``), ``scan_log``,
    then optionally ``check_record`` for every Kafka record and ``finish_records``, then ``report``.

    ``notary_keys`` are the notary's note verifiers (more than one across a key rotation); the origin is
    their key name unless given. ``event_verifier`` (registry + schemas, no sealing keys) is needed to check
    records. With ``quorum > 0`` checkpoints count as cosigned only with ``quorum`` of ``cosigners``.
    ``tolerate_lag`` accepts records after a partition's last logged offset (a live notary lags by up to a
    checkpoint interval) and counts them as pending instead of reporting them.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        notary_keys: Sequence[NoteVerifier],
        origin: str | None = None,
        event_verifier: EventVerifier | None = None,
        cosigners: Sequence[NoteVerifier] = (),
        quorum: int = 0,
        tolerate_lag: bool = False,
        max_findings: int = 10_000,
        progress: TextIO | None = None,
        workers: int = 1,
        verifier_factory: Callable[[], EventVerifier] | None = None,
    ) -> None:
        if not notary_keys:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "the notary's verifier key is required")
        self._dir = Path(log_dir)
        self._keys = tuple(notary_keys)
        self._origin = origin or self._keys[0].name
        self._event_verifier = event_verifier
        self._cosigners = tuple(cosigners)
        self._quorum = quorum
        if quorum and not 1 <= quorum <= len(self._cosigners):
            raise GatewayError(
                Reason.NOTE_KEY_INVALID, f"quorum {quorum} of {len(self._cosigners)} cosigners"
            )
        self._tolerate_lag = tolerate_lag
        if workers < 1:
            raise GatewayError(Reason.CONFIG_INVALID, f"workers must be at least 1, not {workers}")
        self._workers = workers
        self._verifier_factory = verifier_factory
        self._max_findings = max_findings
        self._progress = _Progress(progress)
        self.report = AuditReport(origin=self._origin, log_dir=str(self._dir), quorum=quorum)
        self._checkpoints: dict[tuple[int, bytes], CheckpointStatus] = {}
        self._by_size: dict[int, list[CheckpointStatus]] = {}
        """The same statuses by size, in the order they were added (constant-time look-ups in the scan)."""
        self._last_good = 0
        """The largest checkpoint size the scan has reproduced so far (sizes are reached in order)."""
        self._last_offset: dict[tuple[str, int], int] = {}
        self._scanned = False
        self._records: Counter[str] = Counter()
        self._record_source: str | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="xchg-audit-"))
        self._db = sqlite3.connect(self._tmp / "leaves.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE leaves (topic TEXT, part INTEGER, off INTEGER, idx INTEGER, hash BLOB, "
            "record_sha256 TEXT, data_sha256 TEXT, verdict TEXT, matched INTEGER DEFAULT 0, "
            "PRIMARY KEY (topic, part, off)) WITHOUT ROWID"
        )
        self._pending: list[tuple[Any, ...]] = []

    # ---- findings ------------------------------------------------------------------------------------
    def _find(self, reason: Reason, detail: str, **where: Any) -> None:
        if len(self.report.findings) < self._max_findings:
            self.report.findings.append(Finding(reason=reason, detail=detail, **where))
        else:
            key = str(reason)
            self.report.suppressed[key] = self.report.suppressed.get(key, 0) + 1

    # ---- checkpoints ---------------------------------------------------------------------------------
    def load_stored_checkpoints(self) -> None:
        """Every checkpoint note in the log directory (``checkpoint`` and ``checkpoints/<size>``)."""
        latest = self._dir / CHECKPOINT_FILE
        if latest.is_file():
            self.add_checkpoint(latest.read_bytes(), str(latest))
        history = self._dir / CHECKPOINT_HISTORY
        if history.is_dir():
            for path in sorted(history.iterdir(), key=lambda p: (len(p.name), p.name)):
                # only <size> files: a crash may leave a torn "<size>.tmp" that was never a checkpoint
                if path.is_file() and checkpoint_size(path.name) is not None:
                    self.add_checkpoint(path.read_bytes(), str(path))

    def add_checkpoint(self, note: bytes, source: str) -> None:
        """A signed checkpoint from ``source``: verified now, compared with the log during the scan."""
        if self._scanned:
            raise GatewayError(Reason.CONFIG_INVALID, "add checkpoints before scanning the log")
        try:
            signed = open_checkpoint(note, origin=self._origin, verifiers=self._keys)
        except GatewayError as exc:
            self._find(
                exc.reason,
                f"checkpoint rejected: {exc.detail}",
                checkpoint_size=_size_hint(note),
                source=source,
            )
            return
        checkpoint = signed.checkpoint
        key = (checkpoint.size, checkpoint.root_hash)
        status = self._checkpoints.get(key)
        if status is None:
            same_size = self._by_size.setdefault(checkpoint.size, [])
            for other in same_size:  # a distinct root for this size
                self._find(
                    Reason.CHECKPOINT_INCONSISTENT,
                    f"two signed checkpoints of size {other.size} with different roots (a fork signed by the "
                    f"notary; the other one is in {', '.join(other.sources)})",
                    checkpoint_size=other.size,
                    source=source,
                )
            status = CheckpointStatus(size=checkpoint.size, root=checkpoint.root_hash)
            self._checkpoints[key] = status
            same_size.append(status)
        if source not in status.sources:
            status.sources.append(source)
        if self._quorum and not status.cosigned:
            try:
                cosigned = verify_cosigned(
                    note,
                    origin=self._origin,
                    log_verifiers=self._keys,
                    cosigners=self._cosigners,
                    quorum=self._quorum,
                )
            except GatewayError:
                pass  # not (yet) cosigned by the quorum: judged over all checkpoints in report()
            else:
                status.cosigned = True
                status.cosigners = sorted({name for name, _ in cosigned.cosignatures})

    # ---- the log -------------------------------------------------------------------------------------
    def _read_state(self) -> tuple[int, bytes] | None:
        path = self._dir / STATE_FILE
        try:
            data = path.read_bytes()
        except OSError:
            self._find(Reason.TLOG_CORRUPT, "the log has no readable state file", source=str(path))
            return None
        state = decode_state(data)
        if state is None:
            self._find(Reason.TLOG_CORRUPT, "the state file is malformed", source=str(path))
        return state

    def _read_file(self, relative: str) -> bytes | None:
        try:
            return (self._dir / relative).read_bytes()
        except OSError:
            return None

    def _bundle(self, index: int, width: int) -> list[bytes] | None:
        relative = entries_path(index, width)
        data = self._read_file(relative)
        if data is None and width < TILE_WIDTH:  # a partial bundle may be gone once full (tlog-tiles)
            full = self._read_file(entries_path(index))
            if full is not None:
                relative, data = entries_path(index), bundle_prefix(full, width)
        if data is None:
            self._find(
                Reason.TLOG_CORRUPT,
                f"entry bundle {relative} is missing",
                leaf_index=index * TILE_WIDTH,
                source=relative,
            )
            return None
        entries, exact = split_bundle(data, width)
        if not exact:
            self._find(
                Reason.TLOG_CORRUPT,
                f"entry bundle {relative} does not hold exactly {width} length-prefixed entries",
                leaf_index=index * TILE_WIDTH + len(entries),
                source=relative,
            )
            return None
        return entries

    def _tile(self, level: int, index: int, width: int) -> list[bytes] | None:
        relative = tile_path(level, index, width)
        data = self._read_file(relative)
        if data is None and width < TILE_WIDTH:  # same for a partial tile
            full = self._read_file(tile_path(level, index))
            if full is not None and len(full) == TILE_WIDTH * _HASH:
                relative, data = tile_path(level, index), full[: width * _HASH]
        if data is None or len(data) != width * _HASH:
            what = "missing" if data is None else f"{len(data)} bytes, not {width * _HASH}"
            self._find(Reason.TLOG_CORRUPT, f"tile {relative} is {what}", source=relative)
            return None
        return tile_hashes(data)

    def scan_log(self) -> None:
        """Stream the entries: leaf hashes vs level-0 tiles, roots at checkpoint sizes, leaf decoding,
        per-partition offset order; then upper tiles and the state root."""
        self._scanned = True
        report = self.report
        state = self._read_state()
        sizes = self._by_size.keys()
        target = state[0] if state is not None else max(sizes, default=0)
        report.state_size = None if state is None else state[0]
        if 0 in sizes:
            self._check_root(0, merkle.EMPTY_ROOT)
        accumulator = merkle.MerkleAccumulator()
        complete = True
        for bundle_index in range(-(-target // TILE_WIDTH)):
            width = min(TILE_WIDTH, target - bundle_index * TILE_WIDTH)
            entries = self._bundle(bundle_index, width)
            if entries is None:
                complete = False
                break
            tile = self._tile(0, bundle_index, width)
            for position, entry in enumerate(entries):
                index = bundle_index * TILE_WIDTH + position
                value = merkle.leaf_hash(entry)
                if tile is not None and tile[position] != value:
                    self._find(
                        Reason.TLOG_CORRUPT,
                        "the entry does not match its hash in the level-0 tile",
                        leaf_index=index,
                        source=tile_path(0, bundle_index, width),
                    )
                accumulator.append_leaf_hash(value)
                self._leaf(index, entry, value)
                if accumulator.size in sizes:
                    self._check_root(accumulator.size, accumulator.root())
            self._progress.update("verifying log", accumulator.size, target)
        self._flush()
        self._progress.clear()
        report.log_size = accumulator.size
        report.root = accumulator.root()
        for status in self._checkpoints.values():
            if status.size > accumulator.size:
                status.matches = None
                self._find(
                    Reason.CHECKPOINT_BEYOND_LOG,
                    f"signed checkpoint of size {status.size}, but the log "
                    + (
                        f"holds only {accumulator.size} entries"
                        if complete
                        else f"is unreadable after {accumulator.size} entries"
                    )
                    + ": entries were deleted or truncated",
                    checkpoint_size=status.size,
                    source=", ".join(status.sources),
                )
        if state is not None and complete and state[1] != accumulator.root():
            self._find(
                Reason.TLOG_CORRUPT,
                "the state file's root is not the root of the entries",
                source=str(self._dir / STATE_FILE),
            )
        if complete:
            self._check_upper_tiles(accumulator.size)

    def last_offsets(self) -> dict[tuple[str, int], int]:
        """The highest offset logged per (topic, partition) (after :meth:`scan_log`)."""
        return dict(self._last_offset)

    def _check_root(self, size: int, root: bytes) -> None:
        """Compare the signed roots of ``size`` with the log's (called once per size, in increasing order)."""
        last_good = self._last_good
        for status in self._by_size.get(size, ()):
            status.matches = status.root == root
            if status.matches:
                self._last_good = size
                continue
            self._find(
                Reason.CHECKPOINT_ROOT_MISMATCH,
                f"the log's root at size {size} is not the signed one: entries in [{last_good}, {size}) "
                f"differ from what was signed (the last reproduced checkpoint is at size {last_good})",
                checkpoint_size=size,
                source=", ".join(status.sources),
            )

    def _check_upper_tiles(self, size: int) -> None:
        """Each full tile of level L-1, hashed up, must equal its hash in the tile of level L."""
        level = 1
        while size >> (TILE_HEIGHT * level):
            count = size >> (TILE_HEIGHT * level)  # hashes at tile level `level`
            current: tuple[int, list[bytes] | None] = (-1, None)
            for j in range(count):
                below = self._tile(level - 1, j, TILE_WIDTH)
                parent_index = j // TILE_WIDTH
                if current[0] != parent_index:
                    width = TILE_WIDTH if parent_index < count // TILE_WIDTH else count % TILE_WIDTH
                    current = (parent_index, self._tile(level, parent_index, width))
                parent = current[1]
                if below is None or parent is None:
                    continue
                if tile_root(below) != parent[j % TILE_WIDTH]:
                    self._find(
                        Reason.TLOG_CORRUPT,
                        f"tile {tile_path(level - 1, j)} does not hash to its entry in level {level}",
                        leaf_index=j << (TILE_HEIGHT * level),
                        source=tile_path(level, parent_index),
                    )
            level += 1

    def _leaf(self, index: int, entry: bytes, value: bytes) -> None:
        try:
            leaf = Leaf.decode(entry)
        except GatewayError as exc:
            self._find(exc.reason, exc.detail, leaf_index=index)
            return
        verdict = "accepted" if leaf.verdict == "accepted" else str(leaf.reason)
        self.report.verdicts[verdict] = self.report.verdicts.get(verdict, 0) + 1
        key = (leaf.topic, leaf.partition)
        where = {"leaf_index": index, "topic": leaf.topic, "partition": leaf.partition, "offset": leaf.offset}
        last = self._last_offset.get(key)
        if last is not None and leaf.offset <= last:
            self._flush()
            row = self._db.execute(
                "SELECT idx FROM leaves WHERE topic = ? AND part = ? AND off = ?", (*key, leaf.offset)
            ).fetchone()
            if row is not None:
                self._find(Reason.LEAF_DUPLICATE, f"this record was already logged as leaf {row[0]}", **where)
                return
            self._find(
                Reason.LEAF_OUT_OF_ORDER,
                f"offset {leaf.offset} logged after offset {last} of the same partition",
                **where,
            )
        self._last_offset[key] = leaf.offset if last is None else max(last, leaf.offset)
        self._pending.append(
            (
                leaf.topic,
                leaf.partition,
                leaf.offset,
                index,
                value,
                leaf.record_sha256,
                leaf.data_sha256,
                _verdict_text(leaf.verdict, leaf.reason, leaf.kid),
            )
        )
        if len(self._pending) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO leaves (topic, part, off, idx, hash, record_sha256, data_sha256, "
                "verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._pending,
            )
            self._db.execute("COMMIT")
            self._pending = []

    # ---- records ------------------------------------------------------------------------------------
    def check_record(self, record: RecordLike) -> None:
        """Cross-check one Kafka record with its leaf (call after :meth:`scan_log`), in this process."""
        verifier = self._record_verifier()
        claim = self._claim(record.topic, record.partition, record.offset)
        if claim is not None:
            self._resolve(claim, None if claim.row is None else _expected_leaf(record, verifier))

    def check_records(self, records: Iterable[RecordLike]) -> None:
        """Cross-check every record of ``records`` (call after :meth:`scan_log`): what :meth:`check_record`
        on each does, with ``workers > 1`` in worker processes (see :meth:`record_checks`)."""
        with self.record_checks() as check:
            for record in records:
                check(record)

    def check_records_dump(self, path: Path) -> None:
        """Cross-check every record of a records dump (``docs/AUDIT.md`` section 12). With ``workers > 1``
        the workers also parse the lines (about a tenth of the work per record); this process only reads
        them."""
        if self._workers == 1:
            self.check_records(read_records_dump(path))
            return
        with self._parallel_checks() as checks:
            for number, line in _dump_lines(path):
                checks.add((number, line), str(path))

    @contextlib.contextmanager
    def record_checks(self) -> Iterator[Callable[[RecordLike], None]]:
        """A function checking one record at a time (a consumer's callback), settled when the block ends.

        With ``workers == 1`` it is :meth:`check_record`. Otherwise worker processes recompute the leaves
        (the expensive, pure part: signature, key validity, schema) chunk by chunk, at most two chunks per
        worker in flight (memory stays bounded), and this process takes the results chunk by chunk in
        submission order and does the rest exactly as :meth:`check_record` would, record by record: the
        SQLite look-up and "matched" mark, the counters and the findings. The report is therefore the one
        :meth:`check_record` gives. (A record without a leaf has its leaf recomputed for nothing; fewer
        records than one chunk are recomputed here, starting no process.)
        """
        if self._workers == 1:
            self._record_verifier()
            yield self.check_record
            return
        with self._parallel_checks() as checks:
            yield lambda record: checks.add(
                record if isinstance(record, ConsumedRecord) else ConsumedRecord.of(record)
            )

    @contextlib.contextmanager
    def _parallel_checks(self) -> Iterator[_ParallelChecks]:
        verifier = self._record_verifier()
        if self._verifier_factory is None:
            raise GatewayError(
                Reason.CONFIG_INVALID, "checking records in worker processes needs a verifier factory"
            )
        factory, workers = self._verifier_factory, self._workers
        checks = _ParallelChecks(
            lambda: _LeafPool(factory, _verifier_fingerprint(verifier), workers),
            verifier,
            self._check_recomputed,
            in_flight=2 * workers,
        )
        try:
            yield checks
            checks.finish()
        finally:
            checks.close()

    def _record_verifier(self) -> EventVerifier:
        if not self._scanned:
            raise GatewayError(Reason.CONFIG_INVALID, "scan the log before checking records")
        if self._event_verifier is None:
            raise GatewayError(Reason.CONFIG_INVALID, "checking records needs the registry and schemas")
        return self._event_verifier

    def _check_recomputed(self, topic: str, partition: int, offset: int, expected: _Expected) -> None:
        """:meth:`check_record` for a record whose leaf a worker has recomputed."""
        claim = self._claim(topic, partition, offset)
        if claim is not None:
            self._resolve(claim, expected)

    def _claim(self, topic: str, partition: int, offset: int) -> _Claim | None:
        """The bookkeeping half of a record check: count the record, look its leaf up and mark it matched.
        Returns what is left to decide (a finding, or the comparison with the recomputed leaf), or None
        when nothing is (tolerated lag, the same record twice in a dump)."""
        self._records["read"] += 1
        self._progress.update("checking records", self._records["read"], None)
        where = {"topic": topic, "partition": partition, "offset": offset}
        if not self._db.in_transaction:  # one transaction per _FLUSH matches, not one per UPDATE
            self._db.execute("BEGIN")
        row = self._db.execute(
            "SELECT idx, hash, record_sha256, data_sha256, verdict, matched FROM leaves "
            "WHERE topic = ? AND part = ? AND off = ?",
            (topic, partition, offset),
        ).fetchone()
        if row is None:
            last = self._last_offset.get((topic, partition))
            if last is not None and offset < last:
                return _Claim(
                    where, None, f"the log skips this record (it logs this partition up to offset {last})"
                )
            if self._tolerate_lag:
                self._records["pending"] += 1
                return None
            return _Claim(
                where,
                None,
                "after the last logged offset of its partition "
                f"({'none' if last is None else last}): not logged (yet), or cut from the log",
            )
        if row[5]:
            return None  # the same record twice in a dump
        self._db.execute(
            "UPDATE leaves SET matched = 1 WHERE topic = ? AND part = ? AND off = ?",
            (topic, partition, offset),
        )
        self._records["matched"] += 1
        if self._records["matched"] % _FLUSH == 0:
            self._commit()
        return _Claim(where, row, "")

    def _resolve(self, claim: _Claim, expected: _Expected | None) -> None:
        """The deciding half: the finding of a record without a leaf, or the comparison of the stored leaf
        with ``expected``, the leaf recomputed from the record."""
        if claim.row is None:
            self._find(Reason.RECORD_NOT_LOGGED, claim.not_logged, **claim.where)
            return
        if expected is None:
            raise ValueError("a record with a leaf is resolved with its recomputed leaf")
        index, stored_hash, stored_record, stored_data, stored_verdict, _ = claim.row
        if expected.leaf_hash == bytes(stored_hash):
            return
        where = {**claim.where, "leaf_index": int(index)}
        if stored_record != expected.record_sha256 or stored_data != expected.data_sha256:
            self._find(
                Reason.LEAF_RECORD_MISMATCH,
                f"the Kafka record's digest is {expected.record_sha256[:16]}..., the leaf's "
                f"{str(stored_record)[:16]}...: the record was rewritten on the broker or the leaf altered",
                **where,
            )
        elif stored_verdict != expected.verdict:
            self._find(
                Reason.LEAF_VERDICT_MISMATCH,
                f"logged verdict {stored_verdict}, re-verification now gives {expected.verdict} "
                "(registry or schemas changed about that time?)",
                **where,
            )
        else:
            self._find(
                Reason.LEAF_RECORD_MISMATCH,
                "the leaf differs from the one recomputed from the record (attributes, timestamp or "
                "signature material)",
                **where,
            )

    def _commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def finish_records(self, source: str, earliest: Mapping[tuple[str, int], int] | None = None) -> None:
        """Every leaf must have had its record; leaves below a partition's ``earliest`` available offset
        (broker retention) are counted as expired instead."""
        self._commit()
        self._flush()
        self._progress.clear()
        self._record_source = source
        rows = self._db.execute("SELECT idx, topic, part, off FROM leaves WHERE matched = 0 ORDER BY idx")
        for index, topic, partition, offset in rows:
            if earliest is not None and offset < earliest.get((topic, partition), 0):
                self._records["expired"] += 1
                continue
            self._find(
                Reason.LEAF_RECORD_MISSING,
                "no Kafka record at this position: the leaf has no record",
                leaf_index=int(index),
                topic=topic,
                partition=int(partition),
                offset=int(offset),
            )
        self.report.records = {
            "source": source,
            "read": self._records["read"],
            "matched": self._records["matched"],
            "pending": self._records["pending"],
            "expired": self._records["expired"],
        }

    # ---- the verdict --------------------------------------------------------------------------------
    def finish(self) -> AuditReport:
        """The report (checkpoints sorted by size; quorum judged over all checkpoints)."""
        self._flush()
        report = self.report
        report.checkpoints = sorted(self._checkpoints.values(), key=lambda c: (c.size, c.root))
        if not report.checkpoints:
            self._find(Reason.NOTE_UNVERIFIED, "no checkpoint signed by the notary's key was found")
        if self._quorum and not any(c.cosigned and c.matches for c in report.checkpoints):
            latest = max((c.size for c in report.checkpoints), default=None)
            self._find(
                Reason.COSIGN_QUORUM_NOT_MET,
                f"no checkpoint the log reproduces carries {self._quorum} trusted cosignatures",
                checkpoint_size=latest,
            )
        self.close()
        return report

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Auditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _verdict_text(verdict: str, reason: str | None, kid: str | None) -> str:
    return f"accepted by {kid}" if verdict == "accepted" else f"rejected {reason}"


# ---- record checks in worker processes ------------------------------------------------------------------

_CHUNK: Final = 500
"""Records per task of the leaf pool: ~0.1 s of work, ~1.4 MB pickled."""


class _Expected(NamedTuple):
    """What the comparison needs of the leaf recomputed from a record (small: it crosses processes)."""

    leaf_hash: bytes
    record_sha256: str
    data_sha256: str | None
    verdict: str


class _Claim(NamedTuple):
    """A claimed record: where it is, its leaf's row (None: no leaf), why it is not logged (row None)."""

    where: dict[str, Any]
    row: tuple[Any, ...] | None
    not_logged: str


def _expected_leaf(record: RecordLike, verifier: EventVerifier) -> _Expected:
    """Recompute ``record``'s leaf (re-verifying it): the expensive, pure half of a record check."""
    leaf = leaf_for_record(record, verifier)
    verdict = _verdict_text(leaf.verdict, leaf.reason, leaf.kid)
    return _Expected(merkle.leaf_hash(leaf.encode()), leaf.record_sha256, leaf.data_sha256, verdict)


def _verifier_fingerprint(verifier: EventVerifier) -> str:
    """A digest of what a verifier decides with: the registry's parties and keys (validity, revocation),
    the message schemas, the party, the sealing key ids and the limits. Workers build their own verifier
    from the same options; equal fingerprints show it decides as the auditor's does."""
    described = (
        sorted(verifier.registry.parties.items()),
        [(schema.id, schema.raw, schema.wire) for schema in verifier.schemas.schemas()],
        verifier.party,
        sorted(verifier.sealing_keys),
        verifier.limits,
        verifier.max_clock_skew,
    )
    return hashlib.sha256(repr(described).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Failure:
    """A ``GatewayError`` raised in a worker, carried back as plain values (the exception does not pickle)."""

    reason: str
    detail: str

    @classmethod
    def of(cls, exc: GatewayError) -> _Failure:
        return cls(str(exc.reason), exc.detail)

    def error(self) -> GatewayError:
        return GatewayError(Reason(self.reason), self.detail)


_Item = ConsumedRecord | tuple[int, bytes]
"""What a worker gets per record: the record, or its records-dump line and line number."""
_Result = tuple[list[tuple[str, int, int, _Expected]], _Failure | None]
"""What a worker returns per chunk: position and recomputed leaf per record, in order, up to a failure."""

_worker_verifier: EventVerifier | _Failure | None = None


def _start_worker(factory: Callable[[], EventVerifier], fingerprint: str) -> None:
    """Pool initializer: build this process's verifier once, and refuse one that is not the auditor's (a
    registry replaced while the audit started its workers) rather than mix two registries in one report."""
    global _worker_verifier  # noqa: PLW0603 - one verifier per worker process, built once
    try:
        verifier = factory()
    except GatewayError as exc:
        _worker_verifier = _Failure.of(exc)
        return
    if _verifier_fingerprint(verifier) != fingerprint:
        _worker_verifier = _Failure(
            str(Reason.CONFIG_INVALID),
            "a worker process loaded another registry or other schemas than the auditor "
            "(changed while the audit was starting?)",
        )
        return
    _worker_verifier = verifier


def _worker_leaves(source: str, items: list[_Item]) -> _Result:
    """One task of a worker process: :func:`_leaves` with its verifier."""
    verifier = _worker_verifier
    if not isinstance(verifier, EventVerifier):
        return [], verifier or _Failure(str(Reason.CONFIG_INVALID), "the worker process has no verifier")
    return _leaves(verifier, source, items)


def _leaves(verifier: EventVerifier, source: str, items: list[_Item]) -> _Result:
    """Parse (dump lines) and recompute the leaf of each item, in order, up to the first error."""
    done: list[tuple[str, int, int, _Expected]] = []
    try:
        for item in items:
            record = item if isinstance(item, ConsumedRecord) else _dump_record(source, *item)
            done.append((record.topic, record.partition, record.offset, _expected_leaf(record, verifier)))
    except GatewayError as exc:
        return done, _Failure.of(exc)
    return done, None


class _LeafPool:
    """Worker processes recomputing leaves, started with ``spawn``: fresh interpreters that inherit nothing
    but what is passed (never a fork of the auditor, its SQLite connection and threads), on every platform,
    and children of the auditor (their CPU time is in its ``wait4`` accounting)."""

    def __init__(self, factory: Callable[[], EventVerifier], fingerprint: str, workers: int) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(factory, fingerprint),
        )

    def submit(self, source: str, items: list[_Item]) -> Future[_Result]:
        return self._executor.submit(_worker_leaves, source, items)

    def close(self) -> None:
        """Stop the workers; chunks not started yet are dropped (after an error nothing waits for them)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class _ParallelChecks:
    """Chunks of records (or dump lines) to a :class:`_LeafPool`; results handed to ``check`` (position
    and recomputed leaf, record by record) chunk by chunk in submission order.

    The pool starts with the first full chunk: fewer records than :data:`_CHUNK` in all are recomputed in
    this process (with the same function), where starting worker processes would cost more than it saves.
    """

    def __init__(
        self,
        start_pool: Callable[[], _LeafPool],
        verifier: EventVerifier,
        check: Callable[[str, int, int, _Expected], None],
        *,
        in_flight: int,
    ) -> None:
        self._start_pool = start_pool
        self._pool: _LeafPool | None = None
        self._verifier = verifier
        self._check = check
        self._limit = in_flight
        self._source = ""
        self._items: list[_Item] = []
        self._in_flight: deque[Future[_Result]] = deque()

    def add(self, item: _Item, source: str = "") -> None:
        """One record, or one line of the records dump ``source`` (for error messages)."""
        self._source = source
        self._items.append(item)
        if len(self._items) >= _CHUNK:
            self._submit()

    def finish(self) -> None:
        """Check the last chunk and everything still in flight."""
        if self._items and self._pool is None:
            self._settle(_leaves(self._verifier, self._source, self._items))
            self._items = []
        if self._items:
            self._submit()
        while self._in_flight:
            self._settle(self._in_flight.popleft().result())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _submit(self) -> None:
        if self._pool is None:
            self._pool = self._start_pool()
        self._in_flight.append(self._pool.submit(self._source, self._items))
        self._items = []
        while len(self._in_flight) > self._limit:
            self._settle(self._in_flight.popleft().result())

    def _settle(self, result: _Result) -> None:
        done, failure = result
        for topic, partition, offset, expected in done:
            self._check(topic, partition, offset, expected)
        if failure is not None:
            raise failure.error()


def _size_hint(note: bytes) -> int | None:
    """The size an unverified checkpoint claims (only to locate a finding)."""
    with contextlib.suppress(GatewayError, UnicodeDecodeError):
        return Checkpoint.parse(Note.parse(note).text).size
    return None


# ---- records: dump files and the broker -----------------------------------------------------------------


def write_records_dump(path: Path, records: Iterable[RecordLike]) -> int:
    """Write a records dump (JSON Lines, one record per line; ``docs/AUDIT.md`` section 12). It holds the
    records' data bytes — as sensitive as the topics themselves: keep it where the topics may be kept."""
    count = 0
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(ConsumedRecord.of(record).to_json()) + b"\n")
            count += 1
    return count


def read_records_dump(path: Path) -> Iterable[ConsumedRecord]:
    """Stream the records of a dump file (blank lines ignored)."""
    for number, line in _dump_lines(path):
        yield _dump_record(str(path), number, line)


def _dump_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a dump file, numbered from 1."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line


def _dump_record(path: str, number: int, line: bytes) -> ConsumedRecord:
    """One dump line's record; ``GatewayError(CONFIG_INVALID)`` naming the line if it is not JSON."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"{path}:{number}: not JSON") from exc
    return ConsumedRecord.from_json(document)


async def read_kafka_records(
    kafka: KafkaSettings,
    on_record: Callable[[ConsumedRecord], None],
    *,
    pattern: str | None = None,
    topics: Sequence[str] = (),
    at_least: Mapping[tuple[str, int], int] | None = None,
    idle_ms: int = 1000,
) -> dict[tuple[str, int], int]:
    """Read every partition of the matching topics from its first available offset to its end, calling
    ``on_record`` for each record; returns each partition's earliest available offset.

    The end: Tansu's ListOffsets(latest) undercounts multi-record batches (``gateway.sandbox.broker``), so the
    end offset is only a lower bound, raised to ``at_least`` (one past what the log says exists); reading goes
    on until both are reached *and* a fetch of ``idle_ms`` brings nothing. Records are fetched by offset,
    which is correct on every broker. A partition that never reaches ``at_least`` ends after three idle
    fetches (its missing records then show as ``leaf.record-missing``).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - Kafka only when asked
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - same

    compiled = re.compile(pattern) if pattern else None
    admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
    await admin.start()
    try:
        names = sorted(
            t for t in await admin.list_topics() if t in topics or (compiled and compiled.fullmatch(t))
        )
        partitions: list[Any] = []
        if names:
            for entry in await admin.describe_topics(names):
                if entry.get("error_code", 0) == 0:
                    partitions.extend(
                        TopicPartition(entry["topic"], p["partition"]) for p in entry["partitions"]
                    )
    finally:
        await admin.close()
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(None))
    await consumer.start()
    try:
        consumer.assign(partitions)
        earliest = await consumer.beginning_offsets(partitions)
        latest = await consumer.end_offsets(partitions)
        expected = at_least or {}
        targets = {tp: max(latest[tp], expected.get((tp.topic, tp.partition), 0)) for tp in partitions}
        positions = {tp: earliest[tp] for tp in partitions}
        for tp in partitions:
            consumer.seek(tp, earliest[tp])
        idle = 0
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=1000)
            if batch:
                idle = 0
                for tp, records in batch.items():
                    for record in records:
                        on_record(ConsumedRecord.of(record))
                        positions[tp] = record.offset + 1
                continue
            idle += 1
            if all(positions[tp] >= targets[tp] for tp in partitions) or idle >= 3:
                break
        return {(tp.topic, tp.partition): int(earliest[tp]) for tp in partitions}
    finally:
        await consumer.stop()


async def audit_kafka(
    auditor: Auditor,
    kafka: KafkaSettings,
    *,
    pattern: str,
    checkpoint_topic: str | None,
    idle_ms: int = 1000,
) -> AuditReport:
    """A whole audit against a broker: the checkpoints the notary published on ``checkpoint_topic`` (on
    top of those already added to ``auditor``), the log, then every record of every topic matching
    ``pattern`` or named by a leaf. Run inside an event loop (the demo, tests); the CLI wraps it."""
    if checkpoint_topic:
        notes: list[tuple[bytes, str]] = []

        def collect(record: ConsumedRecord) -> None:
            if record.value is not None:
                notes.append((record.value, f"kafka {record.topic}:{record.partition}:{record.offset}"))

        await read_kafka_records(kafka, collect, topics=[checkpoint_topic], idle_ms=idle_ms)
        for note, where in notes:
            auditor.add_checkpoint(note, where)
    auditor.scan_log()
    at_least = {key: last + 1 for key, last in auditor.last_offsets().items()}
    with auditor.record_checks() as check:
        earliest = await read_kafka_records(
            kafka,
            check,
            pattern=pattern,
            topics=sorted({topic for topic, _ in at_least}),
            at_least=at_least,
            idle_ms=idle_ms,
        )
    auditor.finish_records(f"kafka {','.join(kafka.bootstrap_servers)}", earliest)
    return auditor.finish()
