"""Drop folders: the one file-intake mechanism every file source (JSON Lines, Kemensos CSV, IOM HTCDS) uses.

A **drop folder** is the lowest common denominator every agency can feed: an export job (or an operator)
drops files into ``<directory>/inbox/``. :class:`DropFolderSource` is that mechanism, once, for every file
format: the built-in :class:`gateway.runtime.jsonlines.FileDropSource` and the agency adapters' drops
(Kemensos CSV, IOM HTCDS spreadsheets) only say how one file becomes numbered records to publish or reject.
Its guarantees, and why:

* **No half-written files.** Only names that do not start with ``.`` and end with the source's suffix are
  read, and only regular files (not symlinks). Writers must create ``inbox/.<name>.tmp`` and ``rename()`` it
  to ``inbox/<name>`` when complete; a rename within one file system is atomic, so the source sees either
  nothing or the whole file.
* **Nothing published twice under different ids.** Each record's event id is deterministic (for the JSON
  Lines drop ``uuid5(EVENT_ID_NAMESPACE, f"{sha256 of the file}:{line number}")``). A crash (or ``stop``)
  mid-file leaves the file in ``inbox/``; processing it again re-publishes the *same* ids, which the outbox
  and every consumer deduplicate. The same content dropped twice also yields the same ids.
* **Nothing half-published.** A record is either published whole or quarantined whole; a bad record never
  stops the rest of the file. Quarantine reports (``quarantine/<done name>.rejected.jsonl``) say where (file,
  line or row, perhaps the field) and why (a reason code and a detail) — never the record's content, which
  may name a victim.
* **Done means done.** Only when every record was published, skipped or quarantined is the file renamed into
  ``done/`` (under a unique name), so ``inbox/`` is exactly the work still to do.
* **No poison file.** The intake bounds of :mod:`gateway.runtime.intake` apply to every file (size, record
  count, settled before read, names never in clear); records are parsed in a worker thread a chunk at a time;
  whatever a reader raises ends in a quarantine entry, never in a dead source or a file retried for ever.

The built-in JSON Lines format is :mod:`gateway.runtime.jsonlines`; the bounds, :mod:`gateway.runtime.intake`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import enum
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import structlog

from gateway.contract.canonical import canonical_json
from gateway.errors import GatewayError, Reason
from gateway.runtime.intake import MARKER_SUFFIX, FileWatch, IntakeBounds, file_ref
from gateway.runtime.quarantine import explained, text_report
from gateway.runtime.sources import PublishFn, QuarantineFn

__all__ = [
    "PUBLISH_CHUNK",
    "DropEvent",
    "DropFile",
    "DropFolderSource",
    "DropOutcome",
    "DropRecord",
    "DropRejection",
    "DropResult",
    "write_atomically",
]

_log = structlog.get_logger(__name__)

#: ``publish`` refusals about the gateway's state, not the record: the file is retried, not quarantined.
_DEFERRING_REASONS: Final = frozenset(
    {Reason.OUTBOX_FULL, Reason.OUTBOX_UNAVAILABLE, Reason.STOPPING, Reason.BUS_UNAVAILABLE}
    # this gateway's own signing key is not usable at the event time (not registered yet, revoked,
    # expired): the registry or the key file must change, not the record (gateway.contract.sign)
    | {Reason.KEY_UNKNOWN, Reason.KEY_REVOKED, Reason.KEY_EXPIRED, Reason.KEY_NOT_YET_VALID}
)
PUBLISH_CHUNK: Final = 64
#: Seconds between two ``file_progress`` log lines of one large file.
PROGRESS_SECONDS: Final = 10.0
"""Records of one file published concurrently (one group commit in the outbox instead of one each)."""
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


# ---- the drop folder mechanism -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DropEvent:
    """One record of a drop file that is ready to publish: the arguments of one :class:`PublishFn` call.

    ``refusal_field`` names the native field a ``publish`` refusal is about (e.g. the column behind a schema
    path), for the quarantine report; without it the report has no field.
    """

    type: str
    data: Mapping[str, Any]
    event_id: str
    recipients: tuple[str, ...] = ()
    dataschema: str | None = None
    refusal_field: Callable[[GatewayError], str | None] | None = None


@dataclass(frozen=True, slots=True)
class DropRejection:
    """Why a record (or a whole file) is not published: a reason code and value-free words, never content.

    ``field`` is the native field (column) when known, ``problem`` a source's own finer code; ``event_id``
    is logged (a record rejected before it had an id has none).
    """

    reason: str
    detail: str
    field: str | None = None
    problem: str | None = None
    event_id: str | None = None


#: One numbered record of a drop file (line or row number; None: the file as a whole) and what to do with
#: it: publish a :class:`DropEvent`, quarantine a :class:`DropRejection`, or nothing (``None``: skipped, e.g.
#: a row that is not for the exchange).
DropRecord = tuple[int | None, DropEvent | DropRejection | None]


@dataclass(frozen=True, slots=True)
class DropFile:
    """A drop file as its source reads it: its records, in order, and facts for the ``file_done`` log line.

    ``records`` may be lazy (a generator): it is consumed on the event loop between ``publish`` calls, as
    the file is processed, so a large file is not mapped all at once. ``facts`` must hold no values.
    """

    records: Iterable[DropRecord]
    facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class DropOutcome(enum.Enum):
    """What became of one file."""

    DONE = "done"  # every record published, skipped or quarantined; file moved to done/
    VANISHED = "vanished"  # the file disappeared from inbox/ while we worked on it
    INTERRUPTED = "interrupted"  # stop was set; file left in inbox/
    DEFERRED = "deferred"  # publish said "not now"; file left in inbox/ for the next poll


@dataclass
class DropResult:
    """The outcome of one file, with counts (for logs, tests and the sources' own reports)."""

    file: str
    outcome: DropOutcome
    published: int = 0
    skipped: int = 0
    rejections: list[tuple[int | None, DropRejection]] = dataclasses.field(default_factory=list)
    facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.outcome is DropOutcome.DONE


class DropFolderSource(abc.ABC):
    """A source fed through ``directory/inbox/`` (see the module docstring); subclasses read one file.

    Layout under ``directory`` (created with mode 0700 when absent; existing directories keep their mode, so
    an export job running as another user may be given group write access to ``inbox/``):

    * ``inbox/``: writers create ``.<name>.tmp`` and rename it to ``<name><suffix>`` when complete. Files
      are processed in name order, so timestamped names are processed oldest first.
    * ``done/``: completely processed files (renamed; a numeric suffix keeps names unique).
    * ``quarantine/``: ``<done name>.rejected.jsonl`` reports, one JSON object per rejected record, in the
      subclass's :meth:`quarantine_record` shape.

    A ``GatewayError`` from ``publish`` quarantines the record, except the reasons that describe the gateway
    rather than the record (``outbox.full``, ``gateway.stopping``, ``bus.unavailable``): then the file is
    left in ``inbox/`` and retried whole at the next poll (same ids, so nothing is duplicated), and later
    files wait too, which keeps an export's events in order. Records are published in chunks of
    :data:`PUBLISH_CHUNK` concurrent calls (one outbox commit per chunk, not per record); ``stop`` is
    checked between chunks.

    Only one gateway may consume a given directory. Exceptions other than ``GatewayError`` raised by
    ``publish``, and file-system errors other than a file vanishing from ``inbox/``, propagate out of
    :meth:`run`: they are not the record's fault, so the file stays in ``inbox/`` to be processed again (with
    the same event ids) when the source is restarted.

    A subclass sets :attr:`suffixes`, :attr:`ignore_case`, :attr:`log_prefix`, :attr:`record_word` and
    implements :meth:`read_file` and :meth:`quarantine_record`.
    """

    #: The name endings of ready files.
    suffixes: ClassVar[tuple[str, ...]]
    #: Whether ``suffixes`` match regardless of case (spreadsheet exports are named by people and tools).
    ignore_case: ClassVar[bool] = False
    #: Log events are ``<log_prefix>.<what happened>``.
    log_prefix: ClassVar[str]
    #: What a numbered record is called in log events and fields: ``"line"`` or ``"row"``.
    record_word: ClassVar[str]
    #: Records published concurrently (one outbox group commit per chunk); 1 = one at a time.
    publish_chunk: int = PUBLISH_CHUNK

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        poll_interval: float,
        on_quarantine: QuarantineFn | None = None,
        bounds: IntakeBounds | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: poll_interval must be positive")
        self.name = name
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.bounds = bounds or IntakeBounds()
        self._on_quarantine = on_quarantine
        self._skipped: set[str] = set()
        self._watch = FileWatch(self.bounds.settle_seconds, clock)
        self._clock = clock
        self._progress_at: dict[str, float] = {}

    @abc.abstractmethod
    def read_file(self, path: Path) -> DropFile:
        """Read ``path`` and say what each record is (runs in a thread; ``FileNotFoundError`` = vanished).

        Problems of the file as a whole are records too (number None, or the row a format counts them at).
        """

    @abc.abstractmethod
    def quarantine_record(self, file: str, number: int | None, rejection: DropRejection) -> dict[str, Any]:
        """The quarantine report object of one rejection, in the shape this source documents."""

    @property
    def inbox(self) -> Path:
        return self.directory / "inbox"

    @property
    def done(self) -> Path:
        return self.directory / "done"

    @property
    def quarantine(self) -> Path:
        return self.directory / "quarantine"

    def ensure_directories(self) -> None:
        """Create ``directory`` and its ``inbox/``, ``done/``, ``quarantine/`` (mode 0700) if absent."""
        for path in (self.directory, self.inbox, self.done, self.quarantine):
            if not path.is_dir():
                path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                path.chmod(_DIR_MODE)  # mkdir's mode is filtered by the umask; be exact

    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None:
        """Process ready files, then wait ``poll_interval`` (or until ``stop``), until ``stop`` is set.

        ``stop`` is also checked between chunks of records (:data:`PUBLISH_CHUNK`): a file interrupted by it
        stays in ``inbox/`` and is processed again, with the same event ids, on the next start. ``publish``
        calls in progress are awaited, not cancelled; cancel the task for a harder stop (the file then also
        stays in ``inbox/``).
        """
        await asyncio.to_thread(self.ensure_directories)
        _log.info(f"{self.log_prefix}.started", source=self.name, directory=str(self.directory))
        while not stop.is_set():
            await self._process_ready(publish, stop)
            with contextlib.suppress(TimeoutError):  # the poll interval elapsed: look again
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        _log.info(f"{self.log_prefix}.stopped", source=self.name)

    async def _process_ready(self, publish: PublishFn, stop: asyncio.Event | None = None) -> list[DropResult]:
        """Process every file ready in ``inbox/`` once, in name order, until one must wait.

        A file left in ``inbox/`` because of ``stop`` or a deferring refusal ends the round (later files would
        fail alike, and waiting keeps an export's events in order); a vanished file does not. Expects
        :meth:`ensure_directories` to have run.
        """
        results = []
        for path in await asyncio.to_thread(self._ready_files):
            result = await self._process_path(path, publish, stop)
            results.append(result)
            if result.outcome in (DropOutcome.INTERRUPTED, DropOutcome.DEFERRED):
                break
        return results

    async def _process_path(
        self, path: Path, publish: PublishFn, stop: asyncio.Event | None = None
    ) -> DropResult:
        """Publish, skip or quarantine every record of ``path``, then move it to ``done/``.

        The file stays where it is if it vanished, ``stop`` was set mid-file, ``publish`` refused with a
        deferring reason, or the file changed while it was read: those say "not now", not "not this
        record", so the file is retried whole (same event ids; the records already committed are ignored by
        the outbox) instead of being quarantined. Everything else that can go wrong with a file ends in a
        quarantine entry with a reason code and the file in ``done/``: larger than ``max_file_bytes``, more
        records than ``max_records``, unreadable, or a reader that raises part-way (``gateway.internal-error``
        for an exception that is not a :class:`GatewayError`); a poison file never stops the source.
        """
        result = DropResult(file_ref(path.name), DropOutcome.INTERRUPTED)
        if stop is not None and stop.is_set():
            return result
        try:
            before = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return self._vanished(result)
        if before.st_size > self.bounds.max_file_bytes:
            rejection = DropRejection(
                str(Reason.SIZE_EXCEEDED),
                f"file of {before.st_size} bytes exceeds max_file_bytes ({self.bounds.max_file_bytes})",
                problem="file-too-large",
            )
            self._reject(result, None, rejection)
            return await self._done(path, result)
        try:
            drop = await asyncio.to_thread(self.read_file, path)
        except FileNotFoundError:  # taken away by an operator between listing and reading
            return self._vanished(result)
        except Exception as exc:  # noqa: BLE001 - a file a reader cannot open is quarantined, never fatal
            self._reject(result, None, _unreadable(exc, None))
            return await self._done(path, result)
        result.facts = drop.facts
        records = iter(drop.records)
        try:
            outcome = await self._process_records(records, publish, stop, result)
        finally:
            close = getattr(records, "close", None)  # a generator holding a workbook open
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(close)
        if outcome is not None:
            return outcome
        try:
            after = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return self._vanished(result)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            _log.warning(f"{self.log_prefix}.file_changed", source=self.name, file=result.file)
            result.outcome = DropOutcome.DEFERRED  # written to while we read it: read it again once settled
            return result
        return await self._done(path, result)

    async def _process_records(
        self,
        records: Iterator[DropRecord],
        publish: PublishFn,
        stop: asyncio.Event | None,
        result: DropResult,
    ) -> DropResult | None:
        """Every record, parsed in a worker thread a chunk at a time; a result when the file must wait."""
        count = 0
        while True:
            batch, failure = await asyncio.to_thread(_take, records, self.publish_chunk)
            if count + len(batch) > self.bounds.max_records:
                over = batch[self.bounds.max_records - count]
                batch = batch[: self.bounds.max_records - count]
                failure = GatewayError(
                    Reason.SIZE_EXCEEDED,
                    f"more than {self.bounds.max_records} records (max_records): the rest was not read",
                )
                failure.__notes__ = [str(over[0])]
            count += len(batch)
            self._progress(result, count)
            for item in _chunked(batch, self.publish_chunk):
                if isinstance(item, list):  # a run of records to publish
                    if stop is not None and stop.is_set():
                        return self._interrupted(result, item[0][0])
                    if not await self._publish_chunk(item, publish, result):
                        return result
                else:
                    number, rejection = item
                    if rejection is None:  # skipped (e.g. a blank line): counted, not published
                        result.skipped += 1
                    else:
                        self._reject(result, number, rejection)
            if failure is not None:
                number = _failure_position(failure, batch)
                self._reject(result, number, _unreadable(failure, number))
                return None
            if not batch:
                return None

    async def _done(self, path: Path, result: DropResult) -> DropResult:
        """Write the quarantine report, move the file to ``done/``, count and log."""
        destination = await asyncio.to_thread(self._finish, path, result.file, result.rejections)
        if destination is None:
            return self._vanished(result)
        result.outcome = DropOutcome.DONE
        self._progress_at.pop(result.file, None)
        if self._on_quarantine is not None:
            for _, rejection in result.rejections:
                self._on_quarantine(self.name, rejection.reason)
        _log.info(
            f"{self.log_prefix}.file_done", source=self.name, file=result.file,
            published=result.published, skipped=result.skipped, quarantined=len(result.rejections),
            **result.facts,
        )  # fmt: skip
        return result

    async def _publish_chunk(
        self, chunk: Sequence[tuple[int | None, DropEvent]], publish: PublishFn, result: DropResult
    ) -> bool:
        """Publish a run of consecutive records concurrently; False if the file must wait (deferred).

        The calls start in record order; the runtime's publish decides each in call order and commits
        concurrent calls together (one outbox transaction instead of one per record), so the events keep
        the file's order. A deferring refusal holds for the rest of the chunk (see :class:`PublishFn`), so
        what was accepted is a prefix of the deferrable records and the retry continues in order.
        """
        outcomes = await asyncio.gather(
            *(
                publish(
                    record.type, record.data, recipients=record.recipients, dataschema=record.dataschema,
                    event_id=record.event_id,
                )
                for _, record in chunk
            ),
            return_exceptions=True,
        )  # fmt: skip
        deferred: tuple[int | None, GatewayError] | None = None
        for (number, record), outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, GatewayError):
                if outcome.reason in _DEFERRING_REASONS:
                    deferred = deferred or (number, outcome)
                    continue
                field = record.refusal_field(outcome) if record.refusal_field is not None else None
                rejection = DropRejection(
                    str(outcome.reason), outcome.detail, field, "publish-refused", record.event_id
                )
                self._reject(result, number, rejection)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                result.published += 1
                _log.debug(
                    f"{self.log_prefix}.{self.record_word}_published", source=self.name, file=result.file,
                    event_id=record.event_id, **{self.record_word: number},
                )  # fmt: skip
        if deferred is not None:
            number, error = deferred
            _log.warning(
                f"{self.log_prefix}.file_deferred", source=self.name, file=result.file,
                reason=str(error.reason), **{self.record_word: number},
            )  # fmt: skip
            result.outcome = DropOutcome.DEFERRED
            return False
        return True

    def _progress(self, result: DropResult, read: int) -> None:
        """A ``<prefix>.file_progress`` line at most every :data:`PROGRESS_SECONDS` while a large file is
        read (counts only), so an operator watching the logs sees a 20,000-row file advance; ``file_done``
        is the summary line."""
        now = self._clock()
        started = self._progress_at.setdefault(result.file, now)
        if now - started >= PROGRESS_SECONDS:
            self._progress_at[result.file] = now
            _log.info(
                f"{self.log_prefix}.file_progress", source=self.name, file=result.file, read=read,
                published=result.published, skipped=result.skipped, quarantined=len(result.rejections),
            )  # fmt: skip

    def _interrupted(self, result: DropResult, number: int | None) -> DropResult:
        _log.info(
            f"{self.log_prefix}.file_interrupted", source=self.name, file=result.file,
            **{self.record_word: number},
        )  # fmt: skip
        return result

    def _reject(self, result: DropResult, number: int | None, rejection: DropRejection) -> None:
        result.rejections.append((number, rejection))
        extra = {
            key: value
            for key, value in (
                ("field", rejection.field), ("problem", rejection.problem), ("event_id", rejection.event_id)
            )
            if value is not None
        }  # fmt: skip
        _log.warning(
            f"{self.log_prefix}.{self.record_word}_rejected", source=self.name, file=result.file,
            reason=rejection.reason, **{self.record_word: number}, **extra,
        )  # fmt: skip

    def _vanished(self, result: DropResult) -> DropResult:
        _log.warning(f"{self.log_prefix}.file_vanished", source=self.name, file=result.file)
        result.outcome = DropOutcome.VANISHED
        return result

    # ---- file-system work (run in a thread: none of it may block the event loop) -------------------
    def _ready_files(self) -> list[Path]:
        """Regular files with our suffix, settled (:class:`~gateway.runtime.intake.FileWatch`) and, with
        ``ready_marker``, with their ``<name>.ready`` marker beside them; in name order."""
        candidates: dict[str, Any] = {}
        names: set[str] = set()
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                names.add(entry.name)
                ending = entry.name.casefold() if self.ignore_case else entry.name
                if entry.name.startswith(".") or not ending.endswith(self.suffixes):
                    continue  # being written (atomic-rename convention), a marker, or not ours
                if not entry.is_file(follow_symlinks=False):
                    if entry.name not in self._skipped:  # warn once, not every poll
                        self._skipped.add(entry.name)
                        _log.warning(
                            f"{self.log_prefix}.not_a_regular_file",
                            source=self.name,
                            file=file_ref(entry.name),
                        )
                    continue
                try:
                    candidates[entry.name] = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
        settled = self._watch.observe(candidates)
        if self.bounds.ready_marker:
            settled = {name for name in settled if name + MARKER_SUFFIX in names}
        return sorted(self.inbox / name for name in settled)

    def _finish(
        self, path: Path, ref: str, rejections: Sequence[tuple[int | None, DropRejection]]
    ) -> Path | None:
        """Write the quarantine report (if any), then rename ``path`` into ``done/``.

        The report is written first and atomically, so after a crash between the two steps the file is
        processed again and the report is rewritten under the same name (the ``done/`` name it is derived
        from is still free), not duplicated.
        """
        if not path.exists():
            return None
        destination = self._unique_done_name(path.name)
        if rejections:  # for machines (JSON Lines) and for the clerk (text, Indonesian and English)
            report = b"".join(
                canonical_json(explained(self.quarantine_record(ref, number, rejection), rejection)) + b"\n"
                for number, rejection in rejections
            )
            write_atomically(self.quarantine / f"{destination.name}.rejected.jsonl", report)
            text = text_report(ref, self.record_word, rejections)
            write_atomically(self.quarantine / f"{destination.name}.rejected.txt", text.encode("utf-8"))
        try:
            path.rename(destination)
        except FileNotFoundError:
            return None
        if self.bounds.ready_marker:
            path.with_name(path.name + MARKER_SUFFIX).unlink(missing_ok=True)
        return destination

    def _unique_done_name(self, name: str) -> Path:
        """``done/<name>``, else ``done/<stem>.<n><suffix>`` for the smallest free n.

        Check-then-rename is race-free only because one gateway consumes a directory.
        """
        candidate = self.done / name
        stem, suffix = os.path.splitext(name)
        counter = 1
        while candidate.exists():
            candidate = self.done / f"{stem}.{counter}{suffix}"
            counter += 1
        return candidate


