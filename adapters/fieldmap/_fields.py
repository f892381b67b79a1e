"""Field specs and values: how one source value becomes one target value (code tables, kinds, formats).

Part of :mod:`adapters.fieldmap` (import from there); the options are documented in
``docs/adapters/README.md``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import GatewayError, Reason
from gateway.settings import Table

#: Value kinds a field may ask for with ``kind = "..."`` (see :func:`convert`).
KINDS: Final = ("str", "id", "int", "count", "bool", "date", "datetime", "phone", "name", "list", "raw")
#: Smallest exact person count an alert may carry (``_common`` suppressedCount).
SMALL_CELL: Final = 11
#: How a suppressed count (1..10) is published.
SUPPRESSED: Final = "<11"
TEMPLATE_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")

_TRUE: Final = frozenset({"true", "yes", "y", "1", "ya", "benar"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "tidak", "salah"})
_ISO_DATE_RE: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_GROUPED_INT_RE: Final = re.compile(r"^\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*$")
_OFFSET_RE: Final = re.compile(r"^([+-])([01][0-9]|2[0-3]):([0-5][0-9])$")
_CALLING_CODE_RE: Final = re.compile(r"^\+[1-9][0-9]{0,3}$")
_PHONE_RE: Final = re.compile(r"^\+[1-9][0-9]{1,14}$")
_PHONE_JUNK_RE: Final = re.compile(r"[\s().-]")
_DEFAULT_DATETIMES: Final = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z")


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


class MappingError(GatewayError):
    """A native record (or payload) cannot be mapped: ``field`` names the source field (column), ``problem``
    is a stable code (``unknown-code``, ``invalid-date``, ``missing-value``, ...), ``explanation`` says why.
    No value is kept."""

    def __init__(
        self,
        field_name: str,
        explanation: str,
        *,
        problem: str = "invalid-value",
        reason: Reason = Reason.SCHEMA_INVALID,
    ) -> None:
        super().__init__(reason, f"{field_name}: {explanation}")
        self.field = field_name
        self.problem = problem
        self.explanation = explanation


def _fold(code: str) -> str:
    return " ".join(code.split()).casefold()


def _as_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Tables:
    """Code tables (``[tables.<name>]``: native code -> exchange value).

    A value is looked up exactly, then ignoring case and blanks, because agency staff type ``Hygiene kit``
    as often as ``hygiene-kit``; with ``accept_exchange_values`` a value that is already one of the table's
    exchange values (``MY``, ``rptc-pontianak``) is accepted as written. :meth:`native` goes the other way:
    the first native code listed for an exchange value.
    """

    def __init__(
        self, tables: Mapping[str, Mapping[str, str | bool]], *, accept_exchange_values: bool = False
    ) -> None:
        self._exact = {name: dict(entries) for name, entries in tables.items()}
        self._folded = {
            name: {_fold(code): value for code, value in entries.items()} for name, entries in tables.items()
        }
        self._native: dict[str, dict[str, str]] = {}
        for name, entries in tables.items():
            back: dict[str, str] = {}
            for code, value in entries.items():
                if isinstance(value, str):
                    back.setdefault(value, code)
            self._native[name] = back
        self.accept_exchange_values = accept_exchange_values

    @classmethod
    def read(cls, table: Table, *, accept_exchange_values: bool = False) -> Tables:
        """``[tables]`` of a mapping file: each a non-empty table of text or true/false values, no code
        listed twice (case and blanks ignored)."""
        tables: dict[str, dict[str, str | bool]] = {}
        for name in table:
            entries = table.table(name)
            if not len(entries):
                raise entries.fail("", "a table of codes is required")
            codes: dict[str, str | bool] = {}
            seen: set[str] = set()
            for code in entries:
                value = entries.raw(code)
                if not isinstance(value, str | bool) or value == "":
                    raise entries.fail(code, "a text or true/false value is required")
                if _fold(code) in seen:
                    raise entries.fail(code, "listed twice (case and blanks are ignored)")
                seen.add(_fold(code))
                codes[code] = value
            tables[name] = codes
        return cls(tables, accept_exchange_values=accept_exchange_values)

    def __contains__(self, name: object) -> bool:
        return name in self._exact

    def names(self) -> list[str]:
        return sorted(self._exact)

    def values(self, name: str) -> list[str | bool]:
        """The exchange values of table ``name`` (as listed, repeats included)."""
        return list(self._exact[name].values())

    def lookup(self, name: str, value: Any, field_name: str) -> Any:
        """The exchange value of native ``value``; :class:`MappingError` (``unknown-code``) if none."""
        entries = self._exact.get(name)
        if entries is None:
            raise MappingError(field_name, f"mapping table {name!r} is not defined", problem="unknown-table")
        key = _as_key(value)
        if key in entries:
            return entries[key]
        folded = _fold(key)
        if folded in self._folded[name]:
            return self._folded[name][folded]
        if self.accept_exchange_values and key.strip() in self._native[name]:
            return key.strip()
        raise MappingError(field_name, f"value not in mapping table {name!r}", problem="unknown-code")

    def native(self, name: str, value: Any) -> Any:
        """The first native code listed for exchange ``value``, or ``value`` unchanged when there is none
        (nothing is invented: ``NonConforming`` has no L/P)."""
        if isinstance(value, str):
            return self._native[name].get(value, value)
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Formats:
    """How text is read as dates, date-times and phone numbers (``[formats]``; all optional)."""

    timezone: _dt.tzinfo = _dt.UTC
    """The offset of a date-time written without one (``timezone = "+07:00"``: WIB)."""
    dates: tuple[str, ...] = ()
    """``strptime`` patterns tried in order for ``kind = "date"``; none: ISO ``YYYY-MM-DD``."""
    datetimes: tuple[str, ...] = _DEFAULT_DATETIMES
    """``strptime`` patterns tried in order for ``kind = "datetime"``."""
    calling_code: str | None = None
    """``kind = "phone"``: national numbers (``0812...``) get this country code (``+62``)."""

    @classmethod
    def read(cls, table: Table) -> Formats:
        zone: _dt.tzinfo = _dt.UTC
        offset_text = table.string("timezone", None)
        if offset_text is not None:
            offset = _OFFSET_RE.match(offset_text)
            if offset is None:
                raise table.fail("timezone", "an offset such as +07:00 is required")
            sign = -1 if offset[1] == "-" else 1
            zone = _dt.timezone(sign * _dt.timedelta(hours=int(offset[2]), minutes=int(offset[3])))
        calling_code = table.string("calling_code", None)
        if calling_code is not None and not _CALLING_CODE_RE.match(calling_code):
            raise table.fail("calling_code", "a country calling code such as +62 is required")
        formats = cls(
            timezone=zone,
            dates=table.strings("dates", ()),
            datetimes=table.strings("datetimes", _DEFAULT_DATETIMES, empty=False),
            calling_code=calling_code,
        )
        table.refuse_unknown()
        return formats


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one target field is produced. Built from a ``[<message>.fields]`` entry; see the module
    docstring and ``docs/adapters/README.md`` for the options."""

    target: str
    source: str | None = None
    const: Any = None
    join: tuple[str, ...] = ()
    table: str | None = None
    reverse: bool = False
    kind: str = "str"
    split: str = ";"
    thousands: bool = False
    default: Any = None
    required: bool = False
    omit_when: Any = UNSET
    template: str | None = None
    difference: tuple[str, str] | None = None
    each: str | None = None
    fields: tuple[FieldSpec, ...] = ()

    @property
    def derived(self) -> bool:
        """Computed from other fields of the result (``template``/``difference``) when still absent."""
        return self.template is not None or self.difference is not None

    def reads(self) -> tuple[str, ...]:
        """The source paths this spec reads (context ``$`` paths included)."""
        if self.each is not None:
            return (self.each,)
        if self.source is not None:
            return (self.source,)
        return self.join

    def omits(self, value: Any) -> bool:
        if isinstance(self.omit_when, Unset):
            return False
        return type(value) is type(self.omit_when) and bool(value == self.omit_when)


