"""The Kemensos mapping file (``mapping.toml``), read once at start-up with the shared mapping engine.

Why a data file: column names, code tables (``L``/``P``, Indonesian country names, RPTC codes, party names)
and who sealed fields are addressed to are what Kemensos staff and reviewers change, and they should not
need to read Python to do it. Why check it all at load: a typo in a table name or a field option would
otherwise quarantine every row of every file at 3 a.m.; failing at start-up with ``config.invalid`` naming
the key is cheaper. Errors here name keys of the mapping file, never a record's values (there are none yet).

Fields, tables, kinds and formats are the engine's (:mod:`adapters.fieldmap`, ``docs/adapters/README.md``);
what this module adds is Kemensos' own, documented in ``docs/adapters/kemensos.md``:

* ``[csv]`` (the column separator) and ``[referrers]`` (case-id prefix -> the party that referred the case);
* ``[files.<kind>]``: one kind of CSV drop per file-name prefix, each a message (``type``, ``dataschema``,
  ``fields``) with the columns it deliberately ``ignore``\\ s and who its sealed fields are for (the
  ``"$recipients"`` field, else ``recipients_from_case_id``); :class:`RowMapper` applies it to a row;
* ``[case_system]``: the record the case system takes for each event type (fields of every record, plus
  ``[case_system.types."<type>"]`` entries replacing or adding to them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from adapters.fieldmap import (
    FieldSpec,
    Formats,
    MappingError,
    MappingFile,
    MessageMap,
    Tables,
    convert,
    load_mapping,
)
from gateway.contract.schemas import TYPE_PREFIX
from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = [
    "EVENT_CONTEXT",
    "MAPPING_FILE",
    "RECIPIENTS",
    "FileKind",
    "Header",
    "KemensosMapping",
    "MappedRow",
    "RowError",
    "RowMapper",
    "normalise_header",
]

#: The mapping shipped with the adapter (``adapters/kemensos/mapping.toml``).
MAPPING_FILE: Final = Path(__file__).resolve().parent / "mapping.toml"
#: The field of a ``[files.<kind>]`` message naming the party its sealed fields are for.
RECIPIENTS: Final = "$recipients"
#: What a ``[case_system]`` field may read besides the payload: the event's attributes and message name.
EVENT_CONTEXT: Final = (
    "$event.id", "$event.source", "$event.type", "$event.subject", "$event.time", "$event.dataschema",
    "$event.dataclassification", "$message",
)  # fmt: skip
_DELIMITERS: Final = ("auto", ",", ";", "\t", "|")
_HEADER_SPACE_RE: Final = re.compile(r"[\s-]+")
_SURROGATE_RE: Final = re.compile("[\udc80-\udcff]")


def normalise_header(name: str) -> str:
    """``"No Kasus "`` -> ``no_kasus``: spreadsheet users add capitals and spaces; the mapping does not."""
    return _HEADER_SPACE_RE.sub("_", name.strip().casefold())


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
class FileKind:
    """One kind of CSV drop (admissions, discharges, ...): which files, which message, which columns."""

    name: str
    prefixes: tuple[str, ...]
    type: str
    dataschema: str | None
    message: MessageMap
    """The fields, their ``from`` being (normalised) column names."""
    ignore: frozenset[str]
    recipients_from_case_id: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns some field reads, in mapping order."""
        return tuple(dict.fromkeys(path for spec in self.message.fields for path in spec.reads()))

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(spec.source for spec in self.message.fields if spec.required and spec.source)
        )

    @property
    def recipient_column(self) -> str | None:
        return next((spec.source for spec in self.message.fields if spec.target == RECIPIENTS), None)


