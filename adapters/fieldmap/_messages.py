"""Message maps: the field specs of one message applied to a record (nesting, lists, derived fields).

Part of :mod:`adapters.fieldmap` (import from there).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.fieldmap._fields import (
    TEMPLATE_RE,
    FieldSpec,
    Formats,
    MappingError,
    Tables,
    convert,
    is_blank,
    is_empty,
)

_DETAIL_PATH_RE: Final = re.compile(r"^\$((?:\.[A-Za-z_*][A-Za-z0-9_-]*|\[\d+\])*)")
_REQUIRED_RE: Final = re.compile(r"required property '([A-Za-z0-9_]+)' missing")


@dataclass(frozen=True, slots=True)
class MessageMap:
    """The field specs of one message, in file order (so the output reads like the mapping file)."""

    name: str
    fields: tuple[FieldSpec, ...]
    unmapped: str | None = None
    """Where payload fields no spec reads are copied unchanged (outbound shapes only), or None."""
    unmapped_depth: str = "top"
    """``top``: a top-level field no spec reads anything of; ``any``: every value no spec reads (or reads a
    parent of), nested as in the record."""
    formats: Formats = field(default_factory=Formats)
    reading_order: tuple[int, ...] | None = None
    """The order fields are produced in (indexes into ``fields``), when not file order: see
    :meth:`read_in_order`."""

    def apply(
        self, record: Mapping[str, Any], tables: Tables, context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Map ``record`` (with ``$name`` context values) to a payload; raises :class:`MappingError`.

        Fields are produced in file order; then ``required`` fields are checked; then derived fields
        (``template``, ``difference``) fill what is still absent. With ``unmapped``, record fields that no
        spec reads are copied unchanged under that path: for outbound shapes, where a field added by a newer
        schema minor version must reach the agency rather than vanish until someone updates the mapping.
        """
        scope = _Scope(record, {f"${k}": v for k, v in (context or {}).items()})
        out = _apply_fields(self.fields, scope, tables, self.formats, self.reading_order)
        if self.unmapped is not None:
            if self.unmapped_depth == "any":
                rest = _without(record, scope.consumed)
            else:
                read = self.read_roots()
                rest = {k: copy.deepcopy(v) for k, v in record.items() if k not in read and not is_empty(v)}
            if rest:
                _assign(out, self.unmapped, rest)
        return out

    def read_in_order(self, positions: Mapping[str, int]) -> MessageMap:
        """This map, producing its fields in the order of the ``positions`` of their sources (a CSV header's
        columns, so the first problem of a row is its leftmost cell's); fields without a position last.
        Required fields are still checked, and errors named, in file order."""
        last = len(positions)
        order = sorted(
            range(len(self.fields)), key=lambda i: positions.get(self.fields[i].source or "", last)
        )
        return dataclasses.replace(self, reading_order=tuple(order))

    def read_roots(self) -> frozenset[str]:
        """The top-level record fields some spec reads."""
        return frozenset(
            path.split(".", 1)[0] for spec in self.fields for path in spec.reads() if not path.startswith("$")
        )

    def source_of(self, target: str) -> str | None:
        """The native field (column) a target field comes from, to name it in a schema error.

        ``target`` is a dotted path (``consent.given_at``); the longest prefix that is a mapped field wins,
        else the first mapped field under it (``consent`` -> the source of ``consent.con_Consent``). Fields
        without a native source (constants, context values, derived fields) name nothing."""
        sourced = [spec for spec in self.fields if _native_source(spec) is not None]
        parts = target.split(".")
        by_target = {spec.target: spec for spec in sourced}
        for end in range(len(parts), 0, -1):
            spec = by_target.get(".".join(parts[:end]))
            if spec is not None:
                return _native_source(spec)
        for spec in sourced:
            if spec.target.startswith(f"{target}."):
                return _native_source(spec)
        return None

    def source_for_detail(self, detail: str) -> str | None:
        """The native field behind the first schema error of a detail such as ``$.consent.given_at: pattern
        ...`` or ``$: required property 'case_id' missing``."""
        first = detail.split("; ", 1)[0]
        match = _DETAIL_PATH_RE.match(first)
        if match is None:
            return None
        parts = [p for p in re.split(r"\.|\[\d+\]", match[1]) if p and p != "*"]
        missing = _REQUIRED_RE.search(first)
        if missing is not None:
            parts.append(missing[1])
        return self.source_of(".".join(parts)) if parts else None


