"""Inbound: Kemensos CSV drops (RPTC shelters, Pos Pemulangan return posts) -> exchange events.

Kemensos' systems are spreadsheets and a case register that can export CSV; a drop folder is the interface
every office can run today. The folder mechanism is :class:`gateway.runtime.dropfolder.DropFolderSource`, the
one the JSON Lines file drop uses, for the same reasons (see :mod:`gateway.runtime.dropfolder`): writers
create ``inbox/.<name>.tmp`` and rename it to ``inbox/<name>.csv`` when complete (atomic); each row's event id
is ``uuid5(NAMESPACE, "<sha256 of the file>:<row>")``, so a file processed again after a crash or dropped
twice re-publishes the *same* ids, which the outbox and every consumer deduplicate; a row is one event,
published whole or quarantined whole; only when every row is done does the file move to ``done/``.

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
import csv
import hashlib
import io
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog

from adapters.kemensos.mapping import FileKind, Header, KemensosMapping, RowError, RowMapper
from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import (
    DropEvent,
    DropFile,
    DropFolderSource,
    DropRecord,
    DropRejection,
    write_atomically,
)
from gateway.runtime.intake import IntakeBounds, file_ref, read_bounded
from gateway.runtime.sources import PublishFn, QuarantineFn

__all__ = [
    "DROP_SUFFIX",
    "EVENT_ID_NAMESPACE",
    "CsvDropSource",
    "csv_event_id",
    "write_drop",
]

_log = structlog.get_logger(__name__)

#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:adapter:kemensos-csv")``, written out: changing it would change
#: every event id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("496cfa35-de3f-529f-a178-518545252c62")
DROP_SUFFIX: Final = ".csv"
_DIR_MODE: Final = 0o700


def csv_event_id(file_sha256: str, row: int) -> str:
    """The event id of spreadsheet row ``row`` of a drop file whose SHA-256 hex digest is given."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{file_sha256}:{row}"))


# ---- the drop folder ---------------------------------------------------------------------------------


class CsvDropSource(DropFolderSource):
    """Publish every row of ``*.csv`` files dropped into ``directory/inbox/`` (see the module docstring).

    The drop folder (layout, name order, deferring, done/ and quarantine/) is
    :class:`gateway.runtime.dropfolder.DropFolderSource`'s; this class maps rows. A file whose name matches no
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
        bounds: IntakeBounds | None = None,
    ) -> None:
        super().__init__(
            directory, name=name, poll_interval=poll_interval, on_quarantine=on_quarantine, bounds=bounds
        )
        self.mapper = RowMapper(mapping)

    async def process_pending(self, publish: PublishFn, stop: asyncio.Event | None = None) -> int:
        """Process every ready file once; return how many were moved to ``done/``."""
        return sum(result.done for result in await self._process_ready(publish, stop))

    def read_file(self, path: Path) -> DropFile:
        content = read_bounded(path, self.bounds.max_file_bytes)
        digest = hashlib.sha256(content).hexdigest()
        kind = self.mapper.mapping.kind_of(path.name)
        facts = {"kind": kind.name if kind else None, "sha256": digest}
        if kind is None:
            _log.warning("kemensos_csv.unknown_file_kind", source=self.name, file=file_ref(path.name))
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
        """Each record row as an event to publish or a rejection naming the column (header row first).

        Lazy: the bytes are decoded and parsed a row at a time. A header that cannot be read rejects every
        row with its problem, and the file at row 1 when there are no rows (a file of NUL bytes, say), so
        an unreadable file always leaves a quarantine entry."""
        header: Header | None = None
        rows = 0
        for number, cells, syntax_error in _records(content, self.mapper.mapping.delimiter):
            rows += number > 1
            if header is None:
                if syntax_error is None:
                    header = self.mapper.header(kind, cells)
                else:
                    problem = RowError(Reason.SCHEMA_INVALID, None, "csv-syntax", syntax_error)
                    header = self.mapper.unreadable_header(kind, problem)
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
        if header is not None and header.problem is not None and not rows:
            problem = header.problem
            yield 1, DropRejection(str(problem.reason), problem.explanation, problem.field, problem.problem)


def _publish_field(kind: FileKind, exc: GatewayError) -> str | None:
    """Which column a publish refusal is about: schema errors by path, sealing errors by recipient column."""
    if exc.reason is Reason.SCHEMA_INVALID:
        return kind.message.source_for_detail(exc.detail)
    if str(exc.reason).startswith("seal."):
        return kind.recipient_column
    return None


def _records(content: bytes, delimiter: str) -> Iterator[tuple[int, list[str], str | None]]:
    """``(row number, cells, syntax problem)`` per record, lazily; a CSV syntax error costs one row, not the
    file. Bytes that are not UTF-8 are kept as surrogates and reported per row by the mapping."""
    if delimiter == "auto":
        first = content.split(b"\n", 1)[0]
        delimiter = ";" if b";" in first and b"," not in first else ","
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    number = 0
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            too_large = "field larger" in str(exc)
            yield number, [], "a cell exceeds the CSV field limit" if too_large else "malformed quoting"
            continue
        yield number, cells, None


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
