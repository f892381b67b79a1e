"""Declarative field mapping shared by the Kemlu/KBRI and IOM adapters: native records <-> exchange payloads.

Why a small engine instead of hand-written ``payload["x"] = record["y"]`` code: the mapping tables are the
part agencies review and change (a new code in the embassy system, an IOM location added to a programme),
so they live in each adapter's ``mapping.toml`` where a reviewer without Python can read them, and the code
that applies them is written, tested and hardened once. The engine is deliberately small: it renames and
converts fields and translates codes; message-level decisions (which messages a record yields, who may open
sealed fields) stay in the adapter code, next to the explanation of why.

A *message map* is a TOML table of target fields (dotted paths build nested objects)::

    [referral.fields]
    case_id = { from = "id_kasus" }
    "identity.prs_Gender" = { from = "wni.jenis_kelamin", table = "jenis_kelamin" }
    vic_TypeOfExploitation = { from = "eksploitasi.jenis", kind = "list", table = "jenis_eksploitasi" }

    [referral.fields.trafficking_events]          # a list of objects, one per element of the source list
    each = "kronologi"
    fields = { hte_Type = { from = "tahap", table = "tahap" }, hte_Country = { from = "negara" } }

Field options: ``from`` (dotted source path; ``$name`` reads a context value such as ``$party``), ``const``
(a fixed value), ``table`` (translate through ``[tables.<name>]``), ``kind`` (``str`` default, ``int``,
``bool``, ``date``, ``list``, ``count``, ``raw``), ``split`` (separator for ``list`` values given as text,
default ``;``), ``default`` (used when the source is absent). Absent or empty values are left out, and
objects or lists that end up empty are dropped, so optional (and sealed) blocks appear only with content;
whether a field is *required* is the message schema's business, checked right after mapping.

Errors are :class:`MappingError` (``schema.invalid``) naming the source field and the table, never the
value: the records are about trafficked people, and an unmapped code can be a name typed in the wrong
column.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError, Reason
from gateway.settings import load_toml

__all__ = [
    "SMALL_CELL",
    "FieldSpec",
    "MappingError",
    "MessageMap",
    "Tables",
    "load_mapping_file",
    "parse_message_map",
    "parse_tables",
    "resolve",
    "suppress_count",
]

_KINDS: Final = frozenset({"str", "int", "bool", "date", "list", "count", "raw"})
_FIELD_KEYS: Final = frozenset({"from", "const", "table", "kind", "split", "default", "each", "fields"})
_TRUE: Final = frozenset({"true", "yes", "y", "1", "ya", "benar"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "tidak", "salah"})
_DATE_RE: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_DETAIL_PATH_RE: Final = re.compile(r"^\$((?:\.[A-Za-z_*][A-Za-z0-9_-]*|\[\d+\])*)")
_REQUIRED_RE: Final = re.compile(r"required property '([A-Za-z0-9_]+)' missing")
_GROUPED_INT_RE: Final = re.compile(r"^\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*$")
#: Smallest exact person count an alert may carry (``_common`` suppressedCount).
SMALL_CELL: Final = 11


class MappingError(GatewayError):
    """A native record cannot be mapped. ``field`` names the native field (column); no value is kept."""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(Reason.SCHEMA_INVALID, f"{field_name}: {detail}")
        self.field = field_name
        self.problem = detail


class Tables:
    """Code tables (``[tables.<name>]``: native code -> exchange value), looked up exactly, then ignoring case
    and surrounding blanks, because agency staff type ``Hygiene kit`` as often as ``hygiene-kit``."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]]) -> None:
        self._exact = {name: dict(entries) for name, entries in tables.items()}
        self._folded = {
            name: {str(code).strip().casefold(): value for code, value in entries.items()}
            for name, entries in tables.items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._exact

    def names(self) -> list[str]:
        return sorted(self._exact)

    def lookup(self, name: str, value: Any, field_name: str) -> Any:
        entries = self._exact.get(name)
        if entries is None:
            raise MappingError(field_name, f"mapping table {name!r} is not defined")
        key = _as_key(value)
        if key in entries:
            return entries[key]
        folded = self._folded[name].get(key.strip().casefold())
        if folded is None:
            raise MappingError(field_name, f"value not in mapping table {name!r}")
        return folded


def _as_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one target field is produced. Built by :func:`parse_message_map`; see the module docstring."""

    target: str
    source: str | None = None
    const: Any = None
    table: str | None = None
    kind: str = "str"
    split: str = ";"
    default: Any = None
    each: str | None = None
    fields: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageMap:
    """The field specs of one message, in file order (so the output reads like the mapping file)."""

    name: str
    fields: tuple[FieldSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def apply(
        self, record: Mapping[str, Any], tables: Tables, context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Map ``record`` (with ``$name`` context values) to a payload; raises :class:`MappingError`.

        With the option ``unmapped = "<target path>"``, top-level record fields that no spec reads are
        copied unchanged under that path: for outbound shapes, where a field added by a newer schema minor
        version must reach the agency rather than vanish until someone updates the mapping.
        """
        scope = {**record, **{f"${k}": v for k, v in (context or {}).items()}}
        out = _apply_fields(self.fields, scope, tables)
        unmapped_target = self.options.get("unmapped")
        if isinstance(unmapped_target, str) and unmapped_target:
            read = self.read_roots()
            rest = {k: v for k, v in record.items() if k not in read and not _is_empty(v)}
            if rest:
                _assign(out, unmapped_target, rest)
        return out

    def read_roots(self) -> frozenset[str]:
        """The top-level record fields some spec reads."""
        roots = set()
        for spec in self.fields:
            path = spec.each or spec.source
            if path is not None and not path.startswith("$"):
                roots.add(path.split(".", 1)[0])
        return frozenset(roots)

    def source_of(self, target: str) -> str | None:
        """The native field (column) a target field comes from, to name it in a schema error.

        ``target`` is a dotted path (``consent.given_at``); the longest prefix that is a mapped field wins,
        else the first mapped field under it (``consent`` -> the source of ``consent.con_Consent``)."""
        parts = target.split(".")
        by_target = {spec.target: spec for spec in self.fields}
        for end in range(len(parts), 0, -1):
            spec = by_target.get(".".join(parts[:end]))
            if spec is not None:
                return spec.each or spec.source or spec.target
        for spec in self.fields:
            if spec.target.startswith(f"{target}."):
                return spec.each or spec.source or spec.target
        return None

    def source_for_detail(self, detail: str) -> str | None:
        """The native field behind a schema error detail such as ``$.consent.given_at: pattern ...`` or
        ``$: required property 'case_id' missing``."""
        match = _DETAIL_PATH_RE.match(detail)
        if match is None:
            return None
        parts = [p for p in re.split(r"\.|\[\d+\]", match[1]) if p and p != "*"]
        missing = _REQUIRED_RE.search(detail)
        if missing is not None:
            parts.append(missing[1])
        return self.source_of(".".join(parts)) if parts else None


def _apply_fields(specs: Sequence[FieldSpec], scope: Mapping[str, Any], tables: Tables) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        value = _produce(spec, scope, tables)
        if _is_empty(value):
            continue
        _assign(out, spec.target, value)
    return _prune(out)


def _produce(spec: FieldSpec, scope: Mapping[str, Any], tables: Tables) -> Any:
    if spec.each is not None:
        items = resolve(scope, spec.each)
        if _is_empty(items):
            return None
        if not isinstance(items, list):
            raise MappingError(spec.each, "expected a list")
        produced = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise MappingError(f"{spec.each}[{index}]", "expected an object")
            try:
                mapped = _apply_fields(spec.fields, {**item, **_context_only(scope)}, tables)
            except MappingError as exc:
                raise MappingError(f"{spec.each}[{index}].{exc.field}", exc.problem) from None
            if mapped:
                produced.append(mapped)
        return produced
    if spec.source is None:
        return spec.const
    raw = resolve(scope, spec.source)
    if _is_empty(raw):
        raw = spec.default
        if _is_empty(raw):
            return None
    return convert(raw, spec, tables)


def _context_only(scope: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scope.items() if k.startswith("$")}


def convert(raw: Any, spec: FieldSpec, tables: Tables) -> Any:
    """Convert one present source value per ``spec.kind`` and ``spec.table``."""
    name = spec.source or spec.target
    kind = spec.kind
    if kind == "raw":
        return tables.lookup(spec.table, raw, name) if spec.table else raw
    if kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(spec.split)
        result: list[Any] = []
        for item in items:
            if _is_empty(item) or (isinstance(item, str) and not item.strip()):
                continue
            text = item.strip() if isinstance(item, str) else item
            mapped = tables.lookup(spec.table, text, name) if spec.table else text
            if mapped not in result:  # HTCDS multiselects are sets (uniqueItems)
                result.append(mapped)
        return result
    value = tables.lookup(spec.table, raw, name) if spec.table else raw
    if kind == "str":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MappingError(name, "expected text")
        return _number_text(value)
    if kind == "int":
        return _to_int(value, name)
    if kind == "count":
        return suppress_count(_to_int(value, name))
    if kind == "bool":
        return _to_bool(value, name)
    if kind == "date":
        return _to_date(value, name)
    raise MappingError(name, f"unknown kind {kind!r}")  # pragma: no cover - rejected at load time


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _to_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise MappingError(name, "expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise MappingError(name, "expected a whole number")
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if _GROUPED_INT_RE.match(text):  # "2,500" or "2.500" (Indonesian thousands separator)
        return int(re.sub(r"[.,]", "", text))
    raise MappingError(name, "expected a whole number")


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = _as_key(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MappingError(name, "expected true or false")


def _to_date(value: Any, name: str) -> str:
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    match = _DATE_RE.match(str(value).strip())
    if match is None:
        raise MappingError(name, "expected a date YYYY-MM-DD")
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3])).isoformat()
    except ValueError:
        raise MappingError(name, "not a calendar date") from None


