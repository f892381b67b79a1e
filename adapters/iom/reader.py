"""Read IOM HTCDS exports (CSV or XLSX) into header + rows of text cells, without interpreting them.

Both formats end up the same shape so the mapping has one input type: every cell becomes a string (empty
for a blank cell). Excel dates become ``YYYY-MM-DD`` (or an ISO date-time when the cell has a time), whole
numbers lose Excel's ``.0``. Row numbers are spreadsheet row numbers (the header is row 1), so a quarantine
report points IOM staff to the row they see in Excel.

Problems with the file as a whole (not UTF-8, not a workbook, a repeated or missing column) raise
:class:`FileProblem` naming the row/column and a reason code, never a cell value.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import Reason

__all__ = ["SUFFIXES", "FileProblem", "Sheet", "read_sheet"]

SUFFIXES: Final = (".csv", ".xlsx")
_DELIMITERS: Final = (",", ";", "\t")


class FileProblem(Exception):
    """The file cannot be read as an HTCDS export at all."""

    def __init__(self, reason: Reason, field: str, detail: str, row: int = 1) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.field = field
        self.detail = detail
        self.row = row


@dataclass(frozen=True, slots=True)
class Sheet:
    """The header (column names, blanks for unnamed columns) and the data rows as ``(row number, cells)``."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Each non-blank row as ``{column: text}`` (unnamed columns left out)."""
        for number, cells in self.rows:
            if not any(cell.strip() for cell in cells):
                continue
            yield number, {name: cells[i] for i, name in enumerate(self.header) if name and i < len(cells)}


def read_sheet(path: Path, *, sheet: str | None = None) -> Sheet:
    """Read ``path`` (``.csv`` or ``.xlsx`` by suffix). Raises :class:`FileProblem`."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = _read_csv(path.read_bytes())
    elif suffix == ".xlsx":
        header, rows = _read_xlsx(path, sheet)
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
    width = len(names)
    padded = tuple((number, tuple((list(cells) + [""] * width)[:width])) for number, cells in rows)
    return Sheet(names, padded)


def _header_name(cell: str) -> str:
    return cell.strip()


def _read_csv(content: bytes) -> tuple[list[str], list[tuple[int, tuple[str, ...]]]]:
    try:
        text = content.decode("utf-8-sig")  # Excel writes a byte order mark
    except UnicodeDecodeError:
        raise FileProblem(
            Reason.PARSE_UTF8, "file", "not UTF-8 text (save the CSV as UTF-8)", row=0
        ) from None
    first_line = text.split("\n", 1)[0]
    delimiter = max(_DELIMITERS, key=first_line.count)  # HTCDS headers have 80+ columns: unambiguous
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error:
        raise FileProblem(
            Reason.SCHEMA_INVALID, "file", "not well-formed CSV (unbalanced quotes)", row=0
        ) from None
    if not table:
        raise FileProblem(Reason.SCHEMA_INVALID, "header", "empty file")
    return table[0], [(number, tuple(cells)) for number, cells in enumerate(table[1:], start=2)]


def _read_xlsx(path: Path, sheet: str | None) -> tuple[list[str], list[tuple[int, tuple[str, ...]]]]:
    # imported when used: only the IOM adapter needs openpyxl; it ships no type information (Any is fine
    # here, every cell goes through _cell_text)
    from openpyxl import load_workbook  # type: ignore[import-untyped]  # noqa: PLC0415
    from openpyxl.utils.exceptions import InvalidFileException  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError):
        raise FileProblem(Reason.SCHEMA_INVALID, "file", "not a readable .xlsx workbook", row=0) from None
    try:
        if sheet is not None:
            if sheet not in workbook.sheetnames:
                raise FileProblem(Reason.SCHEMA_INVALID, "sheet", "configured sheet not in workbook", row=0)
            worksheet = workbook[sheet]
        else:
            worksheet = workbook.worksheets[0]
        rows = worksheet.iter_rows(values_only=True)
        header_cells = next(rows, None)
        if header_cells is None:
            raise FileProblem(Reason.SCHEMA_INVALID, "header", "empty sheet")
        header = [_cell_text(cell) for cell in header_cells]
        data = [(number, tuple(_cell_text(c) for c in cells)) for number, cells in enumerate(rows, start=2)]
    finally:
        workbook.close()
    return header, data


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