def _native_source(spec: FieldSpec) -> str | None:
    path = spec.each or spec.source or (spec.join[0] if spec.join else None)
    return None if path is None or path.startswith("$") else path


class _Scope:
    """The record and the ``$`` context values a spec reads from; remembers which record paths were read."""

    def __init__(self, record: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        self.record = record
        self.context = context
        self.consumed: set[str] = set()

    def get(self, path: str) -> Any:
        if path.startswith("$"):
            return resolve(self.context, path)
        value = resolve(self.record, path)
        if value is not None:
            self.consumed.add(path)
        return value

    def within(self, item: Mapping[str, Any]) -> _Scope:
        return _Scope(item, self.context)


def _apply_fields(
    specs: Sequence[FieldSpec],
    scope: _Scope,
    tables: Tables,
    formats: Formats,
    order: Sequence[int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs if order is None else (specs[i] for i in order):
        if spec.derived and spec.source is None:
            continue
        value = _produce(spec, scope, tables, formats)
        if is_empty(value) or spec.omits(value):
            continue
        _assign(out, spec.target, value)
    for spec in specs:
        if spec.required and spec.source is not None and is_blank(scope.get(spec.source)):
            raise MappingError(spec.source, "required value is empty", problem="missing-value")
    for spec in specs:
        if spec.derived and resolve(out, spec.target) is None:
            value = _derive(spec, out, tables, formats)
            if not is_empty(value):
                _assign(out, spec.target, value)
    return out


def _produce(spec: FieldSpec, scope: _Scope, tables: Tables, formats: Formats) -> Any:
    if spec.each is not None:
        items = scope.get(spec.each)
        if is_empty(items):
            return None
        if not isinstance(items, list):
            raise MappingError(spec.each, "expected a list", problem="invalid-list")
        produced = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise MappingError(f"{spec.each}[{index}]", "expected an object", problem="invalid-object")
            try:
                mapped = _apply_fields(spec.fields, scope.within(item), tables, formats)
            except MappingError as exc:
                raise MappingError(
                    f"{spec.each}[{index}].{exc.field}",
                    exc.explanation,
                    problem=exc.problem,
                    reason=exc.reason,
                ) from None
            if mapped:
                produced.append(mapped)
        return produced
    if spec.join:
        parts = [value for value in (scope.get(path) for path in spec.join) if value is not None]
        return convert(" ".join(str(p) for p in parts), spec, tables, formats) if parts else None
    if spec.source is None:
        return spec.const
    raw = scope.get(spec.source)
    if is_blank(raw):
        raw = spec.default
        if is_empty(raw):
            return None
    return convert(raw, spec, tables, formats)


def _derive(spec: FieldSpec, out: Mapping[str, Any], tables: Tables, formats: Formats) -> Any:
    if spec.template is not None:
        values = {}
        for name in TEMPLATE_RE.findall(spec.template):
            value = resolve(out, name)
            if not isinstance(value, str | int) or isinstance(value, bool):
                return None  # an input is missing: leave the field out, the schema will say whether it may be
            values[name] = str(value)
        return convert(TEMPLATE_RE.sub(lambda m: values[m[1]], spec.template), spec, tables, formats)
    if spec.difference is not None:
        left, right = (resolve(out, path) for path in spec.difference)
        if isinstance(left, int) and isinstance(right, int):
            return max(0, left - right)
    return None


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


def _assign(out: dict[str, Any], target: str, value: Any) -> None:
    """Set a dotted path, creating objects; an object value is merged into one already there (``identity``
    from a name column, ``identity.prs_Gender`` from another)."""
    parts = target.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    leaf = parts[-1]
    existing = node.get(leaf)
    if isinstance(value, Mapping) and isinstance(existing, dict):
        existing.update(value)
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


def _without(record: Mapping[str, Any], consumed: Collection[str], prefix: str = "") -> dict[str, Any]:
    """A copy of ``record`` minus the consumed paths (and what is under them); objects left empty go."""
    rest: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if path in consumed:
            continue
        if isinstance(value, Mapping):
            inner = _without(value, consumed, f"{path}.")
            if inner:
                rest[key] = inner
        else:
            rest[key] = copy.deepcopy(value)
    return rest
