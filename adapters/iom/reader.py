"""Read IOM HTCDS exports (CSV or XLSX) into header + rows of text cells, without interpreting them.

Both formats end up the same shape so the mapping has one input type: every cell becomes a string (empty
for a blank cell). Excel dates become ``YYYY-MM-DD`` (or an ISO date-time when the cell has a time), whole
numbers lose Excel's ``.0``. Row numbers are spreadsheet row numbers (the header is row 1), so a quarantine
report points IOM staff to the row they see in Excel.

Problems with the file as a whole (not UTF-8, not a workbook, a repeated or missing column) raise
:class:`FileProblem` naming the row/column and a reason code, never a cell value. Rows are read lazily, so
a file broken part-way (truncated sheet XML, a bad byte on row 5,000) raises it at that row.

Workbooks are hostile input (docs/adapters/iom.md, THREAT_MODEL.md): before openpyxl sees one, the zip is
checked — at most 10,000 parts, unpacking to at most :data:`MAX_UNPACKED_RATIO` times the file size limit,
and no ``<!DOCTYPE`` or ``<!ENTITY`` in any XML part — and openpyxl itself parses through ``defusedxml``
(a dependency; it refuses entity declarations and external references).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.etree.ElementTree import ParseError

from gateway.errors import GatewayError, Reason
from gateway.runtime.intake import read_bounded

__all__ = ["MAX_UNPACKED_RATIO", "SUFFIXES", "FileProblem", "Sheet", "read_sheet"]

SUFFIXES: Final = (".csv", ".xlsx")
_DELIMITERS: Final = (",", ";", "\t")
#: A workbook may unpack to at most this many times ``max_bytes`` (real exports compress about 5-10x; a
#: zip bomb compresses thousands of times) and hold at most this many parts.
MAX_UNPACKED_RATIO: Final = 40
_MAX_PARTS: Final = 10_000
_SCAN_CHUNK: Final = 64 * 1024
#: Markup that declares a DTD or entities. Workbooks never carry one (OOXML forbids DTDs); the parser
#: (openpyxl through defusedxml) refuses entities too, this refuses the file before any parser sees it.
_DTD_MARKERS: Final = (b"<!DOCTYPE", b"<!ENTITY")
_DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024
_TOO_LARGE: Final = f"workbook unpacks to more than {MAX_UNPACKED_RATIO}x max_file_bytes"


class FileProblem(Exception):
    """The file cannot be read as an HTCDS export at all (or, found while reading, from ``row`` on)."""

    def __init__(self, reason: Reason, field: str, detail: str, row: int = 1) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.field = field
        self.detail = detail
        self.row = row


@dataclass(frozen=True, slots=True)
class Sheet:
    """The header (column names, blanks for unnamed columns) and the data rows as ``(row number, cells)``.

    ``rows`` is read lazily, once (a workbook is streamed from its zip): :meth:`records` raises
    :class:`FileProblem` at the row where a file turns out to be broken."""

    header: tuple[str, ...]
    rows: Iterable[tuple[int, tuple[str, ...]]]

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Each non-blank row as ``{column: text}`` (unnamed columns left out)."""
        width = len(self.header)
        for number, raw in self.rows:
            cells = tuple((list(raw) + [""] * width)[:width])
            if not any(cell.strip() for cell in cells):
                continue
            yield number, {name: cells[i] for i, name in enumerate(self.header) if name and i < len(cells)}