def _take(records: Iterator[DropRecord], size: int) -> tuple[list[DropRecord], Exception | None]:
    """Up to ``size`` records from ``records`` (run in a worker thread), and the exception that ended the
    reading early, if the reader raised."""
    batch: list[DropRecord] = []
    try:
        for record in records:
            batch.append(record)
            if len(batch) >= size:
                break
    except Exception as exc:  # noqa: BLE001 - reported as the file's quarantine entry
        return batch, exc
    return batch, None


def _failure_position(failure: Exception, batch: Sequence[DropRecord]) -> int | None:
    """The record number a reading failure is reported at: the record after the last one read."""
    notes = getattr(failure, "__notes__", None)
    if notes and notes[0].isdigit():
        return int(notes[0])
    last = next((number for number, _ in reversed(batch) if number is not None), None)
    return None if last is None else last + 1


def _unreadable(exc: Exception, number: int | None) -> DropRejection:
    """The quarantine entry of a file (or its rest) a reader could not read: a ``GatewayError`` keeps its
    reason and detail; anything else is ``gateway.internal-error`` naming only the exception type (library
    messages can quote the file's content)."""
    if isinstance(exc, GatewayError):
        return DropRejection(str(exc.reason), exc.detail, problem="file-unreadable")
    where = "the file" if number is None else f"the file from record {number} on"
    return DropRejection(
        str(Reason.INTERNAL_ERROR), f"reading {where} raised {type(exc).__name__}", problem="file-unreadable"
    )


def _chunked(
    records: Iterable[DropRecord], size: int
) -> Iterator[list[tuple[int | None, DropEvent]] | tuple[int | None, DropRejection | None]]:
    """``records`` in file order, consecutive records to publish grouped into lists of at most ``size``;
    skipped (None) and rejected records one by one, between the groups."""
    chunk: list[tuple[int | None, DropEvent]] = []
    for number, record in records:
        if isinstance(record, DropEvent):
            chunk.append((number, record))
            if len(chunk) < size:
                continue
        if chunk:
            yield chunk
            chunk = []
        if not isinstance(record, DropEvent):
            yield number, record
    if chunk:
        yield chunk


def write_atomically(target: Path, content: bytes) -> None:
    """Write ``.<name>.tmp`` (mode 0600), fsync, rename over ``target``, fsync the folder.

    A reader (or the next start after a crash) sees the old file or the new one, never half of one; the
    folder fsync makes the rename itself survive a power cut (a quarantine report, an adapter's poll
    cursor). The one atomic writer of the gateway and its adapters (the audit log keeps its own, which
    batches fsyncs).
    """
    temporary = target.with_name(f".{target.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