def suppress_count(count: int) -> int | str:
    """Small-cell suppression for person counts in alerts: 0 stays 0, 1..10 become ``"<11"``."""
    if count < 0:
        raise MappingError("count", "must not be negative")
    return count if count == 0 or count >= SMALL_CELL else "<11"


def resolve(scope: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in nested mappings, or None. A top-level key may itself hold dots (a
    column named ``a.b`` in a spreadsheet), so the whole path is tried first."""
    if path in scope:
        return scope[path]
    current: Any = scope
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def _assign(out: dict[str, Any], target: str, value: Any) -> None:
    parts = target.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _prune(node: dict[str, Any]) -> dict[str, Any]:
    pruned = {}
    for key, value in node.items():
        kept = _prune(value) if isinstance(value, dict) else value
        if not _is_empty(kept):
            pruned[key] = kept
    return pruned


# ---- loading -------------------------------------------------------------------------------------------


def load_mapping_file(path: Path) -> dict[str, Any]:
    """Read a ``mapping.toml``; a broken file is a configuration error naming the file, not a crash."""
    return load_toml(path, what="mapping")


def parse_tables(document: Mapping[str, Any], where: str) -> Tables:
    raw = document.get("tables", {})
    if not isinstance(raw, Mapping) or not all(isinstance(t, Mapping) for t in raw.values()):
        raise GatewayError(Reason.CONFIG_INVALID, f"{where}: [tables.<name>] must be tables of codes")
    return Tables(raw)


def parse_message_map(name: str, table: Any, tables: Tables, where: str) -> MessageMap:
    """Build a :class:`MessageMap` from ``[<name>]`` (with a ``fields`` sub-table); checks every table name
    and kind now, so a typo in the mapping file stops the gateway at start-up, not at the first record."""
    if not isinstance(table, Mapping) or not isinstance(table.get("fields"), Mapping):
        raise GatewayError(Reason.CONFIG_INVALID, f"{where}: [{name}.fields] is required")
    specs = _parse_fields(table["fields"], tables, f"{where}: {name}.fields")
    options = {k: v for k, v in table.items() if k != "fields"}
    return MessageMap(name=name, fields=specs, options=options)


def _parse_fields(fields: Mapping[str, Any], tables: Tables, where: str) -> tuple[FieldSpec, ...]:
    specs = []
    for target, raw in fields.items():
        here = f"{where}.{target}"
        if not isinstance(raw, Mapping):
            raise GatewayError(Reason.CONFIG_INVALID, f"{here}: must be a table")
        unknown = set(raw) - _FIELD_KEYS
        if unknown:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"{here}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        if "each" in raw:
            if not isinstance(raw["each"], str) or not isinstance(raw.get("fields"), Mapping):
                raise GatewayError(Reason.CONFIG_INVALID, f"{here}: 'each' needs a source path and 'fields'")
            nested = _parse_fields(raw["fields"], tables, here)
            specs.append(FieldSpec(target=target, each=raw["each"], fields=nested))
            continue
        source, has_const = raw.get("from"), "const" in raw
        if (source is None) == (not has_const) or (source is not None and not isinstance(source, str)):
            raise GatewayError(Reason.CONFIG_INVALID, f"{here}: give exactly one of 'from' or 'const'")
        kind = raw.get("kind", "str")
        if kind not in _KINDS:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"{here}: kind must be one of {', '.join(sorted(_KINDS))}"
            )
        table_name = raw.get("table")
        if table_name is not None and table_name not in tables:
            raise GatewayError(Reason.CONFIG_INVALID, f"{here}: no [tables.{table_name}]")
        split = raw.get("split", ";")
        if not isinstance(split, str) or not split:
            raise GatewayError(Reason.CONFIG_INVALID, f"{here}: split must be a non-empty string")
        specs.append(
            FieldSpec(
                target=target,
                source=source,
                const=raw.get("const"),
                table=table_name,
                kind=kind,
                split=split,
                default=raw.get("default"),
            )
        )
    return tuple(specs)