def read_sheet(path: Path, *, sheet: str | None = None, max_bytes: int = _DEFAULT_MAX_BYTES) -> Sheet:
    """Read ``path`` (``.csv`` or ``.xlsx`` by suffix): the header now, the rows as they are consumed.

    Raises :class:`FileProblem` (the rows may raise it later, at the row where the file breaks). Memory:
    a CSV is held as its bytes (at most ``max_bytes``) and decoded a row at a time; a workbook is checked
    (parts, unpacked size, no DTD) and then streamed from its zip.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            content = read_bounded(path, max_bytes)
        except GatewayError as exc:
            raise FileProblem(exc.reason, "file", exc.detail, row=0) from None
        header, rows = _read_csv(content)
    elif suffix == ".xlsx":
        header, rows = _read_xlsx(path, sheet, max_bytes)
    else:
        raise FileProblem(Reason.SCHEMA_INVALID, "file", "not a .csv or .xlsx file", row=0)
    names = tuple(_header_name(cell) for cell in header)
    while names and not names[-1]:
        names = names[:-1]
    if not names:
        raise FileProblem(Reason.SCHEMA_INVALID, "header", "no header row")
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name and name in seen:
            raise FileProblem(
                Reason.SCHEMA_INVALID, f"column {_column_letter(index)}", "column name repeated"
            )
        seen.add(name)
    return Sheet(names, rows)


def _header_name(cell: str) -> str:
    return cell.strip()


Rows = Iterator[tuple[int, tuple[str, ...]]]


def _read_csv(content: bytes) -> tuple[list[str], Rows]:
    first = content.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf")
    try:
        first_line = first.decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem(
            Reason.PARSE_UTF8, "file", "not UTF-8 text (save the CSV as UTF-8)", row=0
        ) from None
    delimiter = max(_DELIMITERS, key=first_line.count)  # HTCDS headers have 80+ columns: unambiguous
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", newline="")  # decoded as read
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    header = _guarded(lambda: next(reader, None), 1)
    if header is None:
        raise FileProblem(Reason.SCHEMA_INVALID, "header", "empty file")

    def rows() -> Rows:
        number = 1
        while True:
            number += 1
            cells = _guarded(lambda: next(reader, None), number)
            if cells is None:
                return
            yield number, tuple(cells)

    return header, rows()


def _guarded(read: Callable[[], Any], row: int) -> Any:
    """One CSV record; a decoding or quoting error is the file's problem from ``row`` on."""
    try:
        return read()
    except UnicodeDecodeError:  # decoded a block at a time: the row is not known, so the file as a whole
        raise FileProblem(
            Reason.PARSE_UTF8, "file", "not UTF-8 text (save the CSV as UTF-8)", row=0
        ) from None
    except csv.Error:
        raise FileProblem(
            Reason.SCHEMA_INVALID, "file", "not well-formed CSV (unbalanced quotes)", row=row
        ) from None


#: What zipfile and openpyxl (through defusedxml) raise for a broken or hostile workbook part.
_WORKBOOK_ERRORS: Final = (
    zipfile.BadZipFile, zlib.error, struct.error, ParseError, KeyError, OSError, ValueError, EOFError,
    TypeError, IndexError, AttributeError,
    RuntimeError,  # an encrypted part; NotImplementedError (a RuntimeError): an unknown zip version
)  # fmt: skip