class KemensosMapping:
    """The parsed ``mapping.toml`` of the Kemensos adapter (see that file for the layout)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        file = MappingFile(document)
        self.tables: Tables = file.tables
        self.formats: Formats = file.formats
        self.delimiter: str = file.section("csv", required=False).string(
            "delimiter", "auto", choices=_DELIMITERS
        )
        referrers = file.section("referrers", required=False)
        pairs = [(prefix, referrers.string(prefix)) for prefix in referrers]
        self.referrers: tuple[tuple[str, str], ...] = tuple(sorted(pairs, key=lambda item: -len(item[0])))
        """``(case id prefix, party)``, longest prefix first."""
        self.files: tuple[FileKind, ...] = tuple(
            _file_kind(file, name, section) for name, section in file.subsections("files").items()
        )
        if not self.files:
            raise file.root.fail("files", "at least one file kind is required")
        seen: dict[str, str] = {}
        for kind in self.files:
            for prefix in kind.prefixes:
                for other, owner in seen.items():
                    if prefix.startswith(other) or other.startswith(prefix):
                        raise file.root.fail(f"files.{kind.name}.prefixes", f"overlaps with kind {owner}")
                seen[prefix] = kind.name
        case_system = file.section("case_system")
        self.common_record: MessageMap = file.message(case_system, context=EVENT_CONTEXT, unmapped=True)
        """The record of an event type without its own ``[case_system.types."<type>"]``."""
        self.records: dict[str, MessageMap] = {}
        for event_type, section in file.subsections("types", parent=case_system, required=False).items():
            if not event_type.startswith(TYPE_PREFIX):
                raise file.root.fail(f"case_system.types.{event_type}", "an exchange type is required")
            own = file.message(section, context=EVENT_CONTEXT)
            self.records[event_type] = _with_own_fields(self.common_record, own)
        file.close()

    @classmethod
    def load(cls, path: Path = MAPPING_FILE) -> KemensosMapping:
        return load_mapping(path, cls)

    def kind_of(self, file_name: str) -> FileKind | None:
        folded = file_name.casefold()
        for kind in self.files:
            if any(folded.startswith(prefix) for prefix in kind.prefixes):
                return kind
        return None

    def referrer(self, case_id: str) -> str | None:
        return next((party for prefix, party in self.referrers if case_id.startswith(prefix)), None)

    def record_map(self, event_type: str) -> MessageMap:
        """How an event of ``event_type`` becomes a case-system record."""
        return self.records.get(event_type, self.common_record)


def _file_kind(file: MappingFile, name: str, section: Table) -> FileKind:
    event_type = section.string("type")
    if not event_type.startswith(TYPE_PREFIX):
        raise section.fail("type", f"an exchange type ({TYPE_PREFIX}<name>) is required")
    prefixes = tuple(prefix.casefold() for prefix in section.strings("prefixes", empty=False))
    message = file.message(section, outputs=(RECIPIENTS,))
    columns = tuple(
        dataclasses.replace(spec, source=normalise_header(spec.source)) if spec.source is not None else spec
        for spec in message.fields
    )
    kind = FileKind(
        name=name,
        prefixes=prefixes,
        type=event_type,
        dataschema=section.string("dataschema", None),
        message=dataclasses.replace(message, fields=columns),
        ignore=frozenset(normalise_header(column) for column in section.strings("ignore", ())),
        recipients_from_case_id=section.boolean("recipients_from_case_id", False),
    )
    if kind.ignore & set(kind.columns):
        raise section.fail("ignore", "a column is both mapped and ignored")
    return kind


def _with_own_fields(common: MessageMap, own: MessageMap) -> MessageMap:
    """``common`` with each field of ``own`` replacing the one of the same name, or added after them."""
    replacing = {spec.target: spec for spec in own.fields}
    fields = [replacing.pop(spec.target, spec) for spec in common.fields]
    fields += [spec for spec in own.fields if spec.target in replacing]
    return dataclasses.replace(common, name=own.name, fields=tuple(fields))


# ---- rows ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The header row of one file, checked against its kind (:meth:`RowMapper.header`): column name ->
    position, and the kind's message with its fields in the order of the columns they read (so a row's first
    problem is its leftmost cell's)."""

    positions: Mapping[str, int]
    width: int
    message: MessageMap
    problem: RowError | None


class _Cells(Mapping[str, str]):
    """One row's cells by column name, checked as the mapping reads them: a cell the row does not have is
    ``missing-cells``, one that was not UTF-8 is ``invalid-utf8``. Ignored columns are not in it."""

    def __init__(self, positions: Mapping[str, int], cells: Sequence[str]) -> None:
        self._positions = positions
        self._cells = cells

    def __getitem__(self, name: str) -> str:
        position = self._positions[name]
        if position >= len(self._cells):
            raise RowError(Reason.SCHEMA_INVALID, name, "missing-cells", "fewer cells than the header")
        text = self._cells[position]
        if _SURROGATE_RE.search(text):
            raise RowError(Reason.PARSE_UTF8, name, "invalid-utf8", "the cell is not valid UTF-8")
        return text

    def __contains__(self, name: object) -> bool:
        return name in self._positions

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)


class RowMapper:
    """Turns the cells of one row of one file kind into a :class:`MappedRow`. Pure: no I/O, no clock."""

    def __init__(self, mapping: KemensosMapping) -> None:
        self.mapping = mapping

    def header(self, kind: FileKind, names: Sequence[str]) -> Header:
        """Check a header row. A problem is reported on every row (the file as a whole is wrong)."""
        read = set(kind.columns)
        seen: set[str] = set()
        positions: dict[str, int] = {}
        problem: RowError | None = None
        for position, raw in enumerate(names):
            name = normalise_header(raw)
            if name not in read and name not in kind.ignore:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, None, "unknown-column",
                    f"column {position + 1} is neither mapped nor ignored for {kind.name} files",
                )  # fmt: skip
            elif name in seen:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, name, "duplicate-column", "the column appears twice in the header"
                )
            seen.add(name)
            if name in read:
                positions.setdefault(name, position)
        for column in kind.required_columns:
            if column not in seen:
                problem = problem or RowError(
                    Reason.SCHEMA_INVALID, column, "missing-column", "required column not in the header"
                )
        return Header(positions, len(names), kind.message.read_in_order(positions), problem)

    def unreadable_header(self, kind: FileKind, problem: RowError) -> Header:
        """The header of a file whose header row cannot be read: ``problem`` is reported on every row."""
        return Header({}, 0, kind.message, problem)

    def row(self, kind: FileKind, header: Header, cells: Sequence[str]) -> MappedRow:
        """Map one row; raises :class:`RowError` naming the column on the first problem."""
        if header.problem is not None:
            raise header.problem
        if len(cells) > header.width:
            raise RowError(Reason.SCHEMA_INVALID, None, "extra-cells", "more cells than the header")
        try:
            data = header.message.apply(_Cells(header.positions, cells), self.mapping.tables)
        except MappingError as exc:
            raise RowError(exc.reason, exc.field, exc.problem, exc.explanation) from None
        parties = data.pop(RECIPIENTS, None)
        recipients: list[str] = [] if parties is None else parties if isinstance(parties, list) else [parties]
        if not recipients and kind.recipients_from_case_id and isinstance(data.get("case_id"), str):
            referrer = self.mapping.referrer(data["case_id"])
            if referrer is not None:
                recipients.append(referrer)
        return MappedRow(kind.type, data, tuple(dict.fromkeys(recipients)), kind.dataschema)

    def _one(self, spec: FieldSpec, text: str) -> Any:
        """One cell converted as ``spec`` says (a present value; for tests of kinds and tables)."""
        try:
            return convert(text, spec, self.mapping.tables, self.mapping.formats)
        except MappingError as exc:
            raise RowError(exc.reason, exc.field, exc.problem, exc.explanation) from None
