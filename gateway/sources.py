"""Generic event sources: where an agency's native records enter the gateway to be published.

A :class:`Source` is anything with a ``name`` and an ``async run(publish, stop)`` that turns records into
calls of :class:`PublishFn` until ``stop`` is set. The runtime owns the publish function (validate, seal,
sign, write to the outbox) and the stop event; a source only decides *what* to publish and *when a record is
done*. Agency-specific adapters build on the sources here.

:class:`FileDropSource` is the lowest common denominator every agency can feed: an export job (or an
operator) drops JSON Lines files into ``<directory>/inbox/``. Its guarantees, and why:

* **No half-written files.** Only names that do not start with ``.`` and end with ``.jsonl`` are read. Writers
  must create ``inbox/.<name>.tmp`` and ``rename()`` it to ``inbox/<name>.jsonl`` when complete; a rename
  within one file system is atomic, so the source sees either nothing or the whole file.
* **Nothing published twice under different ids.** Each line's event id is
  ``uuid5(EVENT_ID_NAMESPACE, f"{sha256 of the file}:{line number}")``. A crash (or ``stop``) mid-file leaves
  the file in ``inbox/``; processing it again re-publishes the *same* ids, which the outbox and every
  consumer deduplicate. The same content dropped twice also yields the same ids.
* **Nothing half-published.** A line is either published whole or quarantined whole; a bad line never stops
  the rest of the file. Quarantine reports (``quarantine/<file>.rejected.jsonl``) hold the file name, line
  number, reason code and detail — never the line's content, which may name a victim.
* **Done means done.** Only when every line was published or quarantined is the file renamed into
  ``done/`` (under a unique name), so ``inbox/`` is exactly the work still to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from gateway._json import parse_json
from gateway.canonical import canonical_json
from gateway.envelope import Envelope
from gateway.errors import GatewayError, Reason

__all__ = [
    "DROP_SUFFIX",
    "EVENT_ID_NAMESPACE",
    "FileDropSource",
    "PublishFn",
    "QuarantineFn",
    "Source",
    "drop_event_id",
]

_log = structlog.get_logger(__name__)

#: Namespace of deterministic file-drop event ids, derived as
#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:gateway:file-drop")``. Written out as a literal because
#: changing it would change every id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("65e84f46-c50c-579c-85e3-f33fb744a1fc")
#: Files in ``inbox/`` with this suffix (and not starting with ``.``) are ready to be processed.
DROP_SUFFIX: Final = ".jsonl"
#: ``publish`` refusals about the gateway's state, not the line: the file is retried, not quarantined.
_DEFERRING_REASONS: Final = frozenset({Reason.OUTBOX_FULL, Reason.STOPPING, Reason.BUS_UNAVAILABLE})
_LINE_MEMBERS: Final = frozenset({"type", "data", "recipients", "dataschema"})
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


class PublishFn(Protocol):
    """The runtime's publish function: validate, seal, sign and enqueue one event.

    Raises ``GatewayError`` when the payload is refused (``schema.invalid``, ``authz.*``, ``seal.*``, ...).
    """

    async def __call__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
    ) -> Envelope: ...


class Source(Protocol):
    """Something that produces events. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None: ...


QuarantineFn = Callable[[str, str], None]
"""``on_quarantine(source_name, reason_code)``: called once per quarantined line (the runtime counts them)."""


def _no_quarantine(source_name: str, reason: str) -> None:
    """Default quarantine callback: the report file is the record; nothing else to do."""


