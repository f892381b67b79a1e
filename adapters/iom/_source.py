"""Inbound: IOM HTCDS v2.0 exports (CSV or XLSX) in a folder -> assistance records and supply alerts.

Layout under ``directory`` (the same convention as :class:`gateway.sources.FileDropSource`, for the same
reasons):

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
content (:func:`adapters.iom._mapping.row_event_id`), so a cumulative export re-dropped tomorrow republishes
nothing it already published. ``publish`` refusals about the gateway rather than the row (outbox full,
stopping, bus down) leave the file in ``inbox/`` to be retried whole, with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from adapters._fieldmap import MappingError
from adapters._io import write_atomically
from adapters.iom._mapping import SKIP, IomMapping, row_event_id
from adapters.iom._reader import SUFFIXES, FileProblem, Sheet, read_sheet
from gateway.canonical import canonical_json
from gateway.errors import GatewayError, Reason
from gateway.sources import PublishFn

__all__ = ["FileReport", "HtcdsExportSource", "RowRejection"]

_log = structlog.get_logger(__name__)

_DEFERRING: Final = frozenset({Reason.OUTBOX_FULL, Reason.STOPPING, Reason.BUS_UNAVAILABLE})
_DIR_MODE: Final = 0o700

QuarantineCallback = Callable[[str, str], None]


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


class _Deferred(Exception):
    pass


class HtcdsExportSource:
    """Publish the rows of HTCDS exports dropped into ``directory/inbox/``; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        party: str,
        mapping: IomMapping,
        name: str = "iom-htcds",
        poll_interval: float = 2.0,
        sheet: str | None = None,
        max_file_bytes: int = 50 * 1024 * 1024,
        on_quarantine: QuarantineCallback | None = None,
    ) -> None:
        if poll_interval <= 0 or max_file_bytes <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: poll_interval, max_file_bytes > 0")
        self.name = name
        self.directory = directory
        self.party = party
        self.mapping = mapping
        self.poll_interval = poll_interval
        self.sheet = sheet
        self.max_file_bytes = max_file_bytes
        self._on_quarantine = on_quarantine

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
        await asyncio.to_thread(self.ensure_directories)
        _log.info("iom_htcds.started", source=self.name, party=self.party, directory=str(self.directory))
        while not stop.is_set():
            await self.process_pending(publish, stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        _log.info("iom_htcds.stopped", source=self.name)

    async def process_pending(
        self, publish: PublishFn, stop: asyncio.Event | None = None
    ) -> list[FileReport]:
        """Process every ready file once, in name order; stop at the first one that must wait."""
        reports = []
        for path in await asyncio.to_thread(self._ready_files):
            report = await self.process_file(path, publish, stop)
            reports.append(report)
            if not report.done:
                break  # stopping, or publish said "not now": later files would fare the same
        return reports

    async def process_file(
        self, path: Path, publish: PublishFn, stop: asyncio.Event | None = None
    ) -> FileReport:
        report = FileReport(file=path.name)
        rejections: list[RowRejection] = []
        try:
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            if size > self.max_file_bytes:
                raise FileProblem(
                    Reason.SIZE_EXCEEDED, "file", f"larger than {self.max_file_bytes} bytes", row=0
                )
            sheet = await asyncio.to_thread(read_sheet, path, sheet=self.sheet)
            self._check_header(sheet, path.name, report)
        except FileNotFoundError:
            _log.warning("iom_htcds.file_vanished", source=self.name, file=path.name)
            return report
        except FileProblem as problem:
            rejections.append(
                RowRejection(path.name, problem.row, problem.field, str(problem.reason), problem.detail)
            )
            sheet = None
        if sheet is not None:
            try:
                await self._publish_rows(
                    sheet, path.name, publish, stop=stop, report=report, rejections=rejections
                )
            except _Deferred:
                return report
            if stop is not None and stop.is_set():
                _log.info("iom_htcds.file_interrupted", source=self.name, file=path.name)
                return report
        destination = await asyncio.to_thread(self._finish, path, rejections)
        if destination is None:
            _log.warning("iom_htcds.file_vanished", source=self.name, file=path.name)
            return report
        for rejection in rejections:
            if self._on_quarantine is not None:
                self._on_quarantine(self.name, rejection.reason)
        report.done = True
        report.rejections = rejections
        _log.info(
            "iom_htcds.file_done", source=self.name, file=path.name, done=destination.name,
            published=report.published, skipped=report.skipped, quarantined=len(rejections),
            ignored_columns=report.ignored_columns,
        )  # fmt: skip
        return report

    def _check_header(self, sheet: Sheet, file: str, report: FileReport) -> None:
        present = set(sheet.header)
        for column in self.mapping.required:
            if column not in present:
                raise FileProblem(Reason.SCHEMA_INVALID, column, "required column missing from the header")
        unknown = [name for name in sheet.header if name and name not in self.mapping.known_columns]
        report.ignored_columns = len(unknown)
        if unknown:  # counted, not named: a header cell is free text too
            _log.warning("iom_htcds.unknown_columns_ignored", source=self.name, file=file, count=len(unknown))

    async def _publish_rows(
        self,
        sheet: Sheet,
        file: str,
        publish: PublishFn,
        *,
        stop: asyncio.Event | None,
        report: FileReport,
        rejections: list[RowRejection],
    ) -> None:
        for row, record in sheet.records():
            if stop is not None and stop.is_set():
                return
            message = ""
            try:
                message = self.mapping.message_of(record)
                if message == SKIP:
                    report.skipped += 1
                    continue
                payload = self.mapping.map_row(message, record, party=self.party)
                event_id = row_event_id(message, payload)
                await publish(self.mapping.event_type(message), payload, event_id=event_id)
            except MappingError as exc:
                rejections.append(RowRejection(file, row, exc.field, str(exc.reason), exc.detail))
                self._log_rejection(file, row, exc.field, exc.reason)
                continue
            except GatewayError as exc:
                if exc.reason in _DEFERRING:
                    _log.warning("iom_htcds.file_deferred", source=self.name, file=file, row=row,
                                 reason=str(exc.reason))  # fmt: skip
                    raise _Deferred from None
                column = self.mapping.messages[message].source_for_detail(exc.detail) if message else None
                rejections.append(RowRejection(file, row, column or "", str(exc.reason), exc.detail))
                self._log_rejection(file, row, column or "", exc.reason)
                continue
            report.published += 1
            _log.debug("iom_htcds.row_published", source=self.name, file=file, row=row, event_id=event_id)

    def _log_rejection(self, file: str, row: int, field: str, reason: Reason) -> None:
        _log.warning(
            "iom_htcds.row_rejected", source=self.name, file=file, row=row, field=field, reason=str(reason)
        )

    # ---- file-system work (in a thread) -------------------------------------------------------------
    def _ready_files(self) -> list[Path]:
        ready = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.lower().endswith(SUFFIXES):
                    continue  # being written (atomic-rename convention) or not ours
                if entry.is_file(follow_symlinks=False):
                    ready.append(Path(entry.path))
        return sorted(ready)

    def _finish(self, path: Path, rejections: list[RowRejection]) -> Path | None:
        """Write the quarantine report first (atomically), then move the file to ``done/``: after a crash in
        between, the file is processed again and the report rewritten under the same name."""
        if not path.exists():
            return None
        destination = self._unique_done_name(path.name)
        if rejections:
            report = b"".join(
                canonical_json(
                    {"file": r.file, "row": r.row, "field": r.field, "reason": r.reason, "detail": r.detail}
                )
                + b"\n"
                for r in rejections
            )
            write_atomically(self.quarantine / f"{destination.name}.rejected.jsonl", report)
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