def convert(raw: Any, spec: FieldSpec, tables: Tables, formats: Formats | None = None) -> Any:
    """Convert one present source value per ``spec.table`` (``reverse``: exchange -> native) and
    ``spec.kind``; raises :class:`MappingError` naming ``spec.source`` and a problem code."""
    formats = formats or Formats()
    name = spec.source or spec.target

    def translate(value: Any) -> Any:
        if spec.table is None:
            return value
        if spec.reverse:
            return tables.native(spec.table, value)
        return tables.lookup(spec.table, value, name)

    kind = spec.kind
    if kind == "raw":
        value = [translate(v) for v in raw] if isinstance(raw, list) and spec.table else translate(raw)
        return copy.deepcopy(value)
    if kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(spec.split)
        result: list[Any] = []
        for item in items:
            if is_blank(item):
                continue
            mapped = translate(item.strip() if isinstance(item, str) else item)
            if mapped not in result:  # HTCDS multiselects are sets (uniqueItems)
                result.append(mapped)
        return result
    if kind == "count" and isinstance(raw, str) and raw.strip() == SUPPRESSED:
        return SUPPRESSED  # already suppressed at the source
    value = translate(raw)
    converter = _CONVERTERS[kind]
    return converter(value, name, spec, formats)


def _to_text(value: Any, name: str, _spec: FieldSpec, _formats: Formats) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(name, "expected text", problem="invalid-text")
    return str(int(value)) if float(value).is_integer() else str(value)


