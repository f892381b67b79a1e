"""Structural check of the minor-version rule: a new minor version must accept every payload the old one did.

Why: consumers pin a ``dataschema`` and producers move to a new minor at their own pace, so a minor version
that rejects something its predecessor accepted breaks a live exchange (a referral is dead-lettered instead of
reaching a shelter). Deciding schema inclusion exactly is hard in general; this module approximates it
*conservatively* by comparing the two schemas keyword by keyword, and reports anything it cannot prove is a
widening. False alarms are possible (a reviewer can then bump the major); silent narrowing should not be.

How a node is compared: a schema node is expanded into the *conjunction* of itself, the targets of its
``$ref`` (resolved through a :class:`referencing.Registry`, so refs into ``_common`` are followed, across
``_common`` versions too) and its ``allOf`` members. The effective constraint of each keyword is then derived
from all parts (intersection of ``type``/``enum``, tightest bound, union of ``required``/``pattern``) and the
old and new effective constraints are compared. Recursion follows ``properties``, ``items``,
``prefixItems``, ``additionalProperties`` (as a schema), ``anyOf``/``oneOf`` (index-wise) and ``$defs``.
Assertion keywords it does not model (``not``, ``if``, ``dependentSchemas``, ...) must be unchanged.

Also reported, though they do not change which payloads validate: a property's ``x-seal`` category changing
(that changes what is encrypted and for whom) and a changed top-level ``x-dataclassification`` or
``x-partitionkey`` (authorisation and Kafka record keys of a type must not move within a major version).

Each problem names the JSON-pointer path in the *old* schema (``#/properties/identity/...``); schema values
(enum members, patterns, bounds) may appear in messages, instance data never does (there is none here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin

from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:  # referencing exports Resolver only from its private module; used for annotations
    from referencing._core import Resolver

__all__ = ["incompatibilities"]

# Keywords that constrain instances but are not modelled below: any change (other than removal, which only
# widens) is reported as unverifiable.
_OPAQUE: Final = (
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "contains",
    "minContains",
    "maxContains",
    "uniqueItems",
    "multipleOf",
    "propertyNames",
    "patternProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "contentSchema",
)
_LENGTH_MINIMA: Final = ("minLength", "minItems", "minProperties")
_LENGTH_MAXIMA: Final = ("maxLength", "maxItems", "maxProperties")
_ROOT_ANNOTATIONS: Final = ("x-dataclassification", "x-partitionkey")
_ANNOTATIONS: Final = frozenset(
    {"title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly"}
)


@dataclass(frozen=True, slots=True)
class _Part:
    """One conjunct of a schema node: the subschema, how to resolve refs inside it, and where it lives."""

    schema: Mapping[str, Any] | bool
    resolver: Resolver[Any]
    base: str  # absolute URI (no fragment) of the document the subschema is in
    pointer: str  # JSON pointer of the subschema inside that document

    @property
    def location(self) -> str:
        return f"{self.base}#{self.pointer}"

    def child(self, schema: Any, *tokens: str | int) -> _Part:
        pointer = self.pointer + "".join("/" + _escape(str(token)) for token in tokens)
        return _Part(schema, self.resolver, self.base, pointer)

    def get(self, keyword: str) -> Any:
        return self.schema.get(keyword) if isinstance(self.schema, Mapping) else None

    def has(self, keyword: str) -> bool:
        return isinstance(self.schema, Mapping) and keyword in self.schema


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _join(base: str, ref: str) -> tuple[str, str]:
    """(document URI, JSON pointer) a ``$ref`` names. ``urljoin`` mangles ``urn:`` bases, so do it by hand."""
    document, _, fragment = ref.partition("#")
    if not document:
        document = base
    elif ":" not in document.split("/", 1)[0]:  # relative reference (our schemas use absolute URNs)
        document = urljoin(base, document)
    return document, fragment


def _canonical(value: Any) -> str:
    """A hashable identity for a JSON value with JSON Schema equality (``1 == 1.0``, ``true != 1``)."""

    def normalise(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, Mapping):
            return {key: normalise(val) for key, val in item.items()}
        if isinstance(item, list | tuple):
            return [normalise(val) for val in item]
        return item

    return json.dumps(normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self._seen_problems: set[str] = set()
        self._done: set[tuple[str, str]] = set()

    def report(self, path: str, message: str) -> None:
        text = f"{path}: {message}"
        if text not in self._seen_problems:
            self._seen_problems.add(text)
            self.problems.append(text)

    # -- expansion -------------------------------------------------------------------------------------------

    def expand(self, part: _Part, path: str) -> list[_Part] | None:
        """The conjunction ``part`` stands for (itself, its ``$ref`` targets, its ``allOf``); None: broken."""
        parts: list[_Part] = []
        pending = [part]
        visited: set[str] = set()
        while pending:
            current = pending.pop(0)
            if current.location in visited:
                continue
            visited.add(current.location)
            parts.append(current)
            ref = current.get("$ref")
            if isinstance(ref, str):
                try:
                    resolved = current.resolver.lookup(ref)
                except Unresolvable:
                    self.report(path, f"cannot resolve $ref {_show(ref)}")
                    return None
                document, pointer = _join(current.base, ref)
                pending.append(_Part(resolved.contents, resolved.resolver, document, pointer))
            all_of = current.get("allOf")
            if isinstance(all_of, list):
                pending.extend(current.child(sub, "allOf", index) for index, sub in enumerate(all_of))
        return parts

    # -- comparison ------------------------------------------------------------------------------------------

    def compare(self, old: _Part, new: _Part, path: str) -> None:
        old, new = _through_refs(old), _through_refs(new)
        key = (old.location, new.location)
        if key in self._done:  # shared definitions are compared once; this also ends recursive refs
            return
        self._done.add(key)
        old_parts = self.expand(old, path)
        new_parts = self.expand(new, path)
        if old_parts is None or new_parts is None:
            return
        if any(p.schema is False for p in old_parts):
            return  # the old schema accepted nothing here, so nothing can be narrowed
        if any(p.schema is False for p in new_parts):
            self.report(path, "now rejects every value (false schema)")
            return
        self._types(old_parts, new_parts, path)
        self._values(old_parts, new_parts, path)
        self._bounds(old_parts, new_parts, path)
        self._strings(old_parts, new_parts, path)
        self._opaque(old_parts, new_parts, path)
        self._object(old_parts, new_parts, path)
        self._array(old_parts, new_parts, path)
        self._branches(old_parts, new_parts, path)
        self._defs(old, new, path)

    def _types(self, old: list[_Part], new: list[_Part], path: str) -> None:
        old_types, new_types = _effective_types(old), _effective_types(new)
        if new_types is None:
            return
        if old_types is None:
            self.report(path, f"type added ({', '.join(sorted(new_types))})")
            return
        lost = sorted(
            t for t in old_types if not (t in new_types or (t == "integer" and "number" in new_types))
        )
        if lost:
            self.report(path, f"type narrowed: no longer accepts {', '.join(lost)}")

    def _values(self, old: list[_Part], new: list[_Part], path: str) -> None:
        old_values, new_values = _effective_values(old), _effective_values(new)
        if new_values is None:
            return
        keyword = "const" if any(p.has("const") for p in (*old, *new)) else "enum"
        if old_values is None:
            self.report(path, f"{keyword} added")
            return
        removed = [value for key, value in old_values.items() if key not in new_values]
        if removed:
            if keyword == "const":
                self.report(path, "const changed")
            else:
                self.report(path, f"enum value(s) removed: {', '.join(_show(v) for v in removed)}")

    def _bounds(self, old: list[_Part], new: list[_Part], path: str) -> None:
        old_low, new_low = _lower_bound(old), _lower_bound(new)
        if new_low is not None and (old_low is None or new_low > old_low):
            self.report(
                path, f"lower bound tightened: {_show_bound(old_low, '>')} -> {_show_bound(new_low, '>')}"
            )
        old_high, new_high = _upper_bound(old), _upper_bound(new)
        if new_high is not None and (old_high is None or new_high < old_high):
            self.report(
                path, f"upper bound tightened: {_show_bound(old_high, '<')} -> {_show_bound(new_high, '<')}"
            )
        for keyword in _LENGTH_MINIMA:
            old_min, new_min = _numbers(old, keyword, max), _numbers(new, keyword, max)
            if new_min is not None and (old_min is None or new_min > old_min):
                self.report(path, f"{keyword} tightened: {_show(old_min)} -> {_show(new_min)}")
        for keyword in _LENGTH_MAXIMA:
            old_max, new_max = _numbers(old, keyword, min), _numbers(new, keyword, min)
            if new_max is not None and (old_max is None or new_max < old_max):
                self.report(path, f"{keyword} tightened: {_show(old_max)} -> {_show(new_max)}")

    def _strings(self, old: list[_Part], new: list[_Part], path: str) -> None:
        for keyword in ("pattern", "format"):
            old_set = {p.get(keyword) for p in old if p.has(keyword)}
            new_set = {p.get(keyword) for p in new if p.has(keyword)}
            added = sorted(str(v) for v in new_set - old_set)
            if not added:
                continue
            if old_set:
                before = ", ".join(_show(v) for v in sorted(str(v) for v in old_set))
                self.report(path, f"{keyword} changed: {before} -> {', '.join(_show(v) for v in added)}")
            else:
                self.report(path, f"{keyword} added: {', '.join(_show(v) for v in added)}")

    def _opaque(self, old: list[_Part], new: list[_Part], path: str) -> None:
        for keyword in _OPAQUE:
            new_values = [_canonical(p.get(keyword)) for p in new if p.has(keyword)]
            if not new_values:
                continue
            old_values = [_canonical(p.get(keyword)) for p in old if p.has(keyword)]
            if sorted(old_values) != sorted(new_values):
                self.report(path, f"{keyword} changed (compatibility cannot be verified structurally)")
        old_unevaluated = {
            _canonical(p.get("unevaluatedProperties")) for p in old if p.has("unevaluatedProperties")
        }
        new_unevaluated = {
            _canonical(p.get("unevaluatedProperties")) for p in new if p.has("unevaluatedProperties")
        }
        if new_unevaluated - old_unevaluated - {"false", "true"}:
            self.report(path, "unevaluatedProperties changed (compatibility cannot be verified structurally)")

    def _object(self, old: list[_Part], new: list[_Part], path: str) -> None:
        old_props, new_props = _properties(old), _properties(new)
        for name, old_subs in old_props.items():
            sub_path = f"{path}/properties/{_escape(name)}"
            new_subs = new_props.get(name)
            if new_subs is None:
                self.report(sub_path, "property removed")
                continue
            old_seal, new_seal = _annotation(old_subs, "x-seal"), _annotation(new_subs, "x-seal")
            if old_seal != new_seal:
                self.report(sub_path, f"x-seal category changed: {_show(old_seal)} -> {_show(new_seal)}")
            self._compare_conjunction(old_subs, new_subs, sub_path)
        old_required, new_required = _required(old), _required(new)
        for name in sorted(new_required - old_required):
            self.report(path, f"property {_show(name)} became required")
        old_closed, new_closed = _closed(old), _closed(new)
        if new_closed and not old_closed:
            self.report(path, "additionalProperties: false added (unknown properties were allowed)")
        if not new_closed:
            old_additional = [p.child(p.get("additionalProperties"), "additionalProperties") for p in old]
            old_additional = [a for a in old_additional if isinstance(a.schema, Mapping)]
            new_additional = [p.child(p.get("additionalProperties"), "additionalProperties") for p in new]
            new_additional = [a for a in new_additional if isinstance(a.schema, Mapping)]
            if new_additional:
                if not old_additional and not old_closed:
                    old_additional = [old[0].child(True, "additionalProperties")]
                if old_additional:
                    self._compare_conjunction(old_additional, new_additional, f"{path}/additionalProperties")

    def _array(self, old: list[_Part], new: list[_Part], path: str) -> None:
        old_items = [p.child(p.get("items"), "items") for p in old if p.has("items")]
        new_items = [p.child(p.get("items"), "items") for p in new if p.has("items")]
        if new_items:
            self._compare_conjunction(old_items or [old[0].child(True, "items")], new_items, f"{path}/items")
        old_prefix = next((p for p in old if isinstance(p.get("prefixItems"), list)), None)
        new_prefix = next((p for p in new if isinstance(p.get("prefixItems"), list)), None)
        if new_prefix is not None:
            new_list = new_prefix.get("prefixItems")
            old_list = old_prefix.get("prefixItems") if old_prefix is not None else []
            for index, new_sub in enumerate(new_list):
                sub_path = f"{path}/prefixItems/{index}"
                if old_prefix is not None and index < len(old_list):
                    old_part = old_prefix.child(old_list[index], "prefixItems", index)
                else:
                    old_part = old[0].child(True, "prefixItems", index)
                self.compare(old_part, new_prefix.child(new_sub, "prefixItems", index), sub_path)

    def _branches(self, old: list[_Part], new: list[_Part], path: str) -> None:
        for keyword in ("anyOf", "oneOf"):
            old_list = [(p, p.get(keyword)) for p in old if isinstance(p.get(keyword), list)]
            new_list = [(p, p.get(keyword)) for p in new if isinstance(p.get(keyword), list)]
            if not new_list:
                continue
            if len(old_list) != 1 or len(new_list) != 1:
                if sorted(_canonical(v) for _, v in old_list) != sorted(_canonical(v) for _, v in new_list):
                    self.report(path, f"{keyword} changed (compatibility cannot be verified structurally)")
                continue
            (old_owner, old_branches), (new_owner, new_branches) = old_list[0], new_list[0]
            if len(new_branches) < len(old_branches):
                self.report(path, f"{keyword} branch removed")
                continue
            if keyword == "oneOf" and len(new_branches) > len(old_branches):
                self.report(path, "oneOf branch added (may overlap an old branch; cannot be verified)")
            for index, old_branch in enumerate(old_branches):
                self.compare(
                    old_owner.child(old_branch, keyword, index),
                    new_owner.child(new_branches[index], keyword, index),
                    f"{path}/{keyword}/{index}",
                )

    def _defs(self, old: _Part, new: _Part, path: str) -> None:
        old_defs, new_defs = old.get("$defs"), new.get("$defs")
        if not isinstance(old_defs, Mapping):
            return
        new_defs = new_defs if isinstance(new_defs, Mapping) else {}
        for name in old_defs:
            sub_path = f"{path}/$defs/{_escape(name)}"
            if name not in new_defs:
                self.report(sub_path, "definition removed (a $ref to it would no longer resolve)")
                continue
            self.compare(
                old.child(old_defs[name], "$defs", name), new.child(new_defs[name], "$defs", name), sub_path
            )

    def _compare_conjunction(self, old: Sequence[_Part], new: Sequence[_Part], path: str) -> None:
        """Compare two conjunctions of subschemas (a property may be declared by several parts)."""
        if len(old) == 1 and len(new) == 1:
            self.compare(old[0], new[0], path)
            return
        self.compare(_merge(old), _merge(new), path)


def _through_refs(part: _Part) -> _Part:
    """Follow a node that is only a ``$ref`` (plus annotations) to its target.

    So a definition reached both through a property and through ``$defs`` is compared (and reported) once.
    """
    seen: set[str] = set()
    while isinstance(part.schema, Mapping) and isinstance(part.schema.get("$ref"), str):
        if any(not _is_annotation(keyword) for keyword in part.schema if keyword != "$ref"):
            break
        if part.location in seen:
            break
        seen.add(part.location)
        ref = part.schema["$ref"]
        try:
            resolved = part.resolver.lookup(ref)
        except Unresolvable:
            break  # expand() reports it
        document, pointer = _join(part.base, ref)
        part = _Part(resolved.contents, resolved.resolver, document, pointer)
    return part


def _is_annotation(keyword: str) -> bool:
    return keyword in _ANNOTATIONS or keyword.startswith("x-")


def _merge(parts: Sequence[_Part]) -> _Part:
    """Several subschemas that all apply, as one ``allOf`` part (refs inside keep their own resolver)."""
    if len(parts) == 1:
        return parts[0]
    # Each conjunct keeps its own base: rewrite refs to absolute form so one resolver serves them all.
    members = [_absolutise(p.schema, p.base) for p in parts]
    first = parts[0]
    return _Part({"allOf": members}, first.resolver, first.base, first.pointer + "/(merged)")


def _absolutise(schema: Any, base: str) -> Any:
    if isinstance(schema, Mapping):
        result = {key: _absolutise(value, base) for key, value in schema.items()}
        ref = result.get("$ref")
        if isinstance(ref, str):
            document, pointer = _join(base, ref)
            result["$ref"] = f"{document}#{pointer}"
        return result
    if isinstance(schema, list):
        return [_absolutise(item, base) for item in schema]
    return schema


def _effective_types(parts: Iterable[_Part]) -> set[str] | None:
    result: set[str] | None = None
    for part in parts:
        declared = part.get("type")
        if declared is None:
            continue
        types = {declared} if isinstance(declared, str) else {str(t) for t in declared}
        if result is None:
            result = types
        else:
            merged = result & types
            if ("number" in result and "integer" in types) or ("integer" in result and "number" in types):
                merged.add("integer")
            result = merged
    return result


def _effective_values(parts: Iterable[_Part]) -> dict[str, Any] | None:
    result: dict[str, Any] | None = None
    for part in parts:
        for keyword in ("enum", "const"):
            if not part.has(keyword):
                continue
            raw = part.get(keyword)
            values = list(raw) if keyword == "enum" and isinstance(raw, list) else [raw]
            allowed = {_canonical(value): value for value in values}
            result = allowed if result is None else {k: v for k, v in result.items() if k in allowed}
    return result


def _numbers(parts: Iterable[_Part], keyword: str, pick: Any) -> Any:
    values = [p.get(keyword) for p in parts if isinstance(p.get(keyword), int | float)]
    return pick(values) if values else None


# A bound is (value, strictness): for lower bounds a larger tuple is tighter, for upper bounds a smaller one.
def _lower_bound(parts: Iterable[_Part]) -> tuple[float, int] | None:
    bounds: list[tuple[float, int]] = []
    for part in parts:
        if isinstance(part.get("minimum"), int | float):
            bounds.append((part.get("minimum"), 0))
        if isinstance(part.get("exclusiveMinimum"), int | float):
            bounds.append((part.get("exclusiveMinimum"), 1))
    return max(bounds) if bounds else None


def _upper_bound(parts: Iterable[_Part]) -> tuple[float, int] | None:
    bounds: list[tuple[float, int]] = []
    for part in parts:
        if isinstance(part.get("maximum"), int | float):
            bounds.append((part.get("maximum"), 0))
        if isinstance(part.get("exclusiveMaximum"), int | float):
            bounds.append((part.get("exclusiveMaximum"), -1))
    return min(bounds) if bounds else None


def _show_bound(bound: tuple[float, int] | None, direction: str) -> str:
    if bound is None:
        return "none"
    value, strict = bound
    return f"{direction}{'' if strict else '='} {_show(value)}"


def _properties(parts: Iterable[_Part]) -> dict[str, list[_Part]]:
    result: dict[str, list[_Part]] = {}
    for part in parts:
        declared = part.get("properties")
        if isinstance(declared, Mapping):
            for name, sub in declared.items():
                result.setdefault(name, []).append(part.child(sub, "properties", name))
    return result


def _required(parts: Iterable[_Part]) -> set[str]:
    return {str(name) for p in parts if isinstance(p.get("required"), list) for name in p.get("required")}


def _closed(parts: Iterable[_Part]) -> bool:
    return any(
        p.get("additionalProperties") is False or p.get("unevaluatedProperties") is False for p in parts
    )


def _annotation(parts: Iterable[_Part], keyword: str) -> Any:
    for part in parts:
        if part.has(keyword):
            return part.get(keyword)
    return None


def incompatibilities(
    old: Mapping[str, Any], new: Mapping[str, Any], *, registry: Registry[Any] | None = None
) -> list[str]:
    """Why ``new`` may reject a payload ``old`` accepted (empty list: compatible as far as can be told).

    ``registry`` resolves ``$ref`` (it should hold ``_common`` and any other referenced document); ``old``
    and ``new`` are added to it under their ``$id`` so their own ``#/$defs/...`` refs resolve.
    """
    registry = registry if registry is not None else Registry()
    old_base = str(old.get("$id", "urn:compat:old"))
    new_base = str(new.get("$id", "urn:compat:new"))
    if old_base == new_base:  # comparing a document with an edited copy of itself (tests, tooling)
        new_base = f"{new_base}:new"
    old_resource = DRAFT202012.create_resource(dict(old))
    new_resource = DRAFT202012.create_resource(dict(new))
    old_registry = registry.with_resource(old_base, old_resource)
    new_registry = registry.with_resource(new_base, new_resource)
    checker = _Checker()
    for keyword in _ROOT_ANNOTATIONS:
        if old.get(keyword) != new.get(keyword):
            checker.report("#", f"{keyword} changed: {_show(old.get(keyword))} -> {_show(new.get(keyword))}")
    checker.compare(
        _Part(old, old_registry.resolver(base_uri=old_base), old_base, ""),
        _Part(new, new_registry.resolver(base_uri=new_base), new_base, ""),
        "#",
    )
    return checker.problems
