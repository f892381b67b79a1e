"""The SOP document: the shipped proposal loads; bad documents are refused at load, naming the step."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from gateway.contract.schemas import SchemaStore
from gateway.coordination.service import schema_fields
from gateway.coordination.sop import DEFAULT_SOP, SOP_SCHEMA, Condition, Sop, parse_duration
from gateway.errors import GatewayError, Reason


def _document(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "xchg-sop/1",
        "id": "test-sop",
        "version": "1",
        "status": "proposal",
        "title": "t",
        "coordinator": "kemensos",
        "roles": {"return-post": {"registry_role": "return-post"}},
        "steps": list(steps),
    }


def _step(step_id: str = "answer", **changes: Any) -> dict[str, Any]:
    step = {
        "id": step_id,
        "title": "t",
        "trigger": "case.referral",
        "responsible": "field:cas_ReferredOrganisation",
        "expect": ["case.referral-response"],
        "within": "24h",
    }
    step.update(changes)
    return step


def _load(document: dict[str, Any], schemas: SchemaStore) -> Sop:
    return Sop.from_mapping(document, known_types=schemas.types(), fields_of=schema_fields(schemas))


def test_the_shipped_proposal_loads_and_matches_its_json_schema(default_sop: Sop) -> None:
    assert default_sop.status == "proposal"
    assert {s.id for s in default_sop.steps} >= {
        "referral-answered",
        "arrival-admitted",
        "data-incident-notified",
        "shelter-capacity-low",
    }
    assert default_sop.step("referral-answered").within == timedelta(hours=24)  # type: ignore[union-attr]
    assert default_sop.step("data-incident-notified").within == timedelta(hours=72)  # type: ignore[union-attr]
    with DEFAULT_SOP.open("rb") as handle:
        jsonschema.validate(tomllib.load(handle), json.loads(SOP_SCHEMA.read_text("utf-8")))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"trigger": "case.refferal"}, "unknown event type 'case.refferal'"),
        ({"expect": ["case.referral-answer"]}, "unknown event type 'case.referral-answer'"),
        ({"within": "a day"}, "deadline cannot be parsed"),
        ({"within": "24"}, "deadline cannot be parsed"),
        ({"within": "400d"}, "longer than a year"),
        ({"responsible": "role:police"}, "unknown role 'police'"),
        ({"when": {"identity.prs_FirstName": "Siti"}}, "'identity.prs_FirstName' is sealed"),
        ({"when": {"no_such_field": 1}}, "has no field 'no_such_field'"),
        ({"when": {"priority": {"between": [1, 2]}}}, "a condition is"),
        ({"surprise": True}, "unknown setting"),
    ],
)
def test_a_bad_step_is_refused_at_load_naming_it(
    changes: dict[str, Any], expected: str, schemas: SchemaStore
) -> None:
    with pytest.raises(GatewayError) as caught:
        _load(_document(_step(**changes)), schemas)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert "'answer'" in caught.value.detail
    assert expected in caught.value.detail


def test_a_cycle_is_refused_naming_a_step(schemas: SchemaStore) -> None:
    document = _document(
        _step(
            "admit", trigger="case.shelter-discharge", responsible="source", expect=["case.shelter-admission"]
        ),
        _step(
            "discharge",
            trigger="case.shelter-admission",
            responsible="source",
            expect=["case.shelter-discharge"],
        ),
    )
    with pytest.raises(GatewayError, match=r"'(admit|discharge)': cycle (admit|discharge) -> "):
        _load(document, schemas)


def test_disjoint_conditions_are_not_a_cycle(schemas: SchemaStore) -> None:
    """Low capacity expects a snapshot with room again: the same type, but it cannot re-trigger the step."""
    step = _step(
        "low",
        trigger="alert.shelter-capacity",
        responsible="source",
        expect=["alert.shelter-capacity"],
        when={"available_beds": {"lt": 5}},
        expect_when={"available_beds": {"ge": 5}},
        within="0h",
    )
    assert _load(_document(step), schemas).steps[0].id == "low"
    overlapping = {**step, "expect_when": {"available_beds": {"ge": 3}}}
    with pytest.raises(GatewayError, match=r"cycle low -> low"):
        _load(_document(overlapping), schemas)


def test_duplicate_step_ids_and_wrong_format_are_refused(schemas: SchemaStore) -> None:
    with pytest.raises(GatewayError, match="used twice"):
        _load(_document(_step(), _step()), schemas)
    with pytest.raises(GatewayError, match="format"):
        _load({**_document(_step()), "format": "xchg-sop/2"}, schemas)


@pytest.mark.parametrize(
    ("text", "hours"),
    [
        ("24h", 24),
        ("3d", 72),
        ("90m", 1.5),
        ("2w", 336),
        ("1.5h", 1.5),
        ("PT72H", 72),
        ("P3D", 72),
        ("P1DT2H", 26),
    ],
)
def test_durations(text: str, hours: float) -> None:
    assert parse_duration(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "P", "PT", "24", "h", "-3d", "3 days", 24])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|year"):
        parse_duration(text)


def test_condition_overlap_is_conservative() -> None:
    assert not Condition("s", "in", ["a", "b"]).may_overlap(Condition("s", "eq", "c"))
    assert Condition("s", "in", ["a", "b"]).may_overlap(Condition("s", "eq", "b"))
    assert not Condition("n", "lt", 5).may_overlap(Condition("n", "ge", 5))
    assert Condition("n", "le", 5).may_overlap(Condition("n", "ge", 5))
    assert not Condition("n", "eq", 7).may_overlap(Condition("n", "lt", 5))
    assert Condition("s", "prefix", "pos-").may_overlap(Condition("s", "ne", "x"))
