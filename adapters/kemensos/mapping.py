"""The Kemensos mapping file (``mapping.toml``): loaded and checked once, at start-up.

Why a data file: column names, code lists (``L``/``P``, Indonesian country names, RPTC codes, party names)
and who sealed fields are addressed to are what Kemensos staff and reviewers change, and they should not
need to read Python to do it. Why check it all at load: a typo in a code list name or a column spec would
otherwise quarantine every row of every file at 3 a.m.; failing at start-up with ``config.invalid`` naming
the key is cheaper. Errors here name keys of the mapping file, never a record's values (there are none yet).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError, Reason
from gateway.settings import load_toml

__all__ = [
    "CONVERSIONS",
    "DEFAULT_MAPPING",
    "EVENT_ATTRIBUTES",
    "CodeList",
    "Column",
    "Derivation",
    "FileKind",
    "Inbound",
    "KemensosMapping",
    "OutField",
    "Outbound",
    "OutboundType",
    "UnknownCode",
    "load_mapping",
    "normalise_header",
]

#: The mapping shipped with the adapter (``adapters/kemensos/mapping.toml``).
DEFAULT_MAPPING: Final = Path(__file__).resolve().parent / "mapping.toml"
FORMAT: Final = "kemensos-mapping/1"
#: Value conversions a column may ask for with ``as = "..."``.
CONVERSIONS: Final = frozenset({"text", "id", "date", "datetime", "integer", "count", "phone", "name"})
#: CloudEvents attributes an outbound ``{ event = "..." }`` entry may copy.
EVENT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "subject", "time", "dataschema", "dataclassification"}
)
_PATH_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_OFFSET_RE: Final = re.compile(r"^([+-])([01][0-9]|2[0-3]):([0-5][0-9])$")
_TEMPLATE_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_SPACE_RE: Final = re.compile(r"[\s-]+")
_UNSET: Final = object()


def normalise_header(name: str) -> str:
    """``"No Kasus "`` -> ``no_kasus``: spreadsheet users add capitals and spaces; the mapping does not."""
    return _HEADER_SPACE_RE.sub("_", name.strip().casefold())


def _fold(code: str) -> str:
    return " ".join(code.split()).casefold()


class UnknownCode(LookupError):
    """A value is not in a code list. Carries the list's name only, never the value."""

    def __init__(self, code_list: str) -> None:
        super().__init__(f"not in code list {code_list!r}")
        self.code_list = code_list


@dataclass(frozen=True, slots=True)
class CodeList:
    """``[codes.<name>]``: native code -> exchange value, and back (first native code listed wins)."""

    name: str
    forward: Mapping[str, Any]
    reverse: Mapping[str, str]

    def lookup(self, native: str) -> Any:
        """The exchange value of ``native`` (case and blanks ignored); an exchange value is accepted as is."""
        folded = _fold(native)
        if folded in self.forward:
            return self.forward[folded]
        stripped = native.strip()
        if stripped in self.reverse:
            return stripped
        raise UnknownCode(self.name)

    def native(self, value: Any) -> Any:
        """The native code for an exchange value, or the value unchanged when the list has none for it."""
        if isinstance(value, str):
            return self.reverse.get(value, value)
        return value


@dataclass(frozen=True, slots=True)
class Column:
    """How one CSV column becomes (part of) the payload. See the comments in ``mapping.toml``."""

    name: str
    field: str | None
    convert: str = "text"
    code: str | None = None
    many: bool = False
    required: bool = False
    omit_when: Any = _UNSET
    recipient: bool = False

    def omits(self, value: Any) -> bool:
        if self.omit_when is _UNSET:
            return False
        return type(value) is type(self.omit_when) and bool(value == self.omit_when)


@dataclass(frozen=True, slots=True)
class Derivation:
    """A payload field computed from mapped fields: a ``template`` or a ``difference`` (only if absent)."""

    field: str
    template: str | None = None
    difference: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FileKind:
    """One kind of CSV drop (admissions, discharges, ...): which files, which message, which columns."""

    name: str
    prefixes: tuple[str, ...]
    type: str
    dataschema: str | None
    columns: Mapping[str, Column]
    ignore: frozenset[str]
    constants: Mapping[str, Any]
    derive: tuple[Derivation, ...]
    recipients_from_case_id: bool

    def column_for(self, payload_path: str) -> str | None:
        """The column a payload path (or its nearest mapped parent or child) comes from, if any."""
        best: tuple[int, str] | None = None
        for column in self.columns.values():
            if column.field is None:
                continue
            if payload_path == column.field or payload_path.startswith(f"{column.field}."):
                score = len(column.field) * 2 + 1  # the column that produced this value (or its parent)
            elif column.field.startswith(f"{payload_path}."):
                score = 0  # a column below the failing object: a guess, but better than nothing
            else:
                continue
            if best is None or score > best[0]:
                best = (score, column.name)
        return best[1] if best else None