def drop_event_id(file_sha256: str, line_number: int) -> str:
    """The event id of line ``line_number`` (1-based) of a drop file whose SHA-256 hex digest is given."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{file_sha256}:{line_number}"))


class _Outcome(enum.Enum):
    DONE = "done"  # every line published or quarantined; file moved to done/
    VANISHED = "vanished"  # the file disappeared from inbox/ while we worked on it
    INTERRUPTED = "interrupted"  # stop was set; file left in inbox/
    DEFERRED = "deferred"  # publish said "not now"; file left in inbox/ for the next poll


@dataclass(frozen=True, slots=True)
class _DropLine:
    """One parsed line of a drop file: the arguments of one publish call."""

    type: str
    data: Mapping[str, Any]
    recipients: tuple[str, ...]
    dataschema: str | None


@dataclass(frozen=True, slots=True)
class _Rejection:
    line: int
    reason: str
    detail: str


def _parse_line(raw: bytes, max_line_bytes: int) -> _DropLine:
    """Parse one JSONL line strictly; ``GatewayError`` names what is wrong, never a value or unknown key."""
    if len(raw) > max_line_bytes:
        raise GatewayError(Reason.SIZE_EXCEEDED, f"line of {len(raw)} bytes exceeds {max_line_bytes}")
    record = parse_json(raw)
    if not isinstance(record, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "line is not a JSON object")
    unknown = set(record) - _LINE_MEMBERS
    if unknown:  # a typo such as "recipient" must not silently drop the recipients; names are not echoed
        raise GatewayError(
            Reason.SCHEMA_INVALID,
            f"line has {len(unknown)} unknown member(s); allowed: {', '.join(sorted(_LINE_MEMBERS))}",
        )
    event_type = record.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise GatewayError(Reason.SCHEMA_INVALID, "line has no 'type' string")
    data = record.get("data")
    if not isinstance(data, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "line has no 'data' object")
    recipients = record.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) and r for r in recipients):
        raise GatewayError(Reason.SCHEMA_INVALID, "'recipients' is not a list of party ids")
    dataschema = record.get("dataschema")
    if dataschema is not None and (not isinstance(dataschema, str) or not dataschema):
        raise GatewayError(Reason.SCHEMA_INVALID, "'dataschema' is not a string")
    return _DropLine(event_type, data, tuple(recipients), dataschema)


def _split_lines(content: bytes) -> list[bytes]:
    """JSON Lines: ``\\n``-separated, a trailing ``\\r`` tolerated, a final newline optional."""
    lines = content.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


class FileDropSource:
    """Publish every line of ``*.jsonl`` files dropped into ``directory/inbox/`` (see the module docstring).

    Layout under ``directory`` (created with mode 0700 when absent; existing directories keep their mode, so
    an export job running as another user may be given group write access to ``inbox/``):

    * ``inbox/``: writers create ``.<name>.tmp`` and rename it to ``<name>.jsonl`` when complete.
      Files are processed in name order, so timestamped names are processed oldest first.
    * ``done/``: completely processed files (renamed; a numeric suffix keeps names unique).
    * ``quarantine/``: ``<done name>.rejected.jsonl`` reports, one JSON object per rejected line:
      ``{"file", "line", "reason", "detail"}``.

    Each line is ``{"type": ..., "data": {...}, "recipients": [...], "dataschema": ...}`` (``recipients``
    and ``dataschema`` optional, nothing else allowed). Blank lines are skipped but still counted, so line
    numbers match what an editor shows.

    A ``GatewayError`` from ``publish`` quarantines the line, except the reasons that describe the gateway
    rather than the line (``outbox.full``, ``gateway.stopping``, ``bus.unavailable``): then the file is left
    in ``inbox/`` and retried from its first line at the next poll (same ids, so nothing is duplicated), and
    later files wait too, which keeps an export's events in order.

    Only one gateway may consume a given directory. Exceptions other than ``GatewayError`` raised by
    ``publish``, and file-system errors other than a file vanishing from ``inbox/``, propagate out of
    :meth:`run`: they are not the record's fault, so the file stays in ``inbox/`` to be processed again (with
    the same event ids) when the source is restarted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "file-drop",
        poll_interval: float = 0.5,
        on_quarantine: QuarantineFn = _no_quarantine,
        max_line_bytes: int = 256 * 1024,
    ) -> None:
        if poll_interval <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, "poll_interval must be positive")
        if max_line_bytes <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, "max_line_bytes must be positive")
        self.name = name
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.max_line_bytes = max_line_bytes
        self._on_quarantine = on_quarantine
        self._skipped: set[str] = set()

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

        ``stop`` is also checked between lines: a file interrupted by it stays in ``inbox/`` and is
        processed again, with the same event ids, on the next start. A ``publish`` call in progress is
        awaited, not cancelled; cancel the task for a harder stop (the file then also stays in ``inbox/``).
        """
        await asyncio.to_thread(self.ensure_directories)
        _log.info("file_drop.started", source=self.name, directory=str(self.directory))
        while not stop.is_set():
            await self.process_pending(publish, stop)
            with contextlib.suppress(TimeoutError):  # the poll interval elapsed: look again
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        _log.info("file_drop.stopped", source=self.name)

    async def process_pending(self, publish: PublishFn, stop: asyncio.Event | None = None) -> int:
        """Process every file ready in ``inbox/`` once; return how many were completed (moved to ``done/``).

        Useful on its own for a one-shot import. Expects :meth:`ensure_directories` to have run.
        """
        completed = 0
        for path in await asyncio.to_thread(self._ready_files):
            outcome = await self._process(path, publish, stop)
            if outcome is _Outcome.DONE:
                completed += 1
            elif outcome in (_Outcome.INTERRUPTED, _Outcome.DEFERRED):
                break  # stopping, or the publisher cannot take events now: later files would fail alike
        return completed

    async def process_file(self, path: Path, publish: PublishFn, stop: asyncio.Event | None = None) -> bool:
        """Publish or quarantine every line of ``path``, then move it to ``done/``.

        Returns False, leaving the file where it is, if the file vanished, ``stop`` was set mid-file, or
        ``publish`` refused with a deferring reason (``outbox.full``, ``gateway.stopping``,
        ``bus.unavailable``): those say "not now", not "not this line", so the file is retried whole (same
        event ids; the lines already committed are ignored by the outbox) instead of being quarantined.
        """
        return await self._process(path, publish, stop) is _Outcome.DONE

    async def _process(self, path: Path, publish: PublishFn, stop: asyncio.Event | None) -> _Outcome:
        if stop is not None and stop.is_set():
            return _Outcome.INTERRUPTED
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # taken away by an operator between listing and reading
            _log.warning("file_drop.file_vanished", source=self.name, file=path.name)
            return _Outcome.VANISHED
        digest = hashlib.sha256(content).hexdigest()
        published = 0
        rejections: list[_Rejection] = []
        for number, raw in enumerate(_split_lines(content), start=1):
            if stop is not None and stop.is_set():
                _log.info("file_drop.file_interrupted", source=self.name, file=path.name, line=number)
                return _Outcome.INTERRUPTED
            if not raw.strip():
                continue
            event_id = drop_event_id(digest, number)
            try:
                line = _parse_line(raw, self.max_line_bytes)
                await publish(
                    line.type,
                    line.data,
                    recipients=line.recipients,
                    dataschema=line.dataschema,
                    event_id=event_id,
                )
            except GatewayError as exc:
                if exc.reason in _DEFERRING_REASONS:
                    _log.warning(
                        "file_drop.file_deferred",
                        source=self.name,
                        file=path.name,
                        line=number,
                        reason=str(exc.reason),
                    )
                    return _Outcome.DEFERRED
                rejections.append(_Rejection(number, str(exc.reason), exc.detail))
                _log.warning(
                    "file_drop.line_rejected",
                    source=self.name,
                    file=path.name,
                    line=number,
                    reason=str(exc.reason),
                    event_id=event_id,
                )
                continue
            published += 1
            _log.debug(
                "file_drop.line_published", source=self.name, file=path.name, line=number, event_id=event_id
            )

        destination = await asyncio.to_thread(self._finish, path, rejections)
        if destination is None:
            _log.warning("file_drop.file_vanished", source=self.name, file=path.name)
            return _Outcome.VANISHED
        for rejection in rejections:
            self._on_quarantine(self.name, rejection.reason)
        _log.info(
            "file_drop.file_done",
            source=self.name,
            file=path.name,
            done=destination.name,
            sha256=digest,
            published=published,
            quarantined=len(rejections),
        )
        return _Outcome.DONE

    # ---- file-system work (run in a thread: none of it may block the event loop) -------------------
    def _ready_files(self) -> list[Path]:
        ready = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(DROP_SUFFIX):
                    continue  # being written (atomic-rename convention) or not ours
                if not entry.is_file(follow_symlinks=False):
                    if entry.name not in self._skipped:  # warn once, not every poll
                        self._skipped.add(entry.name)
                        _log.warning("file_drop.not_a_regular_file", source=self.name, file=entry.name)
                    continue
                ready.append(Path(entry.path))
        return sorted(ready)

    def _finish(self, path: Path, rejections: Sequence[_Rejection]) -> Path | None:
        """Write the quarantine report (if any), then rename ``path`` into ``done/``.

        The report is written first and atomically, so after a crash between the two steps the file is
        processed again and the report is rewritten under the same name (the ``done/`` name it is derived
        from is still free), not duplicated.
        """
        if not path.exists():
            return None
        destination = self._unique_done_name(path.name)
        if rejections:
            report = b"".join(
                canonical_json({"file": path.name, "line": r.line, "reason": r.reason, "detail": r.detail})
                + b"\n"
                for r in rejections
            )
            _write_atomically(self.quarantine / f"{destination.name}.rejected.jsonl", report)
        try:
            path.rename(destination)
        except FileNotFoundError:
            return None
        return destination

    def _unique_done_name(self, name: str) -> Path:
        """``done/<name>``, else ``done/<stem>.<n>.jsonl`` for the smallest free n.

        Check-then-rename is race-free only because one gateway consumes a directory.
        """
        candidate = self.done / name
        stem = name.removesuffix(DROP_SUFFIX)
        counter = 1
        while candidate.exists():
            candidate = self.done / f"{stem}.{counter}{DROP_SUFFIX}"
            counter += 1
        return candidate


def _write_atomically(target: Path, content: bytes) -> None:
    """Write ``.<name>.tmp`` (mode 0600), fsync, rename over ``target``: readers never see a partial file."""
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
