"""Record checks in worker processes: the leaves of Kafka records recomputed by a process pool.

Recomputing the leaf a record must have (:func:`gateway.audit.leaf.leaf_for_record`: signature, key
validity, authorisation, schema) is by far the most expensive step of an audit (~0.15 ms of CPU per record,
over a third of it the Ed25519 check) and a pure function of the record, the registry and the schemas. With
``workers > 1`` the :class:`~gateway.audit.auditor.Auditor` hands records (or records-dump lines) to a
:class:`ParallelChecks`, which sends them in chunks of :data:`CHUNK` to a :class:`LeafPool` and gives the
results back chunk by chunk in submission order; the look-ups, the matching and the findings stay in the
auditor's process, so the report is exactly the one of ``workers == 1`` (``docs/AUDIT.md`` section 14.1).
Each worker builds its own leaf evaluator (:mod:`gateway.audit.registry_timeline`: one registry, or the
registry chain replayed along the log) from the auditor's factory and must decide as the auditor's does
(equal fingerprints).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final, NamedTuple

from gateway.audit import merkle
from gateway.audit.leaf import ConsumedRecord, RecordLike
from gateway.audit.records import parse_dump_line
from gateway.audit.registry_timeline import FixedRegistry, LeafEvaluator
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason

CHUNK: Final = 500
"""Records per task of the leaf pool: ~0.1 s of work, ~1.4 MB pickled there, ~0.4 MB back."""


class Expected(NamedTuple):
    """The leaf recomputed from a record: its hash (compared with the logged one) and its entry bytes (to
    name the members that differ when it is not the logged leaf). About 700 bytes: it crosses processes."""

    leaf_hash: bytes
    entry: bytes


def expected_leaf(record: RecordLike, evaluator: LeafEvaluator) -> Expected:
    """Recompute ``record``'s leaf (re-verifying it): the expensive, pure half of a record check."""
    entry = evaluator.leaf(record).encode()
    return Expected(merkle.leaf_hash(entry), entry)


def fixed_evaluator(factory: Callable[[], EventVerifier]) -> LeafEvaluator:
    """A worker's evaluator for one registry (``--registry``), from the auditor's verifier factory."""
    return FixedRegistry(factory())


@dataclass(frozen=True, slots=True)
class Failure:
    """A ``GatewayError`` raised in a worker, carried back as plain values (the exception does not pickle)."""

    reason: str
    detail: str

    @classmethod
    def of(cls, exc: GatewayError) -> Failure:
        return cls(str(exc.reason), exc.detail)

    def error(self) -> GatewayError:
        return GatewayError(Reason(self.reason), self.detail)


Item = ConsumedRecord | tuple[int, bytes]
"""What a worker gets per record: the record, or its records-dump line and line number."""
Result = tuple[list[tuple[str, int, int, Expected]], Failure | None]
"""What a worker returns per chunk: position and recomputed leaf per record, in order, up to a failure."""

_worker_evaluator: LeafEvaluator | Failure | None = None


def start_worker(factory: Callable[[], LeafEvaluator], fingerprint: str) -> None:
    """Pool initializer: build this process's evaluator once, and refuse one that is not the auditor's (a
    registry replaced while the audit started its workers) rather than mix two registries in one report."""
    global _worker_evaluator  # noqa: PLW0603 - one evaluator per worker process, built once
    try:
        evaluator = factory()
    except GatewayError as exc:
        _worker_evaluator = Failure.of(exc)
        return
    if evaluator.fingerprint() != fingerprint:
        _worker_evaluator = Failure(
            str(Reason.CONFIG_INVALID),
            "a worker process loaded another registry or other schemas than the auditor "
            "(changed while the audit was starting?)",
        )
        return
    _worker_evaluator = evaluator


def worker_leaves(source: str, items: list[Item]) -> Result:
    """One task of a worker process: :func:`recompute_leaves` with its evaluator."""
    evaluator = _worker_evaluator
    if evaluator is None or isinstance(evaluator, Failure):
        return [], evaluator or Failure(str(Reason.CONFIG_INVALID), "the worker process has no verifier")
    return recompute_leaves(evaluator, source, items)


def recompute_leaves(evaluator: LeafEvaluator, source: str, items: list[Item]) -> Result:
    """Parse (dump lines) and recompute the leaf of each item, in order, up to the first error."""
    done: list[tuple[str, int, int, Expected]] = []
    try:
        for item in items:
            record = item if isinstance(item, ConsumedRecord) else parse_dump_line(source, *item)
            done.append((record.topic, record.partition, record.offset, expected_leaf(record, evaluator)))
    except GatewayError as exc:
        return done, Failure.of(exc)
    return done, None


class LeafPool:
    """Worker processes recomputing leaves, started with ``spawn``: fresh interpreters that inherit nothing
    but what is passed (never a fork of the auditor, its SQLite connection and threads), on every platform,
    and children of the auditor (their CPU time is in its ``wait4`` accounting)."""

    def __init__(self, factory: Callable[[], LeafEvaluator], fingerprint: str, workers: int) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_worker,
            initargs=(factory, fingerprint),
        )

    def submit(self, source: str, items: list[Item]) -> Future[Result]:
        return self._executor.submit(worker_leaves, source, items)

    def close(self) -> None:
        """Stop the workers; chunks not started yet are dropped (after an error nothing waits for them)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class ParallelChecks:
    """Chunks of records (or dump lines) to a :class:`LeafPool`; results handed to ``check`` (position
    and recomputed leaf, record by record) chunk by chunk in submission order.

    The pool starts with the first full chunk: fewer records than :data:`CHUNK` in all are recomputed in
    this process (with the same function), where starting worker processes would cost more than it saves.
    """

    def __init__(
        self,
        start_pool: Callable[[], LeafPool],
        evaluator: LeafEvaluator,
        check: Callable[[str, int, int, Expected], None],
        *,
        in_flight: int,
    ) -> None:
        self._start_pool = start_pool
        self._pool: LeafPool | None = None
        self._evaluator = evaluator
        self._check = check
        self._limit = in_flight
        self._source = ""
        self._items: list[Item] = []
        self._in_flight: deque[Future[Result]] = deque()

    def add(self, item: Item, source: str = "") -> None:
        """One record, or one line of the records dump ``source`` (for error messages)."""
        self._source = source
        self._items.append(item)
        if len(self._items) >= CHUNK:
            self._submit()

    def finish(self) -> None:
        """Check the last chunk and everything still in flight."""
        if self._items and self._pool is None:
            self._settle(recompute_leaves(self._evaluator, self._source, self._items))
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

    def _settle(self, result: Result) -> None:
        done, failure = result
        for topic, partition, offset, expected in done:
            self._check(topic, partition, offset, expected)
        if failure is not None:
            raise failure.error()
