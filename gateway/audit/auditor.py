"""``gateway audit verify``: replay the notary's log, recompute everything, and locate every discrepancy.

Why replay and not trust: the auditor trusts the notary's public key (and, optionally, k of n cosigners),
nothing on the notary's disk and nothing the broker's operator says. So the :class:`Auditor`

1. verifies every signed checkpoint it is given — the log directory's ``checkpoint`` and
   ``checkpoints/<size>``, files the auditor brings (receipts' checkpoints kept by agencies), the notary's
   Kafka topic ``xchg.notary.checkpoints.v1`` (:func:`gateway.audit.kafka_records.audit_kafka`) — and the
   cosignature quorum; two signed checkpoints of one size with different roots are a proven fork;
2. streams the entry bundles (read tolerantly by :mod:`gateway.audit._log_reader`: damage is a finding, not a
   crash) through a constant-memory :class:`~gateway.audit.merkle.MerkleAccumulator`, recomputing every
   leaf hash (compared with the stored level-0 tile) and the root at every signed checkpoint size;
3. decodes every leaf strictly and checks that each partition's offsets strictly increase (a duplicate or a
   reordering shows exactly where);
4. given Kafka records (:mod:`gateway.audit.kafka_records`, or a dump: :mod:`gateway.audit.records`),
   recomputes the leaf each record must have (re-verifying signature, key validity and schema against the
   registry) and requires it byte for byte; every record must have its leaf and every leaf its record.
   With ``workers > 1`` worker processes recompute the leaves (:mod:`gateway.audit._workers`) while the
   bookkeeping and the findings stay here, in record order (:meth:`Auditor.record_checks`);
5. checks the upper tile levels against the level below and the ``state`` file's root against the entries,
   and accounts for every file under ``tile/`` (:mod:`gateway.audit._tile_inventory`: stray files, data
   beyond the tree, leftover partial tiles that are not prefixes of it, partial tiles a signed checkpoint
   needs);
6. never says OK about what no signature covers: entries after the newest signed checkpoint are
   ``log.unsigned-tail`` unless ``allow_unsigned`` tolerates them, a missing ``checkpoint`` file is
   ``log.checkpoint-missing``, a trusted cosigner's failing line is ``cosign.signature-invalid`` whatever
   the quorum (:mod:`gateway.audit._signed_heads`).

Every discrepancy becomes a :class:`~gateway.audit.report.Finding` with a stable reason code and its exact
position (a record that differs from its leaf: every differing leaf member with both values); the
:class:`~gateway.audit.report.AuditReport` is printed as a summary and written as JSON. The leaves' positions
and hashes are kept in a temporary SQLite file, so memory stays constant however long the log is.

"The registry in force at each event's position in the log": the notary logs every registry version it
reads from ``xchg.registry.v1`` and judges the records after it with it. Given the registry anchor and the
registry records (:meth:`Auditor.add_registry_record`), the auditor replays that chain along the log
(:mod:`gateway.audit.registry_timeline`) and re-verifies each record against the version in force at its
leaf; keys also carry ``valid_from``/``valid_until``/``revoked_at``, checked at the event's ``time`` with
the Kafka record timestamp as "now" — the same rule the notary applied. A verdict that differs from the
logged one therefore means the registry says something else about that time than when it was logged
(a retroactive revocation in a later version, or an audit with ``--registry`` instead of the anchor):
reported as ``leaf.verdict-mismatch`` for a human to judge, never silently re-decided.

(Longer than the 600 lines the conventions aim for: the scan, the record bookkeeping and the findings
share the leaves' SQLite table and counters; splitting them would spread one algorithm over modules.)
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

import orjson

from gateway.audit import _workers, merkle
from gateway.audit._log_reader import LogReader
from gateway.audit._signed_heads import SignedHeads
from gateway.audit._tile_inventory import check_tile_files
from gateway.audit.layout import STATE_FILE, TILE_WIDTH, tile_path
from gateway.audit.leaf import ConsumedRecord, Leaf, RecordLike
from gateway.audit.note import NoteVerifier
from gateway.audit.progress import Progress
from gateway.audit.records import dump_lines, read_records_dump
from gateway.audit.registry_timeline import (
    FixedRegistry,
    LeafEvaluator,
    RegistryEpochs,
    RegistryTimeline,
    timeline_from_json,
)
from gateway.audit.report import AuditReport, Difference, Finding, PartyCounts, party_of
from gateway.contract.policy import REGISTRY_TOPIC
from gateway.contract.registry_chain import Anchor
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason

__all__ = ["Auditor"]

_FLUSH: Final = 2000


class Auditor:
    """One audit run. Order: checkpoints (``add_checkpoint`` / ``load_stored_checkpoints``), ``scan_log``,
    then optionally ``check_record`` for every Kafka record and ``finish_records``, then ``finish``.

    ``notary_keys`` are the notary's note verifiers (more than one across a key rotation); the origin is
    their key name unless given. ``event_verifier`` (registry + schemas, no sealing keys) is needed to check
    records. Every line by one of ``cosigners`` must verify; with ``quorum > 0`` checkpoints count as
    cosigned only with ``quorum`` of them. ``allow_unsigned`` tolerates that many entries after the newest
    signed checkpoint (a notary between checkpoints); more are ``log.unsigned-tail``. ``tolerate_lag``
    accepts records after a partition's last logged offset (a live notary lags by up to a checkpoint
    interval) and counts them as pending instead of reporting them. ``clock`` dates the report.
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
        allow_unsigned: int = 0,
        tolerate_lag: bool = False,
        max_findings: int = 10_000,
        progress: TextIO | None = None,
        workers: int = 1,
        verifier_factory: Callable[[], EventVerifier] | None = None,
        registry_anchor: Anchor | None = None,
        schemas_factory: Callable[[], SchemaStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not notary_keys:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "the notary's verifier key is required")
        self._dir = Path(log_dir)
        self._keys = tuple(notary_keys)
        self._origin = origin or self._keys[0].name
        self._event_verifier = event_verifier
        if quorum and not 1 <= quorum <= len(cosigners):
            raise GatewayError(Reason.NOTE_KEY_INVALID, f"quorum {quorum} of {len(cosigners)} cosigners")
        if allow_unsigned < 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"allow_unsigned must be >= 0, not {allow_unsigned}")
        self._tolerate_lag = tolerate_lag
        if workers < 1:
            raise GatewayError(Reason.CONFIG_INVALID, f"workers must be at least 1, not {workers}")
        self._workers = workers
        self._verifier_factory = verifier_factory
        self._anchor = registry_anchor
        self._schemas_factory = schemas_factory
        if registry_anchor is not None and schemas_factory is None:
            raise GatewayError(Reason.CONFIG_INVALID, "auditing against a registry anchor needs the schemas")
        self._epochs = RegistryEpochs()
        self._registry_values: dict[tuple[int, int], bytes | None] = {}
        self._evaluator_built: LeafEvaluator | None = None
        self._schemas: SchemaStore | None = None
        self._max_findings = max_findings
        self._progress = Progress(progress)
        self._files = LogReader(self._dir, self._find)
        self.report = AuditReport(
            origin=self._origin,
            log_dir=str(self._dir),
            quorum=quorum,
            allow_unsigned=allow_unsigned,
            audited_at=int(clock() * 1000),
            notary_keys=[_vkey(key) for key in self._keys],
            cosigner_keys=[_vkey(key) for key in cosigners],
        )
        self._heads = SignedHeads(
            origin=self._origin, notary_keys=self._keys, cosigners=cosigners, quorum=quorum, find=self._find
        )
        self._last_offset: dict[tuple[str, int], int] = {}
        self._parties: dict[str, str | None] = {}
        """Topic -> party (None: not an exchange topic), parsed once per topic."""
        self._scanned = False
        self._records: Counter[str] = Counter()
        self._tmp = Path(tempfile.mkdtemp(prefix="xchg-audit-"))
        self._db = sqlite3.connect(self._tmp / "leaves.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE leaves (topic TEXT, part INTEGER, off INTEGER, idx INTEGER, hash BLOB, "
            "matched INTEGER DEFAULT 0, PRIMARY KEY (topic, part, off)) WITHOUT ROWID"
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
        """Every checkpoint note in the log directory (``checkpoint`` and ``checkpoints/<size>``); a missing
        ``checkpoint`` file is a finding (:meth:`gateway.audit._signed_heads.SignedHeads.load_directory`)."""
        self._before_scan()
        self._heads.load_directory(self._dir)

    def add_checkpoint(self, note: bytes, source: str) -> None:
        """A signed checkpoint from ``source``: verified now, compared with the log during the scan."""
        self._before_scan()
        self._heads.add(note, source)

    def _before_scan(self) -> None:
        if self._scanned:
            raise GatewayError(Reason.CONFIG_INVALID, "add checkpoints before scanning the log")

    # ---- the log -------------------------------------------------------------------------------------
    def scan_log(self) -> None:
        """Stream the entries: leaf hashes vs level-0 tiles, roots at checkpoint sizes, leaf decoding,
        per-partition offset order; then upper tiles, the state root, every file under ``tile/`` and what
        no signed checkpoint covers."""
        self._scanned = True
        report = self.report
        heads = self._heads
        state = self._files.state()
        target = state[0] if state is not None else (heads.newest() or 0)
        report.state_size = None if state is None else state[0]
        if 0 in heads:
            heads.check_root(0, merkle.EMPTY_ROOT)
        accumulator = merkle.MerkleAccumulator()
        complete = True
        for bundle_index in range(-(-target // TILE_WIDTH)):
            width = min(TILE_WIDTH, target - bundle_index * TILE_WIDTH)
            entries = self._files.bundle(bundle_index, width)
            if entries is None:
                complete = False
                break
            tile = self._files.tile(0, bundle_index, width)
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
                if accumulator.size in heads:
                    heads.check_root(accumulator.size, accumulator.root())
            self._progress.update("verifying log", accumulator.size, target)
        self._flush()
        self._progress.clear()
        report.log_size = accumulator.size
        report.root = accumulator.root()
        heads.beyond(accumulator.size, complete=complete)
        if state is not None and complete and state[1] != accumulator.root():
            self._find(
                Reason.TLOG_CORRUPT,
                "the state file's root is not the root of the entries",
                source=str(self._dir / STATE_FILE),
            )
        if complete:
            self._files.check_upper_tiles(accumulator.size)
        reproduced = [status.size for status in heads if status.matches]
        check_tile_files(self._dir, target, reproduced, self._find)
        self._unsigned_tail(accumulator.size)

    def _unsigned_tail(self, size: int) -> None:
        """Entries after the newest valid signed checkpoint: nothing signed speaks of them."""
        newest = self._heads.newest() or 0
        tail = max(0, size - newest)
        self.report.unsigned_tail = tail
        if tail > self.report.allow_unsigned:
            allowed = self.report.allow_unsigned
            self._find(
                Reason.LOG_UNSIGNED_TAIL,
                f"entries [{newest}, {size}) are covered by no signed checkpoint (the newest is of size "
                f"{newest}): the log's own files are their only evidence"
                + (f"; {allowed} were allowed (--allow-unsigned)" if allowed else ""),
                leaf_index=newest,
                checkpoint_size=newest,
            )

    def last_offsets(self) -> dict[tuple[str, int], int]:
        """The highest offset logged per (topic, partition) (after :meth:`scan_log`)."""
        return dict(self._last_offset)

    def _leaf(self, index: int, entry: bytes, value: bytes) -> None:
        try:
            leaf = Leaf.decode(entry)
        except GatewayError as exc:
            self._find(exc.reason, exc.detail, leaf_index=index)
            return
        self._count(leaf)
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
        self._epochs.add(index, leaf.topic, leaf.partition, leaf.offset)
        self._pending.append((leaf.topic, leaf.partition, leaf.offset, index, value))
        if len(self._pending) >= _FLUSH:
            self._flush()

    def _count(self, leaf: Leaf) -> None:
        """The report's tallies: notary verdicts, the period the records span, per-party counts."""
        report = self.report
        verdict = "accepted" if leaf.verdict == "accepted" else str(leaf.reason)
        report.verdicts[verdict] = report.verdicts.get(verdict, 0) + 1
        if report.first_record is None or leaf.timestamp < report.first_record:
            report.first_record = leaf.timestamp
        if report.last_record is None or leaf.timestamp > report.last_record:
            report.last_record = leaf.timestamp
        if leaf.topic not in self._parties:
            self._parties[leaf.topic] = party_of(leaf.topic)
        party = self._parties[leaf.topic] or _OTHER
        counts = report.parties.get(party)
        if counts is None:
            counts = report.parties[party] = PartyCounts()
        if leaf.topic.endswith(".dlq.v1") and party != _OTHER:
            counts.dead_lettered += 1
            return
        counts.published += 1
        if leaf.verdict == "accepted":
            counts.accepted += 1
        else:
            counts.rejected += 1

    def _flush(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO leaves (topic, part, off, idx, hash) VALUES (?, ?, ?, ?, ?)",
                self._pending,
            )
            self._db.execute("COMMIT")
            self._pending = []

    # ---- records ------------------------------------------------------------------------------------
    def add_registry_record(self, record: RecordLike) -> None:
        """A record of the registry topic, given before the records are checked (with a registry anchor,
        :meth:`scan_log` found where the registry versions are in the log; these are their contents)."""
        if record.topic == REGISTRY_TOPIC:
            self._registry_values[(record.partition, record.offset)] = (
                None if record.value is None else bytes(record.value)
            )

    def check_record(self, record: RecordLike) -> None:
        """Cross-check one Kafka record with its leaf (call after :meth:`scan_log`), in this process."""
        evaluator = self._evaluator()
        claim = self._claim(record.topic, record.partition, record.offset)
        if claim is not None:
            self._resolve(claim, None if claim.row is None else _workers.expected_leaf(record, evaluator))

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
            for number, line in dump_lines(path):
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
            self._evaluator()
            yield self.check_record
            return
        with self._parallel_checks() as checks:
            yield lambda record: checks.add(
                record if isinstance(record, ConsumedRecord) else ConsumedRecord.of(record)
            )

    @contextlib.contextmanager
    def _parallel_checks(self) -> Iterator[_workers.ParallelChecks]:
        evaluator = self._evaluator()
        factory: Callable[[], LeafEvaluator]
        if self._anchor is not None:
            assert self._schemas_factory is not None  # noqa: S101 - checked in __init__
            factory = functools.partial(
                timeline_from_json, self._anchor.to_json(), self._schemas_factory, self._epochs.to_json(),
                self._timeline_values(),
            )  # fmt: skip
        elif self._verifier_factory is not None:
            factory = functools.partial(_workers.fixed_evaluator, self._verifier_factory)
        else:
            raise GatewayError(
                Reason.CONFIG_INVALID, "checking records in worker processes needs a verifier factory"
            )
        workers = self._workers
        checks = _workers.ParallelChecks(
            lambda: _workers.LeafPool(factory, evaluator.fingerprint(), workers),
            evaluator,
            self._check_recomputed,
            in_flight=2 * workers,
        )
        try:
            yield checks
            checks.finish()
        finally:
            checks.close()

    def _evaluator(self) -> LeafEvaluator:
        """What recomputes a record's leaf: the registry chain replayed along the log (with an anchor), or
        the one registry given. Built once, after the scan (which found the registry leaves)."""
        if not self._scanned:
            raise GatewayError(Reason.CONFIG_INVALID, "scan the log before checking records")
        if self._evaluator_built is not None:
            return self._evaluator_built
        evaluator: LeafEvaluator
        if self._anchor is not None:
            assert self._schemas_factory is not None  # noqa: S101 - checked in __init__
            timeline = RegistryTimeline(
                self._anchor, self._schemas_factory(), self._epochs, self._timeline_values()
            )
            self.report.registry = {**(self.report.registry or {}), "versions": timeline.versions()}
            evaluator = timeline
        elif self._event_verifier is not None:
            evaluator = FixedRegistry(self._event_verifier)
        else:
            raise GatewayError(Reason.CONFIG_INVALID, "checking records needs the registry and schemas")
        self._evaluator_built = evaluator
        return evaluator

    def _timeline_values(self) -> list[bytes | None]:
        """The registry record of each registry leaf, in log order (None where none was given)."""
        return [self._registry_values.get((p, o)) for _, p, o in self._epochs.registry_leaves]

    def _check_recomputed(self, topic: str, partition: int, offset: int, expected: _workers.Expected) -> None:
        """:meth:`check_record` for a record whose leaf a worker has recomputed."""
        claim = self._claim(topic, partition, offset)
        if claim is not None:
            self._resolve(claim, expected)

    def _claim(self, topic: str, partition: int, offset: int) -> _Claim | None:
        """The bookkeeping half of a record check: count the record, look its leaf up and mark it claimed.
        Returns what is left to decide (a finding, or the comparison with the recomputed leaf), or None
        when nothing is (tolerated lag, the same record twice in a dump)."""
        self._records["read"] += 1
        self._progress.update("checking records", self._records["read"], None)
        where = {"topic": topic, "partition": partition, "offset": offset}
        if not self._db.in_transaction:  # one transaction per _FLUSH matches, not one per UPDATE
            self._db.execute("BEGIN")
        row = self._db.execute(
            "SELECT idx, hash, matched FROM leaves WHERE topic = ? AND part = ? AND off = ?",
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
        if row[2]:
            self._records["repeated"] += 1
            return None  # the same record twice in a dump
        self._db.execute(
            "UPDATE leaves SET matched = 1 WHERE topic = ? AND part = ? AND off = ?",
            (topic, partition, offset),
        )
        self._records["with_leaf"] += 1
        if self._records["with_leaf"] % _FLUSH == 0:
            self._commit()
        return _Claim(where, row, "")

    def _resolve(self, claim: _Claim, expected: _workers.Expected | None) -> None:
        """The deciding half: the finding of a record without a leaf, or the comparison of the stored leaf
        with ``expected``, the leaf recomputed from the record. A difference names every leaf member that
        differs, with both values (the logged leaf is read again from the log: differences are rare)."""
        if claim.row is None:
            self._find(Reason.RECORD_NOT_LOGGED, claim.not_logged, **claim.where)
            return
        if expected is None:
            raise ValueError("a record with a leaf is resolved with its recomputed leaf")
        index, stored_hash, _ = claim.row
        if expected.leaf_hash == bytes(stored_hash):
            return
        where = {**claim.where, "leaf_index": int(index)}
        stored = self._files.entry(int(index), self.report.log_size)
        if stored is None or merkle.leaf_hash(stored) != bytes(stored_hash):
            self._find(
                Reason.LEAF_RECORD_MISMATCH,
                "the leaf differs from the one recomputed from the record (the log changed while it was "
                "audited: the fields cannot be compared)",
                **where,
            )
            return
        differences = _differences(Leaf.decode(stored), Leaf.decode(expected.entry))
        names = [d.field for d in differences]
        if set(names) <= _VERDICT_FIELDS:
            logged, now = (_verdict(Leaf.decode(e)) for e in (stored, expected.entry))
            self._find(
                Reason.LEAF_VERDICT_MISMATCH,
                f"logged verdict {logged}, re-verification now gives {now} "
                "(registry or schemas changed about that time?)",
                differences=differences,
                **where,
            )
            return
        if "record_sha256" in names:
            cause = "the Kafka record is not the logged one (rewritten on the broker, or the leaf altered)"
        elif "data_sha256" in names:
            cause = (
                "the leaf's data digest is not the record's, whose key, headers and value are the logged "
                "ones: the leaf was altered"
            )
        else:
            cause = (
                "the leaf says something else than the record gives: the leaf was altered, or the record's "
                "timestamp changed"
            )
        self._find(
            Reason.LEAF_RECORD_MISMATCH,
            f"{cause}; differs: {', '.join(names)}",
            differences=differences,
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
        self.report.record_source = source
        self.report.record_counts = Counter(
            {key: self._records[key] for key in ("read", "with_leaf", "pending", "expired", "repeated")}
        )

    # ---- the verdict --------------------------------------------------------------------------------
    def finish(self) -> AuditReport:
        """The report (checkpoints sorted by size; quorum judged over all checkpoints)."""
        self._flush()
        report = self.report
        report.checkpoints = self._heads.sorted()
        if not report.checkpoints:
            self._find(Reason.NOTE_UNVERIFIED, "no checkpoint signed by the notary's key was found")
        if report.quorum and not any(c.cosigned and c.matches for c in report.checkpoints):
            latest = max((c.size for c in report.checkpoints), default=None)
            self._find(
                Reason.COSIGN_QUORUM_NOT_MET,
                f"no checkpoint the log reproduces carries {report.quorum} valid trusted cosignatures",
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


class _Claim(NamedTuple):
    """A claimed record: where it is, its leaf's row (None: no leaf), why it is not logged (row None)."""

    where: dict[str, Any]
    row: tuple[Any, ...] | None
    not_logged: str


_OTHER: Final = "*"
"""The per-party bucket of leaves whose topic is not ``xchg.<party>.<kind>.v<N>``."""
_VERDICT_FIELDS: Final = frozenset({"verdict", "reason", "kid"})


def _vkey(key: NoteVerifier) -> str:
    """A verifier's vkey string (``name+keyid+base64``), or its name and key id for another kind."""
    vkey = getattr(key, "vkey", None)
    return str(vkey()) if callable(vkey) else f"{key.name}+{key.key_id:08x}"


def _verdict(leaf: Leaf) -> str:
    return f"accepted by {leaf.kid}" if leaf.verdict == "accepted" else f"rejected {leaf.reason}"


def _differences(logged: Leaf, recomputed: Leaf) -> tuple[Difference, ...]:
    """Every leaf member whose value differs (in :class:`~gateway.audit.leaf.Leaf`'s field order: position,
    digests, attributes, verdict), both values as text."""
    before, after = logged.to_json(), recomputed.to_json()
    return tuple(
        Difference(name, _text(before[name]), _text(after.get(name)))
        for name in before
        if before[name] != after.get(name)
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