def _check_workbook(path: Path, max_bytes: int) -> None:
    """Refuse a workbook before parsing it: not a zip, too many parts, unpacking beyond
    :data:`MAX_UNPACKED_RATIO` times ``max_bytes`` (a zip bomb), or a DTD in any part."""
    try:
        archive = zipfile.ZipFile(path)
    except _WORKBOOK_ERRORS:
        raise FileProblem(Reason.SCHEMA_INVALID, "file", "not a readable .xlsx workbook", row=0) from None
    budget = MAX_UNPACKED_RATIO * max_bytes
    with archive:
        parts = archive.infolist()
        if len(parts) > _MAX_PARTS:
            raise FileProblem(
                Reason.SIZE_EXCEEDED, "file", f"workbook has more than {_MAX_PARTS} parts", row=0
            )
        for part in parts:
            if not part.filename.endswith((".xml", ".rels", ".vml")):
                budget -= part.file_size  # bound what a parser could be made to unpack
                continue
            try:
                with archive.open(part) as member:
                    tail = b""
                    while chunk := member.read(_SCAN_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:
                            raise FileProblem(Reason.SIZE_EXCEEDED, "file", _TOO_LARGE, row=0)
                        window = tail + chunk
                        if any(marker in window for marker in _DTD_MARKERS):
                            raise FileProblem(
                                Reason.SCHEMA_INVALID,
                                "file",
                                "workbook XML declares a DTD or entities",
                                row=0,
                            )
                        tail = chunk[-16:]
            except (
                zipfile.BadZipFile,
                zlib.error,
                OSError,
                EOFError,
                ValueError,
                RuntimeError,
                struct.error,
            ):
                raise FileProblem(
                    Reason.SCHEMA_INVALID, "file", "not a readable .xlsx workbook", row=0
                ) from None
        if budget < 0:
            raise FileProblem(Reason.SIZE_EXCEEDED, "file", _TOO_LARGE, row=0)


def _read_xlsx(path: Path, sheet: str | None, max_bytes: int) -> tuple[list[str], Rows]:
    # imported when used: only the IOM adapter needs openpyxl; it ships no type information (Any is fine
    # here, every cell goes through _cell_text)
    import openpyxl  # type: ignore[import-untyped]  # noqa: PLC0415
    from openpyxl import load_workbook  # noqa: PLC0415
    from openpyxl.utils.exceptions import InvalidFileException  # type: ignore[import-untyped]  # noqa: PLC0415

    if not openpyxl.DEFUSEDXML:  # defusedxml is a dependency; OPENPYXL_DEFUSEDXML=False would turn it off
        raise FileProblem(Reason.CONFIG_INVALID, "file", "workbooks need openpyxl with defusedxml", row=0)
    _check_workbook(path, max_bytes)
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, *_WORKBOOK_ERRORS):
        raise FileProblem(Reason.SCHEMA_INVALID, "file", "not a readable .xlsx workbook", row=0) from None
    try:
        if sheet is not None:
            if sheet not in workbook.sheetnames:
                raise FileProblem(Reason.SCHEMA_INVALID, "sheet", "configured sheet not in workbook", row=0)
            worksheet = workbook[sheet]
        elif workbook.worksheets:
            worksheet = workbook.worksheets[0]
        else:
            raise FileProblem(Reason.SCHEMA_INVALID, "sheet", "workbook has no sheet", row=0)
        cells = iter(worksheet.iter_rows(values_only=True))
        header_cells = _unbroken(lambda: next(cells, None), 1)
        if header_cells is None:
            raise FileProblem(Reason.SCHEMA_INVALID, "header", "empty sheet")
        header = [_cell_text(cell) for cell in header_cells]
    except BaseException:
        workbook.close()
        raise

    def rows() -> Rows:
        try:
            number = 1
            while True:
                number += 1
                values = _unbroken(lambda: next(cells, None), number)
                if values is None:
                    return
                yield number, tuple(_cell_text(c) for c in values)
        finally:
            workbook.close()

    return header, rows()


def _unbroken(read: Callable[[], Any], row: int) -> Any:
    """One workbook row; broken XML (truncated, or a DTD defusedxml refuses) is the file's problem."""
    try:
        return read()
    except _WORKBOOK_ERRORS:
        raise FileProblem(
            Reason.SCHEMA_INVALID, "file", "workbook XML is not well-formed from this row on", row=row
        ) from None


def _cell_text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, _dt.datetime):
        if cell.time() == _dt.time(0, 0):
            return cell.date().isoformat()
        return cell.isoformat()
    if isinstance(cell, _dt.date | _dt.time):
        return cell.isoformat()
    if isinstance(cell, float):
        return str(int(cell)) if cell.is_integer() else repr(cell)
    return str(cell)


def _column_letter(index: int) -> str:
    """Spreadsheet column letters (0 -> A, 26 -> AA): how IOM staff find a column."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def column_letters(header: Sequence[str]) -> dict[str, str]:
    return {name: _column_letter(i) for i, name in enumerate(header) if name}
