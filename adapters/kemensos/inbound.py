"""Inbound: Kemensos CSV drops (RPTC shelters, Pos Pemulangan return posts) -> exchange events.

Kemensos' systems are spreadsheets and a case register that can export CSV; a drop folder is the interface
every office can run today. The folder convention is :class:`gateway.sources.FileDropSource`'s, for the same
reasons (see its docstring): writers create ``inbox/.<name>.tmp`` and rename it to ``inbox/<name>.csv``
when complete (atomic); each row's event id is ``uuid5(NAMESPACE, "<sha256 of the file>:<row>")``, so a
file processed again after a crash or dropped twice re-publishes the *same* ids, which the outbox and every
consumer deduplicate; a row is one event, published whole or quarantined whole; only when every row is
done does the file move to ``done/``.

What is different from the JSON Lines drop, and why:

* **One file kind per file, by file-name prefix** (``penerimaan_``, ``keluar_``/``kepulangan_``,
  ``kapasitas_``, ``kedatangan_``, ``rujukan_``; the mapping file decides). An export job already writes
  one sheet per register, and the prefix is visible to the operator who drops the file.
* **Columns are checked against the mapping, not just read.** A column the mapping neither maps nor lists
  under ``ignore`` quarantines the rows: it is usually a renamed column whose data would otherwise be
  silently dropped. Its *name* is not reported (only its position): a file exported without its header
  row has a person's name where a column name should be.
* **Row problems are named by column.** ``quarantine/<file>.rejected.jsonl`` holds one object per bad row:
  ``{"file", "row", "field" (the column, or null), "reason" (a gateway reason code), "problem", "detail"}``.
  Never a value: the rows are about trafficked people. Logs carry the same minus the detail.
* **Rows are numbered like a spreadsheet**: the header is row 1, the first record row 2 (blank lines
  count, so the number matches the line an editor shows unless a quoted cell spans lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import enum
import hashlib
import io
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Final

import structlog

from adapters.kemensos.mapping import (
    Column,
    FileKind,
    Inbound,
    KemensosMapping,
    UnknownCode,
    normalise_header,
)
from gateway.canonical import canonical_json
from gateway.errors import GatewayError, Reason
from gateway.sources import PublishFn, QuarantineFn

__all__ = [
    "DROP_SUFFIX",
    "EVENT_ID_NAMESPACE",
    "CsvDropSource",
    "MappedRow",
    "RowError",
    "RowMapper",
    "csv_event_id",
    "suppress_count",
    "write_drop",
]

_log = structlog.get_logger(__name__)

#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:adapter:kemensos-csv")``, written out: changing it would change
#: every event id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("496cfa35-de3f-529f-a178-518545252c62")
DROP_SUFFIX: Final = ".csv"
#: ``publish`` refusals about the gateway's state, not the row: the file is retried, not quarantined.
_DEFERRING: Final = frozenset({Reason.OUTBOX_FULL, Reason.STOPPING, Reason.BUS_UNAVAILABLE})
_SMALL_CELL: Final = 11
_SUPPRESSED: Final = "<11"
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_PHONE_RE: Final = re.compile(r"^\+[1-9][0-9]{1,14}$")
_PHONE_JUNK_RE: Final = re.compile(r"[\s().-]")
_SCHEMA_PATH_RE: Final = re.compile(r"\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)")
_REQUIRED_RE: Final = re.compile(r"required property '([A-Za-z_][A-Za-z0-9_]*)' missing")
_SURROGATE_RE: Final = re.compile("[\udc80-\udcff]")
_TEMPLATE_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def csv_event_id(file_sha256: str, row: int) -> str:
    """The event id of spreadsheet row ``row`` of a drop file whose SHA-256 hex digest is given."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{file_sha256}:{row}"))


def suppress_count(count: int) -> int | str:
    """Small-cell suppression for counts of persons in alerts: 0 and >= 11 as they are, 1..10 as ``"<11"``.

    The alert schemas refuse an exact 1..10 (a small group can be singled out); quarantining the row instead
    would lose the alert, so the adapter publishes the suppressed form the schema asks for.
    """
    if count < 0:
        raise ValueError("negative count")
    return count if count == 0 or count >= _SMALL_CELL else _SUPPRESSED


class RowError(GatewayError):
    """A row cannot become an event. ``field`` is the column (or None); nothing here holds a value."""

    def __init__(self, reason: Reason, field: str | None, problem: str, detail: str) -> None:
        super().__init__(reason, f"{field or '-'}: {problem}: {detail}")
        self.field = field
        self.problem = problem
        self.explanation = detail