def _to_id(value: Any, name: str, spec: FieldSpec, formats: Formats) -> str:
    return _to_text(value, name, spec, formats).upper()


def _whole_number(value: Any, name: str, spec: FieldSpec, problem: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
        if spec.thousands and _GROUPED_INT_RE.match(text):  # "2,500" or "2.500" (Indonesian grouping)
            return int(re.sub(r"[.,]", "", text))
    raise MappingError(name, "expected a whole number", problem=problem)


def _to_int(value: Any, name: str, spec: FieldSpec, _formats: Formats) -> int:
    return _whole_number(value, name, spec, "invalid-integer")


def _to_count(value: Any, name: str, spec: FieldSpec, _formats: Formats) -> int | str:
    return suppress_count(_whole_number(value, name, spec, "invalid-count"))


def _to_bool(value: Any, name: str, _spec: FieldSpec, _formats: Formats) -> bool:
    if isinstance(value, bool):
        return value
    text = _as_key(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MappingError(name, "expected true or false", problem="invalid-bool")


def _to_date(value: Any, name: str, _spec: FieldSpec, formats: Formats) -> str:
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    text = str(value).strip()
    if formats.dates:
        for pattern in formats.dates:
            try:
                return _dt.datetime.strptime(text, pattern).date().isoformat()
            except ValueError:
                continue
        raise MappingError(name, f"expected a date as {' or '.join(formats.dates)}", problem="invalid-date")
    match = _ISO_DATE_RE.match(text)
    if match is None:
        raise MappingError(name, "expected a date YYYY-MM-DD", problem="invalid-date")
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3])).isoformat()
    except ValueError:
        raise MappingError(name, "not a calendar date", problem="invalid-date") from None


def _to_datetime(value: Any, name: str, _spec: FieldSpec, formats: Formats) -> str:
    text = str(value).strip()
    for pattern in formats.datetimes:
        try:
            parsed = _dt.datetime.strptime(text, pattern)  # naive means local: zone added below
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=formats.timezone)
        return parsed.isoformat(timespec="seconds").replace("+00:00", "Z")
    raise MappingError(
        name,
        f"expected a date and time as {' or '.join(formats.datetimes)}",
        problem="invalid-datetime",
    )


def _to_phone(value: Any, name: str, _spec: FieldSpec, formats: Formats) -> str:
    """E.164 from what people type: ``00`` -> ``+``; with a ``calling_code`` (``+62``) a national ``0812...``
    -> ``+62812...`` and ``62812...`` -> ``+62812...``; blanks, dots, dashes and brackets dropped."""
    digits = _PHONE_JUNK_RE.sub("", str(value))
    code = formats.calling_code
    if digits.startswith("00"):
        digits = f"+{digits[2:]}"
    elif code is not None and digits.startswith("0"):
        digits = f"{code}{digits[1:]}"
    elif code is not None and digits.startswith(code[1:]):
        digits = f"+{digits}"
    if not _PHONE_RE.match(digits):
        raise MappingError(name, "expected a phone number (E.164)", problem="invalid-phone")
    return digits


def _to_name(value: Any, name: str, spec: FieldSpec, formats: Formats) -> dict[str, str]:
    """A person's name as HTCDS ``prs_FirstName`` (first word) and ``prs_SecondName`` (the rest)."""
    parts = _to_text(value, name, spec, formats).split()
    person = {"prs_FirstName": parts[0]}
    if len(parts) > 1:
        person["prs_SecondName"] = " ".join(parts[1:])
    return person


_CONVERTERS: Final[Mapping[str, Callable[[Any, str, FieldSpec, Formats], Any]]] = {
    "str": _to_text,
    "id": _to_id,
    "int": _to_int,
    "count": _to_count,
    "bool": _to_bool,
    "date": _to_date,
    "datetime": _to_datetime,
    "phone": _to_phone,
    "name": _to_name,
}


def suppress_count(count: int) -> int | str:
    """Small-cell suppression for person counts in alerts: 0 and >= 11 as they are, 1..10 as ``"<11"``.

    The alert schemas refuse an exact 1..10 (a small group can be singled out); quarantining the record
    instead would lose the alert, so the adapters publish the suppressed form the schema asks for.
    """
    if count < 0:
        raise MappingError("count", "must not be negative", problem="invalid-count")
    return count if count == 0 or count >= SMALL_CELL else SUPPRESSED


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def is_blank(value: Any) -> bool:
    """Absent, empty, or only blanks (a cell holding spaces is an empty cell)."""
    return is_empty(value) or (isinstance(value, str) and not value.strip())