@dataclass(frozen=True, slots=True)
class Inbound:
    timezone: timezone
    date_formats: tuple[str, ...]
    datetime_formats: tuple[str, ...]
    delimiter: str
    list_separator: str
    referrers: tuple[tuple[str, str], ...]
    """``(case id prefix, party)``, longest prefix first."""
    kinds: tuple[FileKind, ...]

    def kind_of(self, file_name: str) -> FileKind | None:
        folded = file_name.casefold()
        for kind in self.kinds:
            if any(folded.startswith(prefix) for prefix in kind.prefixes):
                return kind
        return None

    def referrer(self, case_id: str) -> str | None:
        return next((party for prefix, party in self.referrers if case_id.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class OutField:
    """One native field of the case-system record: from a payload path, a join of paths or an attribute."""

    target: str
    paths: tuple[str, ...] = ()
    join: bool = False
    code: str | None = None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundType:
    kind: str
    fields: tuple[OutField, ...]


@dataclass(frozen=True, slots=True)
class Outbound:
    kind_key: str
    leftover: str
    event: tuple[OutField, ...]
    common: tuple[OutField, ...]
    types: Mapping[str, OutboundType]


@dataclass(frozen=True, slots=True)
class KemensosMapping:
    path: Path
    inbound: Inbound
    outbound: Outbound
    codes: Mapping[str, CodeList]


# ---- loading -----------------------------------------------------------------------------------------


class _Reader:
    """Typed access to the TOML document; every error names the key path and the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> GatewayError:
        return GatewayError(Reason.CONFIG_INVALID, f"mapping {self.path.name}: {where}: {message}")

    def table(
        self, parent: Mapping[str, Any], key: str, where: str, *, required: bool = True
    ) -> Mapping[str, Any]:
        value = parent.get(key, _UNSET)
        if value is _UNSET and not required:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(f"{where}{key}", "a table is required")
        return value

    def only(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = set(table) - allowed
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(sorted(unknown))}")

    def string(self, table: Mapping[str, Any], key: str, where: str, default: Any = _UNSET) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", "a non-empty string is required")
        return value

    def strings(
        self, table: Mapping[str, Any], key: str, where: str, default: Any = _UNSET
    ) -> tuple[str, ...]:
        value = table.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{where}.{key}", "a list of non-empty strings is required")
        return tuple(value)

    def boolean(self, table: Mapping[str, Any], key: str, where: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "true or false is required")
        return value

    def path_syntax(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not _PATH_RE.match(value):
            raise self.fail(where, "a dotted field path is required")
        return value


def load_mapping(path: Path | None = None) -> KemensosMapping:
    """Read and check a mapping file (default: the one shipped with the adapter)."""
    path = path or DEFAULT_MAPPING
    reader = _Reader(path)
    document = load_toml(path, what="mapping")
    reader.only(document, {"format", "inbound", "codes", "outbound"}, "(top level)")
    if document.get("format") != FORMAT:
        raise reader.fail("format", f"must be {FORMAT!r}")
    codes = _codes(reader, reader.table(document, "codes", ""))
    inbound = _inbound(reader, reader.table(document, "inbound", ""), codes)
    outbound = _outbound(reader, reader.table(document, "outbound", ""), codes)
    return KemensosMapping(path=path, inbound=inbound, outbound=outbound, codes=codes)


def _codes(reader: _Reader, table: Mapping[str, Any]) -> dict[str, CodeList]:
    result = {}
    for name, entries in table.items():
        where = f"codes.{name}"
        if not isinstance(entries, Mapping) or not entries:
            raise reader.fail(where, "a table of codes is required")
        forward: dict[str, Any] = {}
        reverse: dict[str, str] = {}
        for native, value in entries.items():
            if not isinstance(value, str | bool) or value == "":
                raise reader.fail(f"{where}.{native}", "a string or boolean value is required")
            folded = _fold(native)
            if folded in forward:
                raise reader.fail(f"{where}.{native}", "listed twice (case and blanks are ignored)")
            forward[folded] = value
            if isinstance(value, str):
                reverse.setdefault(value, native)
        result[name] = CodeList(name=name, forward=forward, reverse=reverse)
    return result


def _inbound(reader: _Reader, table: Mapping[str, Any], codes: Mapping[str, CodeList]) -> Inbound:
    reader.only(
        table,
        {"timezone", "date_formats", "datetime_formats", "delimiter", "list_separator", "referrers", "kinds"},
        "inbound",
    )
    offset = _OFFSET_RE.match(reader.string(table, "timezone", "inbound"))
    if offset is None:
        raise reader.fail("inbound.timezone", "an offset such as +07:00 is required")
    sign = -1 if offset[1] == "-" else 1
    zone = timezone(sign * timedelta(hours=int(offset[2]), minutes=int(offset[3])))
    delimiter = reader.string(table, "delimiter", "inbound", "auto")
    if delimiter not in ("auto", ",", ";", "\t", "|"):
        raise reader.fail("inbound.delimiter", 'must be "auto", ",", ";", "|" or a tab')
    list_separator = reader.string(table, "list_separator", "inbound", ";")
    referrers = reader.table(table, "referrers", "inbound.", required=False)
    for prefix, party in referrers.items():
        if not isinstance(party, str) or not party:
            raise reader.fail(f"inbound.referrers.{prefix}", "a party id is required")
    ordered = tuple(sorted(referrers.items(), key=lambda item: -len(item[0])))
    kinds_table = reader.table(table, "kinds", "inbound.")
    kinds = tuple(_kind(reader, name, spec, codes) for name, spec in kinds_table.items())
    if not kinds:
        raise reader.fail("inbound.kinds", "at least one file kind is required")
    seen: dict[str, str] = {}
    for kind in kinds:
        for prefix in kind.prefixes:
            for other, owner in seen.items():
                if prefix.startswith(other) or other.startswith(prefix):
                    raise reader.fail(f"inbound.kinds.{kind.name}.prefixes", f"overlaps with kind {owner}")
            seen[prefix] = kind.name
    return Inbound(
        timezone=zone,
        date_formats=reader.strings(table, "date_formats", "inbound"),
        datetime_formats=reader.strings(table, "datetime_formats", "inbound"),
        delimiter=delimiter,
        list_separator=list_separator,
        referrers=ordered,
        kinds=kinds,
    )


_KIND_KEYS: Final = {
    "prefixes", "type", "dataschema", "columns", "ignore", "constants", "derive", "recipients_from_case_id",
}  # fmt: skip
_COLUMN_KEYS: Final = {"field", "as", "code", "list", "required", "omit_when", "recipient"}


def _kind(reader: _Reader, name: str, spec: Any, codes: Mapping[str, CodeList]) -> FileKind:
    where = f"inbound.kinds.{name}"
    if not isinstance(spec, Mapping):
        raise reader.fail(where, "a table is required")
    reader.only(spec, _KIND_KEYS, where)
    event_type = reader.string(spec, "type", where)
    if not event_type.startswith("id.trafficking."):
        raise reader.fail(f"{where}.type", "an exchange type (id.trafficking.<name>) is required")
    dataschema = spec.get("dataschema")
    if dataschema is not None and (not isinstance(dataschema, str) or not dataschema):
        raise reader.fail(f"{where}.dataschema", "a schema id is required")
    columns: dict[str, Column] = {}
    for column_name, raw in reader.table(spec, "columns", f"{where}.").items():
        column = _column(reader, f"{where}.columns.{column_name}", column_name, raw, codes)
        if column.name in columns:
            raise reader.fail(f"{where}.columns.{column_name}", "listed twice (case and blanks are ignored)")
        columns[column.name] = column
    ignore = frozenset(normalise_header(c) for c in reader.strings(spec, "ignore", where, []))
    if ignore & set(columns):
        raise reader.fail(f"{where}.ignore", "a column is both mapped and ignored")
    constants = reader.table(spec, "constants", f"{where}.", required=False)
    for key in constants:
        reader.path_syntax(key, f"{where}.constants.{key}")
    derive = tuple(
        _derivation(reader, f"{where}.derive.{field}", field, raw)
        for field, raw in reader.table(spec, "derive", f"{where}.", required=False).items()
    )
    prefixes = tuple(p.casefold() for p in reader.strings(spec, "prefixes", where))
    return FileKind(
        name=name,
        prefixes=prefixes,
        type=event_type,
        dataschema=dataschema,
        columns=columns,
        ignore=ignore,
        constants=dict(constants),
        derive=derive,
        recipients_from_case_id=reader.boolean(spec, "recipients_from_case_id", where),
    )


def _column(reader: _Reader, where: str, name: str, raw: Any, codes: Mapping[str, CodeList]) -> Column:
    if not isinstance(raw, Mapping):
        raise reader.fail(where, "a table is required")
    reader.only(raw, _COLUMN_KEYS, where)
    field = raw.get("field")
    if field is not None:
        reader.path_syntax(field, f"{where}.field")
    recipient = reader.boolean(raw, "recipient", where)
    if field is None and not recipient:
        raise reader.fail(where, "needs a field, or recipient = true")
    convert = reader.string(raw, "as", where, "text")
    if convert not in CONVERSIONS:
        raise reader.fail(f"{where}.as", f"must be one of {', '.join(sorted(CONVERSIONS))}")
    code = raw.get("code")
    if code is not None:
        if code not in codes:
            raise reader.fail(f"{where}.code", "no such [codes.<name>] table")
        if convert != "text":
            raise reader.fail(where, "use either a code list or a conversion, not both")
    return Column(
        name=normalise_header(name),
        field=field,
        convert=convert,
        code=code,
        many=reader.boolean(raw, "list", where),
        required=reader.boolean(raw, "required", where),
        omit_when=raw.get("omit_when", _UNSET),
        recipient=recipient,
    )


def _derivation(reader: _Reader, where: str, field: str, raw: Any) -> Derivation:
    reader.path_syntax(field, where)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise reader.fail(where, "exactly one of template or difference is required")
    if "template" in raw:
        template = reader.string(raw, "template", where)
        for placeholder in _TEMPLATE_RE.findall(template):
            reader.path_syntax(placeholder, f"{where}.template")
        return Derivation(field=field, template=template)
    if "difference" in raw:
        operands = reader.strings(raw, "difference", where)
        if len(operands) != 2:
            raise reader.fail(f"{where}.difference", "two field paths are required")
        return Derivation(field=field, difference=(operands[0], operands[1]))
    raise reader.fail(where, "exactly one of template or difference is required")


def _outbound(reader: _Reader, table: Mapping[str, Any], codes: Mapping[str, CodeList]) -> Outbound:
    reader.only(table, {"kind_key", "leftover", "event", "common", "types"}, "outbound")
    event = tuple(
        _event_field(reader, f"outbound.event.{target}", target, raw)
        for target, raw in reader.table(table, "event", "outbound.").items()
    )
    common = _out_fields(reader, "outbound.common", reader.table(table, "common", "outbound."), codes)
    types: dict[str, OutboundType] = {}
    for event_type, spec in reader.table(table, "types", "outbound.", required=False).items():
        where = f"outbound.types.{event_type}"
        if not isinstance(spec, Mapping):
            raise reader.fail(where, "a table is required")
        reader.only(spec, {"kind", "fields"}, where)
        fields = _out_fields(reader, f"{where}.fields", reader.table(spec, "fields", f"{where}."), codes)
        types[event_type] = OutboundType(kind=reader.string(spec, "kind", where), fields=fields)
    return Outbound(
        kind_key=reader.string(table, "kind_key", "outbound"),
        leftover=reader.string(table, "leftover", "outbound"),
        event=event,
        common=common,
        types=types,
    )


def _event_field(reader: _Reader, where: str, target: str, raw: Any) -> OutField:
    reader.path_syntax(target, where)
    if raw not in EVENT_ATTRIBUTES:
        raise reader.fail(where, f"must be one of {', '.join(sorted(EVENT_ATTRIBUTES))}")
    return OutField(target=target, event=raw)


def _out_fields(
    reader: _Reader, where: str, table: Mapping[str, Any], codes: Mapping[str, CodeList]
) -> tuple[OutField, ...]:
    fields = []
    for target, raw in table.items():
        here = f"{where}.{target}"
        reader.path_syntax(target, here)
        if isinstance(raw, str):
            fields.append(OutField(target=target, paths=(reader.path_syntax(raw, here),)))
            continue
        if not isinstance(raw, Mapping):
            raise reader.fail(here, "a payload path or a table is required")
        reader.only(raw, {"from", "code", "join", "event"}, here)
        if "event" in raw:
            if len(raw) != 1:
                raise reader.fail(here, "event cannot be combined with other keys")
            fields.append(_event_field(reader, f"{here}.event", target, raw["event"]))
            continue
        code = raw.get("code")
        if code is not None and code not in codes:
            raise reader.fail(f"{here}.code", "no such [codes.<name>] table")
        if "join" in raw:
            if "from" in raw:
                raise reader.fail(here, "use either from or join")
            parts = _paths(reader, raw["join"], f"{here}.join")
            fields.append(OutField(target=target, paths=parts, join=True, code=code))
            continue
        path = reader.path_syntax(raw.get("from"), f"{here}.from")
        fields.append(OutField(target=target, paths=(path,), code=code))
    return tuple(fields)


def _paths(reader: _Reader, value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise reader.fail(where, "a list of payload paths is required")
    return tuple(reader.path_syntax(v, where) for v in value)