@dataclass(frozen=True, slots=True)
class MappedRow:
    """The arguments of one publish call."""

    type: str
    data: dict[str, Any]
    recipients: tuple[str, ...]
    dataschema: str | None


@dataclass(frozen=True, slots=True)
class _Header:
    """The columns of one file, checked against its kind: position -> column spec (None = ignored)."""

    columns: tuple[Column | None, ...]
    problem: RowError | None


class RowMapper:
    """Turns the cells of one row of one file kind into a :class:`MappedRow`. Pure: no I/O, no clock."""

    def __init__(self, mapping: KemensosMapping) -> None:
        self.mapping = mapping
        self.inbound: Inbound = mapping.inbound

    def header(self, kind: FileKind, names: Sequence[str]) -> _Header:
        """Check a header row. A problem is reported on every row (the file as a whole is wrong)."""
        seen: set[str] = set()
        columns: list[Column | None] = []
        problem: RowError | None = None
        for position, raw in enumerate(names, start=1):
            name = normalise_header(raw)
            known = name in kind.columns or name in kind.ignore
            if not known:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, None, "unknown-column",
                    f"column {position} is neither mapped nor ignored for {kind.name} files",
                )  # fmt: skip
            elif name in seen:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, name, "duplicate-column", "the column appears twice in the header"
                )
            seen.add(name)
            columns.append(kind.columns.get(name))
        for column in kind.columns.values():
            if column.required and column.name not in seen:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, column.name, "missing-column", "required column not in the header"
                )
        return _Header(tuple(columns), problem)

    def row(self, kind: FileKind, header: _Header, cells: Sequence[str]) -> MappedRow:
        """Map one row; raises :class:`RowError` naming the column on the first problem."""
        if header.problem is not None:
            raise header.problem
        if len(cells) > len(header.columns):
            raise RowError(Reason.SCHEMA_INVALID, None, "extra-cells", "more cells than the header")
        data: dict[str, Any] = {}
        recipients: list[str] = []
        present: set[str] = set()
        for position, column in enumerate(header.columns):
            if column is None:
                continue  # an ignored column: deliberately never read
            if position >= len(cells):
                raise RowError(
                    Reason.SCHEMA_INVALID, column.name, "missing-cells", "fewer cells than the header"
                )
            text = cells[position]
            if _SURROGATE_RE.search(text):
                raise RowError(Reason.PARSE_UTF8, column.name, "invalid-utf8", "the cell is not valid UTF-8")
            if not text.strip():
                continue
            present.add(column.name)
            value = self._value(column, text)
            if column.recipient:
                recipients.extend(value if isinstance(value, list) else [value])
            if column.field is not None and not column.omits(value):
                _assign(data, column.field, value)
        for column in kind.columns.values():
            if column.required and column.name not in present:
                raise RowError(Reason.SCHEMA_INVALID, column.name, "missing-value", "required value is empty")
        for path, constant in kind.constants.items():
            _assign(data, path, constant)
        for derivation in kind.derive:
            if _lookup(data, derivation.field) is not None:
                continue
            if derivation.template is not None:
                value = _render(derivation.template, data)
                if value is not None:
                    _assign(data, derivation.field, value)
            elif derivation.difference is not None:
                left, right = (_lookup(data, p) for p in derivation.difference)
                if isinstance(left, int) and isinstance(right, int):
                    _assign(data, derivation.field, max(0, left - right))
        if not recipients and kind.recipients_from_case_id and isinstance(data.get("case_id"), str):
            referrer = self.inbound.referrer(data["case_id"])
            if referrer is not None:
                recipients.append(referrer)
        return MappedRow(kind.type, data, tuple(dict.fromkeys(recipients)), kind.dataschema)

    # ---- value conversion -------------------------------------------------------------------------------
    def _value(self, column: Column, text: str) -> Any:
        if not column.many:
            return self._one(column, text)
        items: list[Any] = []
        for part in text.split(self.inbound.list_separator):
            if part.strip():
                value = self._one(column, part)
                if value not in items:  # multiselects are sets (uniqueItems)
                    items.append(value)
        return items

    def _one(self, column: Column, text: str) -> Any:
        if column.code is not None:
            try:
                return self.mapping.codes[column.code].lookup(text)
            except UnknownCode as exc:
                raise RowError(
                    Reason.SCHEMA_INVALID, column.name, "unknown-code", f"not in code list {exc.code_list!r}"
                ) from None
        value = text.strip()
        convert = column.convert
        if convert == "text":
            return value
        if convert == "id":
            return value.upper()
        if convert == "date":
            return self._date(column, value)
        if convert == "datetime":
            return self._datetime(column, value)
        if convert in ("integer", "count"):
            if value == _SUPPRESSED and convert == "count":
                return _SUPPRESSED
            if not value.isascii() or not value.isdigit():
                raise RowError(
                    Reason.SCHEMA_INVALID, column.name, f"invalid-{convert}", "expected a whole number >= 0"
                )
            number = int(value)
            return suppress_count(number) if convert == "count" else number
        if convert == "phone":
            return _phone(column, value)
        if convert == "name":
            parts = value.split()
            name: dict[str, str] = {"prs_FirstName": parts[0]}
            if len(parts) > 1:
                name["prs_SecondName"] = " ".join(parts[1:])
            return name
        raise AssertionError(convert)  # pragma: no cover - load_mapping accepts only CONVERSIONS

    def _date(self, column: Column, value: str) -> str:
        for pattern in self.inbound.date_formats:
            with contextlib.suppress(ValueError):
                return datetime.strptime(value, pattern).date().isoformat()
        raise RowError(
            Reason.SCHEMA_INVALID, column.name, "invalid-date",
            f"expected a date as {' or '.join(self.inbound.date_formats)}",
        )  # fmt: skip

    def _datetime(self, column: Column, value: str) -> str:
        zone: tzinfo = self.inbound.timezone
        for pattern in self.inbound.datetime_formats:
            try:
                parsed = datetime.strptime(value, pattern)  # naive means local: zone added below
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=zone)
            return parsed.isoformat(timespec="seconds").replace("+00:00", "Z")
        raise RowError(
            Reason.SCHEMA_INVALID, column.name, "invalid-datetime",
            f"expected a date and time as {' or '.join(self.inbound.datetime_formats)}",
        )  # fmt: skip


