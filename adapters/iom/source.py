"""Inbound: IOM HTCDS v2.0 exports (CSV or XLSX) in a folder -> assistance records and supply alerts.

Layout under ``directory`` (the drop folder of :class:`gateway.runtime.dropfolder.DropFolderSource`, as for
the JSON Lines file drop, for the same reasons):

* ``inbox/``: IOM's export job (or an officer) writes ``.<name>.tmp`` and renames it to ``<name>.csv`` or
  ``<name>.xlsx`` when complete; a rename is atomic, so a half-written workbook is never read. Files are
  processed in name order.
* ``done/``: files completely processed (every row published, skipped or quarantined).
* ``quarantine/<done name>.rejected.jsonl``: one JSON object per rejected row ``{"file", "row", "field",
  "reason", "detail"}``: the spreadsheet row number, the column, a reason code and a value-free detail. Never
  a cell value: the same row holds the person's HTCDS columns (``prs_FirstName``...), and a quarantine folder
  is read by people who must not see them.

Each row's ``record_type`` says what it is: ``assistance`` (a ``case.assistance-record``: hygiene kit,
psychoeducation...), ``supply`` (an ``alert.supply``, e.g. 2,500 hygiene kits to Pos Pemulangan Pontianak) or
``case`` (nothing to exchange). A bad row never stops the rest of the file. Event ids come from the mapped
content (:func:`adapters.iom.mapping.row_event_id`), so a cumulative export re-dropped tomorrow republishes
nothing it already published. ``publish`` refusals about the gateway rather than the row (outbox full,
stopping, bus down) leave the file in ``inbox/`` to be retried whole, with the same ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog

from adapters.fieldmap import MappingError, MessageMap
from adapters.iom.mapping import SKIP, IomMapping, row_event_id
from adapters.iom.reader import SUFFIXES, FileProblem, Sheet, read_sheet
from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import (
    DropEvent,
    DropFile,
    DropFolderSource,
    DropRecord,
    DropRejection,
    DropResult,
)
from gateway.runtime.intake import IntakeBounds, file_ref
from gateway.runtime.sources import PublishFn, QuarantineFn

__all__ = ["DEFAULT_MAX_FILE_BYTES", "FileReport", "HtcdsExportSource", "RowRejection"]

_log = structlog.get_logger(__name__)

#: The ``max_file_bytes`` default of this source (an HTCDS export with a few thousand rows is a few MiB).
DEFAULT_MAX_FILE_BYTES: Final = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RowRejection:
    """Why one row was not published: where (file, row, column) and a reason code. No cell value."""

    file: str
    row: int
    field: str
    reason: str
    detail: str


@dataclass
class FileReport:
    """The outcome of one file (for logs and tests)."""

    file: str
    done: bool = False
    published: int = 0
    skipped: int = 0
    rejections: list[RowRejection] = dataclasses.field(default_factory=list)
    ignored_columns: int = 0


class HtcdsExportSource(DropFolderSource):
    """Publish the rows of HTCDS exports dropped into ``directory/inbox/``; see the module docstring."""

    suffixes = SUFFIXES
    ignore_case = True
    log_prefix = "iom_htcds"
    record_word = "row"

    def __init__(
        self,
        directory: Path,
        *,
        party: str,
        mapping: IomMapping,
        name: str = "iom-htcds",
        poll_interval: float = 2.0,
        sheet: str | None = None,
        max_file_bytes: int | None = None,
        on_quarantine: QuarantineFn | None = None,
        bounds: IntakeBounds | None = None,
    ) -> None:
        bounds = bounds or IntakeBounds(max_file_bytes=DEFAULT_MAX_FILE_BYTES)
        if max_file_bytes is not None:
            if max_file_bytes <= 0:
                raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: max_file_bytes must be positive")
            bounds = dataclasses.replace(bounds, max_file_bytes=max_file_bytes)
        super().__init__(
            directory, name=name, poll_interval=poll_interval, on_quarantine=on_quarantine, bounds=bounds
        )
        self.party = party
        self.mapping = mapping
        self.sheet = sheet
        self.max_file_bytes = bounds.max_file_bytes

    async def process_pending(
        self, publish: PublishFn, stop: asyncio.Event | None = None
    ) -> list[FileReport]:
        """Process every ready file once, in name order; stop at the first one that must wait."""
        return [_report(result) for result in await self._process_ready(publish, stop)]

    async def process_file(
        self, path: Path, publish: PublishFn, stop: asyncio.Event | None = None
    ) -> FileReport:
        return _report(await self._process_path(path, publish, stop))

    def read_file(self, path: Path) -> DropFile:
        try:
            sheet = read_sheet(path, sheet=self.sheet, max_bytes=self.max_file_bytes)
            ignored = self._check_header(sheet, file_ref(path.name))
        except FileProblem as problem:
            rejection = DropRejection(str(problem.reason), problem.detail, field=problem.field)
            return DropFile([(problem.row, rejection)])
        return DropFile(self._rows(sheet), {"ignored_columns": ignored})

    def quarantine_record(self, file: str, number: int | None, rejection: DropRejection) -> dict[str, Any]:
        return {
            "file": file, "row": number, "field": rejection.field or "", "reason": rejection.reason,
            "detail": rejection.detail,
        }  # fmt: skip

    def _check_header(self, sheet: Sheet, file: str) -> int:
        """Refuse a header without the required columns; return how many columns are ignored."""
        present = set(sheet.header)
        for column in self.mapping.required:
            if column not in present:
                raise FileProblem(Reason.SCHEMA_INVALID, column, "required column missing from the header")
        unknown = [name for name in sheet.header if name and name not in self.mapping.known_columns]
        if unknown:  # counted, not named: a header cell is free text too
            _log.warning("iom_htcds.unknown_columns_ignored", source=self.name, file=file, count=len(unknown))
        return len(unknown)

    def _rows(self, sheet: Sheet) -> Iterator[DropRecord]:
        """Each row as an event (id from its mapped content), a rejection by column, or skipped (``case``).

        Lazy: the sheet is read as the rows are consumed (in the drop folder's worker thread). A workbook
        that turns out to be broken part-way (truncated XML) ends in a file-level rejection at the row
        reached; the rows before it were processed."""
        try:
            yield from self._mapped(sheet)
        except FileProblem as problem:
            yield problem.row, DropRejection(str(problem.reason), problem.detail, field=problem.field)

    def _mapped(self, sheet: Sheet) -> Iterator[DropRecord]:
        for row, record in sheet.records():
            try:
                message = self.mapping.message_of(record)
                if message == SKIP:
                    yield row, None
                    continue
                payload = self.mapping.map_row(message, record, party=self.party)
            except MappingError as exc:
                yield row, DropRejection(str(exc.reason), exc.detail, field=exc.field)
                continue
            yield row, DropEvent(
                self.mapping.event_type(message), payload, row_event_id(message, payload),
                refusal_field=partial(_refused_column, self.mapping.messages[message]),
            )  # fmt: skip


def _refused_column(message: MessageMap, exc: GatewayError) -> str | None:
    """The column behind a ``publish`` refusal (for a schema error, the one mapped to the schema path)."""
    return message.source_for_detail(exc.detail)


def _report(result: DropResult) -> FileReport:
    rejections = [  # every record of an HTCDS export has a row number (0: the file as a whole)
        RowRejection(result.file, number or 0, rejection.field or "", rejection.reason, rejection.detail)
        for number, rejection in result.rejections
    ]
    return FileReport(
        file=result.file,
        done=result.done,
        published=result.published,
        skipped=result.skipped,
        rejections=rejections if result.done else [],
        ignored_columns=result.facts.get("ignored_columns", 0),
    )
