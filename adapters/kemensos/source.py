"""Inbound: Kemensos CSV drops (RPTC shelters, Pos Pemulangan return posts) -> exchange events.

Kemensos' systems are spreadsheets and a case register that can export CSV; a drop folder is the interface
every office can run today. The folder mechanism is :class:`gateway.runtime.sources.DropFolderSource`, the one
the JSON Lines file drop uses, for the same reasons (see :mod:`gateway.runtime.sources`): writers create
``inbox/.<name>.tmp`` and rename it to ``inbox/<name>.csv`` when complete (atomic); each row's event id is
``uuid5(NAMESPACE, "<sha256 of the file>:<row>")``, so a file processed again after a crash or dropped twice
re-publishes the *same* ids, which the outbox and every consumer deduplicate; a row is one event, published
whole or quarantined whole; only when every row is done does the file move to ``done/``.

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
import hashlib
import io
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
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
from gateway.errors import GatewayError, Reason
from gateway.runtime.sources import (
    DropEvent,
    DropFile,
    DropFolderSource,
    DropRecord,
    DropRejection,
    PublishFn,
    QuarantineFn,
    write_atomically,
)

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
_SMALL_CELL: Final = 11
_SUPPRESSED: Final = "<11"
_DIR_MODE: Final = 0o700
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


class CsvDropSource(DropFolderSource):
    """Publish every row of ``*.csv`` files dropped into ``directory/inbox/`` (see the module docstring).

    The drop folder (layout, name order, deferring, done/ and quarantine/) is
    :class:`gateway.runtime.sources.DropFolderSource`'s; this class maps rows. A file whose name matches no
    kind is reported as one rejection (``schema.unknown``) and moved to ``done/``, so ``inbox/`` stays "work
    to do".
    """

    suffixes = (DROP_SUFFIX,)
    ignore_case = True
    log_prefix = "kemensos_csv"
    record_word = "row"

    def __init__(
        self,
        directory: Path,
        mapping: KemensosMapping,
        *,
        name: str = "kemensos-csv",
        poll_interval: float = 1.0,
        on_quarantine: QuarantineFn | None = None,
    ) -> None:
        super().__init__(directory, name=name, poll_interval=poll_interval, on_quarantine=on_quarantine)
        self.mapper = RowMapper(mapping)

    async def process_pending(self, publish: PublishFn, stop: asyncio.Event | None = None) -> int:
        """Process every ready file once; return how many were moved to ``done/``."""
        return sum(result.done for result in await self._process_ready(publish, stop))

    def read_file(self, path: Path) -> DropFile:
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        kind = self.mapper.inbound.kind_of(path.name)
        facts = {"kind": kind.name if kind else None, "sha256": digest}
        if kind is None:
            _log.warning("kemensos_csv.unknown_file_kind", source=self.name, file=path.name)
            unknown = DropRejection(
                str(Reason.SCHEMA_UNKNOWN), "the file name matches no kind's prefix in the mapping",
                problem="unknown-file-kind",
            )  # fmt: skip
            return DropFile([(None, unknown)], facts)
        return DropFile(self._rows(kind, digest, content), facts)

    def quarantine_record(self, file: str, number: int | None, rejection: DropRejection) -> dict[str, Any]:
        return {
            "file": file, "row": number, "field": rejection.field, "reason": rejection.reason,
            "problem": rejection.problem, "detail": rejection.detail,
        }  # fmt: skip

    def _rows(self, kind: FileKind, digest: str, content: bytes) -> Iterator[DropRecord]:
        """Each record row as an event to publish or a rejection naming the column (header row first)."""
        text = content.decode("utf-8-sig", errors="surrogateescape")  # bad bytes are reported per row
        header: _Header | None = None
        for number, cells, syntax_error in _records(text, self.mapper.inbound.delimiter):
            if header is None:
                if syntax_error is None:
                    header = self.mapper.header(kind, cells)
                else:
                    header = _Header((), RowError(Reason.SCHEMA_INVALID, None, "csv-syntax", syntax_error))
                continue
            if syntax_error is None and not any(c.strip() for c in cells):
                continue  # a blank line: skipped, still counted
            event_id = csv_event_id(digest, number)
            record: DropEvent | DropRejection
            try:
                if syntax_error is not None:
                    raise RowError(Reason.SCHEMA_INVALID, None, "csv-syntax", syntax_error)
                mapped = self.mapper.row(kind, header, cells)
            except RowError as exc:
                record = DropRejection(str(exc.reason), exc.explanation, exc.field, exc.problem, event_id)
            else:
                record = DropEvent(
                    mapped.type, mapped.data, event_id, mapped.recipients, mapped.dataschema,
                    refusal_field=partial(_publish_field, kind),
                )  # fmt: skip
            yield number, record


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
    write_atomically(target, buffer.getvalue().encode("utf-8"))
    return target