def _phone(column: Column, value: str) -> str:
    """E.164 from what people type: ``0812 ...`` (Indonesian national) -> ``+62812...``; ``00`` -> ``+``."""
    digits = _PHONE_JUNK_RE.sub("", value)
    if digits.startswith("00"):
        digits = f"+{digits[2:]}"
    elif digits.startswith("0"):
        digits = f"+62{digits[1:]}"
    elif digits.startswith("62"):
        digits = f"+{digits}"
    if not _PHONE_RE.match(digits):
        raise RowError(Reason.SCHEMA_INVALID, column.name, "invalid-phone", "expected a phone number (E.164)")
    return digits


def _assign(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, creating objects; an object value is merged (``nama`` fills ``identity``)."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    leaf = parts[-1]
    existing = node.get(leaf)
    if isinstance(value, Mapping) and isinstance(existing, dict):
        existing.update(value)
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _render(template: str, data: Mapping[str, Any]) -> str | None:
    values = {}
    for name in _TEMPLATE_RE.findall(template):
        value = _lookup(data, name)
        if not isinstance(value, str | int) or isinstance(value, bool):
            return None  # the template's input is missing: leave the field out, the schema will say why
        values[name] = str(value)
    return _TEMPLATE_RE.sub(lambda m: values[m[1]], template).upper()


def _schema_field(kind: FileKind, detail: str) -> str | None:
    """The column behind the first error in a ``schema.invalid`` detail, e.g. ``$.admitted_at: pattern ...``
    or ``$.child: required property 'is_minor' missing`` (-> the column mapped to ``child.is_minor``)."""
    first = detail.split("; ", 1)[0]
    match = _SCHEMA_PATH_RE.match(first)
    if match is None:
        return None
    parts = [p for p in re.split(r"\.|\[\d+\]", match[1]) if p]
    required = _REQUIRED_RE.search(first)
    if required is not None:
        parts.append(required[1])
    return kind.column_for(".".join(parts)) if parts else None


# ---- the drop folder ---------------------------------------------------------------------------------


class _Outcome(enum.Enum):
    DONE = "done"
    VANISHED = "vanished"
    INTERRUPTED = "interrupted"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class _Rejection:
    row: int | None
    field: str | None
    reason: str
    problem: str
    detail: str

    def report(self, file_name: str) -> dict[str, Any]:
        return {
            "file": file_name, "row": self.row, "field": self.field, "reason": self.reason,
            "problem": self.problem, "detail": self.detail,
        }  # fmt: skip


@dataclass
class _FileJob:
    """One file being processed: what its rows need to know, and what became of them."""

    name: str
    kind: FileKind
    digest: str
    published: int = 0
    rejections: list[_Rejection] = field(default_factory=list)


class CsvDropSource:
    """Publish every row of ``*.csv`` files dropped into ``directory/inbox/`` (see the module docstring).

    Layout under ``directory`` (created 0700 when absent): ``inbox/`` (writers rename complete files in),
    ``done/`` (processed files; a numeric suffix keeps names unique), ``quarantine/`` (``<done name>
    .rejected.jsonl`` reports). Files are processed in name order. A file whose name matches no kind is
    reported as one rejection (``schema.unknown``) and moved to ``done/``, so ``inbox/`` stays "work to do".

    ``publish`` refusals ``outbox.full``, ``gateway.stopping`` and ``bus.unavailable`` leave the file in
    ``inbox/`` for the next poll (same ids); any other ``GatewayError`` quarantines the row. Only one gateway
    may consume a directory.
    """

    def __init__(
        self,
        directory: Path,
        mapping: KemensosMapping,
        *,
        name: str = "kemensos-csv",
        poll_interval: float = 1.0,
        on_quarantine: QuarantineFn | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: poll_interval must be positive")
        self.name = name
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.mapper = RowMapper(mapping)
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
        for path in (self.directory, self.inbox, self.done, self.quarantine):
            if not path.is_dir():
                path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                path.chmod(_DIR_MODE)

    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None:
        """Process ready files, then wait ``poll_interval`` (or until ``stop``), until ``stop`` is set."""
        await asyncio.to_thread(self.ensure_directories)
        _log.info("kemensos_csv.started", source=self.name, directory=str(self.directory))
        while not stop.is_set():
            await self.process_pending(publish, stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        _log.info("kemensos_csv.stopped", source=self.name)

    async def process_pending(self, publish: PublishFn, stop: asyncio.Event | None = None) -> int:
        """Process every ready file once; return how many were moved to ``done/``."""
        completed = 0
        for path in await asyncio.to_thread(self._ready_files):
            outcome = await self._process(path, publish, stop)
            if outcome is _Outcome.DONE:
                completed += 1
            elif outcome in (_Outcome.INTERRUPTED, _Outcome.DEFERRED):
                break  # later files would fail alike, and waiting keeps an export's events in order
        return completed

    async def _process(self, path: Path, publish: PublishFn, stop: asyncio.Event | None) -> _Outcome:
        if stop is not None and stop.is_set():
            return _Outcome.INTERRUPTED
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            _log.warning("kemensos_csv.file_vanished", source=self.name, file=path.name)
            return _Outcome.VANISHED
        digest = hashlib.sha256(content).hexdigest()
        kind = self.mapper.inbound.kind_of(path.name)
        rejections: list[_Rejection] = []
        published = 0
        if kind is None:
            rejections.append(
                _Rejection(None, None, str(Reason.SCHEMA_UNKNOWN), "unknown-file-kind",
                           "the file name matches no kind's prefix in the mapping"),
            )  # fmt: skip
            _log.warning("kemensos_csv.unknown_file_kind", source=self.name, file=path.name)
        else:
            job = _FileJob(path.name, kind, digest)
            outcome = await self._rows(job, content, publish, stop)
            if outcome is not None:
                return outcome
            rejections, published = job.rejections, job.published
        destination = await asyncio.to_thread(self._finish, path, rejections)
        if destination is None:
            _log.warning("kemensos_csv.file_vanished", source=self.name, file=path.name)
            return _Outcome.VANISHED
        if self._on_quarantine is not None:
            for rejection in rejections:
                self._on_quarantine(self.name, rejection.reason)
        _log.info(
            "kemensos_csv.file_done", source=self.name, file=path.name, done=destination.name,
            kind=kind.name if kind else None, sha256=digest, published=published, quarantined=len(rejections),
        )  # fmt: skip
        return _Outcome.DONE

    async def _rows(
        self, job: _FileJob, content: bytes, publish: PublishFn, stop: asyncio.Event | None
    ) -> _Outcome | None:
        """Publish or reject each row; returns an outcome only when the file must stay in ``inbox/``."""
        text = content.decode("utf-8-sig", errors="surrogateescape")  # bad bytes are reported per row
        header: _Header | None = None
        for number, cells, syntax_error in _records(text, self.mapper.inbound.delimiter):
            if stop is not None and stop.is_set():
                _log.info("kemensos_csv.file_interrupted", source=self.name, file=job.name, row=number)
                return _Outcome.INTERRUPTED
            if header is None:
                if syntax_error is None:
                    header = self.mapper.header(job.kind, cells)
                else:
                    header = _Header((), RowError(Reason.SCHEMA_INVALID, None, "csv-syntax", syntax_error))
                continue
            if syntax_error is None and not any(c.strip() for c in cells):
                continue  # a blank line: skipped, still counted
            event_id = csv_event_id(job.digest, number)
            try:
                if syntax_error is not None:
                    raise RowError(Reason.SCHEMA_INVALID, None, "csv-syntax", syntax_error)
                mapped = self.mapper.row(job.kind, header, cells)
                await publish(
                    mapped.type, mapped.data, recipients=mapped.recipients, dataschema=mapped.dataschema,
                    event_id=event_id,
                )  # fmt: skip
            except RowError as exc:
                rejection = _Rejection(number, exc.field, str(exc.reason), exc.problem, exc.explanation)
                self._reject(job, event_id, rejection)
                continue
            except GatewayError as exc:
                if exc.reason in _DEFERRING:
                    _log.warning(
                        "kemensos_csv.file_deferred", source=self.name, file=job.name, row=number,
                        reason=str(exc.reason),
                    )  # fmt: skip
                    return _Outcome.DEFERRED
                column = _publish_field(job.kind, exc)
                self._reject(
                    job, event_id, _Rejection(number, column, str(exc.reason), "publish-refused", exc.detail)
                )
                continue
            job.published += 1
            _log.debug(
                "kemensos_csv.row_published", source=self.name, file=job.name, row=number, event_id=event_id
            )
        return None

    def _reject(self, job: _FileJob, event_id: str, rejection: _Rejection) -> None:
        job.rejections.append(rejection)
        _log.warning(
            "kemensos_csv.row_rejected", source=self.name, file=job.name, row=rejection.row,
            field=rejection.field, reason=rejection.reason, problem=rejection.problem, event_id=event_id,
        )  # fmt: skip

    # ---- file-system work (in a thread) ----------------------------------------------------------------
    def _ready_files(self) -> list[Path]:
        ready = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.casefold().endswith(DROP_SUFFIX):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    if entry.name not in self._skipped:
                        self._skipped.add(entry.name)
                        _log.warning("kemensos_csv.not_a_regular_file", source=self.name, file=entry.name)
                    continue
                ready.append(Path(entry.path))
        return sorted(ready)

    def _finish(self, path: Path, rejections: Sequence[_Rejection]) -> Path | None:
        """Write the quarantine report (atomically, first), then move the file into ``done/``."""
        if not path.exists():
            return None
        destination = self._unique_done_name(path.name)
        if rejections:
            report = b"".join(canonical_json(r.report(path.name)) + b"\n" for r in rejections)
            _write_atomically(self.quarantine / f"{destination.name}.rejected.jsonl", report)
        try:
            path.rename(destination)
        except FileNotFoundError:
            return None
        return destination

    def _unique_done_name(self, name: str) -> Path:
        candidate = self.done / name
        stem, suffix = os.path.splitext(name)
        counter = 1
        while candidate.exists():
            candidate = self.done / f"{stem}.{counter}{suffix}"
            counter += 1
        return candidate


def _publish_field(kind: FileKind, exc: GatewayError) -> str | None:
    """Which column a publish refusal is about: schema errors by path, sealing errors by recipient column."""
    if exc.reason is Reason.SCHEMA_INVALID:
        return _schema_field(kind, exc.detail)
    if str(exc.reason).startswith("seal."):
        return next((c.name for c in kind.columns.values() if c.recipient), None)
    return None


def _records(text: str, delimiter: str) -> list[tuple[int, list[str], str | None]]:
    """``(row number, cells, syntax problem)`` per record; a CSV syntax error costs one row, not the file."""
    if delimiter == "auto":
        first = text.split("\n", 1)[0]
        delimiter = ";" if ";" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str], str | None]] = []
    number = 0
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            too_large = "field larger" in str(exc)
            records.append(
                (number, [], "a cell exceeds the CSV field limit" if too_large else "malformed quoting")
            )
            continue
        records.append((number, cells, None))


def _write_atomically(target: Path, content: bytes) -> None:
    """``.<name>.tmp`` (0600), fsync, rename over ``target``: readers never see a partial report."""
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


def write_drop(directory: Path, name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a CSV drop the way an export job must: ``inbox/.<name>.tmp``, then rename to ``inbox/<name>``.

    For simulators, tests and operators' scripts; ``directory`` is the source's ``directory`` option.
    """
    inbox = directory / "inbox"
    inbox.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(["" if cell is None else str(cell) for cell in row] for row in rows)
    target = inbox / name
    _write_atomically(target, buffer.getvalue().encode("utf-8"))
    return target
