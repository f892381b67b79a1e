"""The standard operating procedure as a document: load, validate, and answer "which step does this event
open or close".

An SOP document (TOML, ``format = "xchg-sop/1"``, documented in docs/COORDINATION.md, JSON Schema in
``sop.schema.json`` next to this module) lists *steps*. A step says: when an event of type ``trigger``
happens (optionally only ``when`` its clear fields match), the ``responsible`` party must make an event of a
type in ``expect`` happen (optionally matching ``expect_when``) ``within`` a deadline counted from ``anchor``
(the trigger's event time, or a date/time field of its payload). The SOP names a ``coordinator``: the party
every escalation is also addressed to.

Refused at load, naming the step (``config.invalid: steps[2] 'arrival-admitted': ...``):

* an unknown event type (in ``trigger`` or ``expect``), an unknown role, or a field that is not a clear
  top-level property of the message (a step may never look at sealed, personal data);
* a deadline that does not parse (``24h``, ``3d``, ``90m``, ``2w``, or ISO 8601 ``PT24H``/``P3D``);
* a cycle: step A's expected event can itself trigger step B, whose expected event can trigger ... A again,
  so the SOP would demand events forever. Two steps are linked only if the expected type is the trigger
  type and the two conditions can both hold (``available_beds < 5`` and ``available_beds >= 5`` cannot).

Conditions: ``field = value`` (equal), or ``field = { op = value }`` with ``op`` one of ``eq``, ``ne``,
``in``, ``not_in``, ``lt``, ``le``, ``gt``, ``ge``, ``prefix``. Fields are dotted paths into the clear payload
(``referral_event.source``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = [
    "DEFAULT_SOP",
    "FORMAT",
    "SOP_SCHEMA",
    "Condition",
    "FieldInfo",
    "Responsible",
    "Sop",
    "Step",
    "fact",
    "parse_duration",
]

FORMAT: Final = "xchg-sop/1"
DEFAULT_SOP: Final = Path(__file__).resolve().parent / "default_sop.toml"
SOP_SCHEMA: Final = Path(__file__).resolve().parent / "sop.schema.json"
_TYPE_PREFIX: Final = "id.trafficking."
_ID_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_SHORT_RE: Final = re.compile(r"^[0-9]+(\.[0-9]+)?\s*(m|min|h|d|w)$")
_ISO_RE: Final = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_OPS: Final = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "prefix")
_STATUSES: Final = ("proposal", "adopted", "retired")
_MAX_DEADLINE: Final = timedelta(days=366)

#: ``fields_of(message_name)`` -> the clear and sealed top-level properties of the message (from its schema).
FieldInfo = Callable[[str], tuple[frozenset[str], frozenset[str]]]


def parse_duration(text: object) -> timedelta:
    """``24h``, ``3d``, ``90m``, ``2w``, ``1.5h`` or ISO 8601 ``PT24H``/``P3D``; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("a duration is a string such as '24h', '3d' or 'PT72H'")
    value = text.strip()
    short = _SHORT_RE.match(value)
    if short:
        number = float(value[: short.start(2)].strip())
        unit = short.group(2)
        seconds = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit] * number
        result = timedelta(seconds=seconds)
    else:
        iso = _ISO_RE.match(value)
        if iso is None or value in ("P", "PT"):
            raise ValueError(f"{text!r} is not a duration such as '24h', '3d' or 'PT72H'")
        weeks, days, hours, minutes, secs = (int(g) if g else 0 for g in iso.groups())
        result = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=secs)
    if result > _MAX_DEADLINE:
        raise ValueError(f"{text!r} is longer than a year")
    return result


def fact(payload: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` of ``payload`` (None when absent)."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# ---- conditions ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``; :meth:`holds` on a payload, :meth:`may_overlap` with another on the same field."""

    field: str
    op: str
    value: Any

    def holds(self, payload: Mapping[str, Any]) -> bool:
        actual = fact(payload, self.field)
        if self.op == "ne":
            return bool(actual != self.value)
        if self.op == "not_in":
            return actual not in self.value
        if actual is None:
            return False
        if self.op == "eq":
            return bool(actual == self.value)
        if self.op == "in":
            return actual in self.value
        if self.op == "prefix":
            return isinstance(actual, str) and actual.startswith(self.value)
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        bound = float(self.value)
        return {"lt": actual < bound, "le": actual <= bound, "gt": actual > bound, "ge": actual >= bound}[
            self.op
        ]

    def _values(self) -> list[Any] | None:
        if self.op == "eq":
            return [self.value]
        if self.op == "in":
            return list(self.value)
        return None

    def _interval(self) -> tuple[float, bool, float, bool] | None:
        """(low, low inclusive, high, high inclusive) for order comparisons."""
        v = float(self.value) if self.op in ("lt", "le", "gt", "ge") else 0.0
        return {
            "lt": (-math.inf, False, v, False),
            "le": (-math.inf, False, v, True),
            "gt": (v, False, math.inf, False),
            "ge": (v, True, math.inf, False),
        }.get(self.op)

    def may_overlap(self, other: Condition) -> bool:
        """False only when no value can satisfy both (conservative: unknown combinations overlap)."""
        mine, theirs = self._values(), other._values()
        if mine is not None and theirs is not None:
            return bool(set(map(repr, mine)) & set(map(repr, theirs)))
        for values, cond in ((mine, other), (theirs, self)):
            if values is not None:
                probe = Condition("v", cond.op, cond.value)
                return any(probe.holds({"v": value}) for value in values)
        a, b = self._interval(), other._interval()
        if a is not None and b is not None:
            low = max((a[0], a[1]), (b[0], b[1]), key=lambda x: (x[0], not x[1]))
            high = min((a[2], a[3]), (b[2], b[3]), key=lambda x: (x[0], x[1]))
            if low[0] < high[0]:
                return True
            return low[0] == high[0] and low[1] and high[1]
        return True


def _conditions_overlap(a: Iterable[Condition], b: Iterable[Condition]) -> bool:
    listed = list(b)
    for left in a:
        for right in listed:
            if left.field == right.field and not left.may_overlap(right):
                return False
    return True


# ---- steps ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Responsible:
    """Who must act: ``field`` (a party id in the trigger's payload), ``role`` (an SOP role), ``party``, or
    ``source`` (the trigger's publisher)."""

    kind: str
    value: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "source" else f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    title: str
    trigger: str
    """Message name (``case.referral``)."""
    expect: tuple[str, ...]
    within: timedelta
    responsible: Responsible
    when: tuple[Condition, ...] = ()
    expect_when: tuple[Condition, ...] = ()
    expect_from: str = "responsible"
    """``responsible``: only the responsible party's event closes the step; ``any``: anyone's."""
    anchor: str = "event-time"
    """``event-time`` or a date/date-time field of the trigger's payload."""
    correlate: str | None = None
    """A field of the expected event holding an event reference (source, id) that must name the trigger."""
    place: str | None = None
    """A clear field of the trigger naming the facility concerned (``shelter_id``), reported in alerts."""
    basis: str = ""

    def triggered_by(self, message: str, payload: Mapping[str, Any]) -> bool:
        return message == self.trigger and all(c.holds(payload) for c in self.when)

    def closed_by(self, message: str, payload: Mapping[str, Any]) -> bool:
        return message in self.expect and all(c.holds(payload) for c in self.expect_when)

    def fields(self) -> set[str]:
        """The clear payload fields this step reads (what the timeline keeps as facts)."""
        names = {c.field for c in (*self.when, *self.expect_when)}
        if self.responsible.kind == "field":
            names.add(self.responsible.value)
        for extra in (self.anchor if self.anchor != "event-time" else None, self.correlate, self.place):
            if extra:
                names.add(extra)
        return names


@dataclass(frozen=True, slots=True)
class Sop:
    id: str
    version: str
    status: str
    title: str
    coordinator: str
    roles: Mapping[str, tuple[str, str]]
    """role -> (``party`` | ``registry_role``, value)."""
    steps: tuple[Step, ...]
    source: str = ""
    fact_fields: frozenset[str] = field(default=frozenset())

    @classmethod
    def load(
        cls, path: Path = DEFAULT_SOP, *, known_types: Iterable[str], fields_of: FieldInfo | None = None
    ) -> Sop:
        return cls.from_table(
            Table.load(path, what="SOP"), known_types=known_types, fields_of=fields_of, source=str(path)
        )

    @classmethod
    def from_mapping(
        cls, document: Mapping[str, Any], *, known_types: Iterable[str], fields_of: FieldInfo | None = None
    ) -> Sop:
        return cls.from_table(Table(document), known_types=known_types, fields_of=fields_of)

    @classmethod
    def from_table(
        cls, doc: Table, *, known_types: Iterable[str], fields_of: FieldInfo | None = None, source: str = ""
    ) -> Sop:
        known = {t.removeprefix(_TYPE_PREFIX) for t in known_types}
        if doc.raw("format") != FORMAT:
            raise doc.fail("format", f"must be {FORMAT!r}")
        sop_id = doc.string("id")
        if not _ID_RE.match(sop_id):
            raise doc.fail("id", "lower-case letters, digits and hyphens")
        roles: dict[str, tuple[str, str]] = {}
        role_table = doc.table("roles")
        for name in list(role_table):
            entry = role_table.table(name)
            entry.only("party", "registry_role")
            kinds = [k for k in ("party", "registry_role") if k in entry]
            if len(kinds) != 1:
                raise entry.fail("", "give exactly one of party or registry_role")
            roles[name] = (kinds[0], entry.string(kinds[0]))
        steps = tuple(_step(t, known, roles, fields_of) for t in doc.tables("steps", required=True))
        if not steps:
            raise doc.fail("steps", "at least one [[steps]] table is required")
        seen: set[str] = set()
        for index, step in enumerate(steps):
            if step.id in seen:
                raise doc.fail(f"steps[{index}]", f"step id {step.id!r} is used twice")
            seen.add(step.id)
        sop = cls(
            id=sop_id,
            version=doc.string("version"),
            status=doc.string("status", choices=_STATUSES),
            title=doc.string("title"),
            coordinator=doc.string("coordinator"),
            roles=roles,
            steps=steps,
            source=source,
            fact_fields=frozenset(name for step in steps for name in step.fields()),
        )
        doc.string("adopted_by", "")
        doc.string("description", "")
        doc.refuse_unknown()
        _refuse_cycles(doc, sop.steps)
        return sop

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)


def _step(t: Table, known: set[str], roles: Mapping[str, Any], fields_of: FieldInfo | None) -> Step:
    step_id = t.string("id")
    if not _ID_RE.match(step_id):
        raise t.fail("id", "lower-case letters, digits and hyphens")
    t.where = f"{t.where} {step_id!r}"
    trigger = t.string("trigger").removeprefix(_TYPE_PREFIX)
    if trigger not in known:
        raise t.fail("trigger", f"unknown event type {trigger!r}")
    expect = tuple(e.removeprefix(_TYPE_PREFIX) for e in t.strings("expect", empty=False))
    for name in expect:
        if name not in known:
            raise t.fail("expect", f"unknown event type {name!r}")
    try:
        within = parse_duration(t.raw("within"))
    except ValueError as exc:
        raise t.fail("within", f"deadline cannot be parsed: {exc}") from exc
    responsible = _responsible(t, roles)
    step = Step(
        id=step_id,
        title=t.string("title"),
        trigger=trigger,
        expect=expect,
        within=within,
        responsible=responsible,
        when=_conditions(t, "when"),
        expect_when=_conditions(t, "expect_when"),
        expect_from=t.string("expect_from", "responsible", choices=("responsible", "any")),
        anchor=t.string("anchor", "event-time"),
        correlate=t.string("correlate", None),
        place=t.string("place", None),
        basis=t.string("basis", ""),
    )
    t.refuse_unknown()
    if fields_of is not None:
        _check_fields(t, step, fields_of)
    return step


def _responsible(t: Table, roles: Mapping[str, Any]) -> Responsible:
    text = t.string("responsible")
    kind, _, value = text.partition(":")
    if kind == "source" and not value:
        return Responsible("source")
    if kind not in ("field", "role", "party") or not value:
        raise t.fail("responsible", "must be 'source', 'field:<name>', 'role:<role>' or 'party:<id>'")
    if kind == "role" and value not in roles:
        raise t.fail("responsible", f"unknown role {value!r} (define it under [roles])")
    return Responsible(kind, value)


def _conditions(t: Table, key: str) -> tuple[Condition, ...]:
    table = t.table(key)
    result = []
    for name in list(table):
        raw = table.raw(name)
        if isinstance(raw, Mapping):
            if len(raw) != 1 or next(iter(raw)) not in _OPS:
                raise table.fail(name, f"a condition is {{ op = value }} with op one of {', '.join(_OPS)}")
            op, value = next(iter(raw.items()))
        else:
            op, value = "eq", raw
        if op in ("in", "not_in") and not isinstance(value, list):
            raise table.fail(name, f"{op} takes a list")
        if op in ("lt", "le", "gt", "ge") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise table.fail(name, f"{op} takes a number")
        if op == "prefix" and not isinstance(value, str):
            raise table.fail(name, "prefix takes a string")
        result.append(Condition(name, op, value))
    return tuple(result)


def _check_fields(t: Table, step: Step, fields_of: FieldInfo) -> None:
    """Every field a step reads is a clear top-level property of the message it reads it from."""
    checks: list[tuple[str, str, str]] = [(c.field, step.trigger, "when") for c in step.when]
    checks += [(c.field, name, "expect_when") for c in step.expect_when for name in step.expect]
    if step.responsible.kind == "field":
        checks.append((step.responsible.value, step.trigger, "responsible"))
    if step.anchor != "event-time":
        checks.append((step.anchor, step.trigger, "anchor"))
    if step.place:
        checks.append((step.place, step.trigger, "place"))
    if step.correlate:
        checks += [(step.correlate, name, "correlate") for name in step.expect]
    for path, message, key in checks:
        clear, sealed = fields_of(message)
        top = path.split(".", 1)[0]
        if top in sealed:
            raise t.fail(
                key, f"{path!r} is sealed (personal) in {message}; a step may read clear fields only"
            )
        if top not in clear:
            raise t.fail(key, f"{message} has no field {path!r}")


def _refuse_cycles(doc: Table, steps: tuple[Step, ...]) -> None:
    """Step A leads to B when A's expected event may trigger B; a cycle of such links is refused."""
    follows: dict[str, list[str]] = {s.id: [] for s in steps}
    for a in steps:
        for b in steps:
            if b.trigger in a.expect and _conditions_overlap(a.expect_when, b.when):
                follows[a.id].append(b.id)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in follows[node]:
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state:
                found = visit(nxt, [*path, node])
                if found:
                    return found
        state[node] = 2
        return None

    for step in steps:
        if step.id not in state:
            cycle = visit(step.id, [])
            if cycle:
                start = cycle.index(cycle[-1])
                loop = " -> ".join(cycle[start:])
                raise GatewayError(
                    Reason.CONFIG_INVALID,
                    f"{doc.name('steps')} {cycle[-1]!r}: cycle {loop}: each step's expected event triggers "
                    "the next, so the SOP would demand events forever",
                )
