"""The minor-version rule (gateway.contract.evolution): one test per narrowing it must catch; widenings it
allows."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.contract.evolution import incompatibilities

COMMON_1_0 = "urn:id.trafficking:schema:_common:1.0"
COMMON_1_1 = "urn:id.trafficking:schema:_common:1.1"

COMMON: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": COMMON_1_0,
    "$defs": {
        "countryCode": {"type": "string", "pattern": "^[A-Z]{2}$"},
        "gender": {"type": "string", "enum": ["Feminine", "Masculine", "Unknown"]},
    },
}

BASE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:id.trafficking:schema:case.t:1.0",
    "x-dataclassification": "restricted",
    "x-partitionkey": "case_id",
    "type": "object",
    "required": ["case_id"],
    "properties": {
        "case_id": {"type": "string", "pattern": "^[A-Z0-9-]{6,64}$"},
        "count": {"type": "integer", "minimum": 0, "maximum": 100},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "status": {"type": "string", "enum": ["Open", "Closed"]},
        "kind": {"const": "referral"},
        "summary": {"type": "string", "maxLength": 500, "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 10},
        "country": {"$ref": f"{COMMON_1_0}#/$defs/countryCode"},
        "address": {"$ref": "#/$defs/address"},
        "identity": {
            "x-seal": "identity",
            "type": "object",
            "properties": {"prs_Gender": {"$ref": f"{COMMON_1_0}#/$defs/gender"}},
        },
    },
    "$defs": {
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "postcode": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
        }
    },
}


def _registry(*commons: dict[str, Any]) -> Registry[Any]:
    return Registry().with_resources((c["$id"], DRAFT202012.create_resource(c)) for c in commons)


def _evolve(change: Callable[[dict[str, Any]], None], base: dict[str, Any] = BASE) -> dict[str, Any]:
    new = copy.deepcopy(base)
    new["$id"] = "urn:id.trafficking:schema:case.t:1.1"
    change(new)
    return new


def _problems(change: Callable[[dict[str, Any]], None]) -> list[str]:
    return incompatibilities(BASE, _evolve(change), registry=_registry(COMMON))


def _props(schema: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = schema["properties"]
    return properties


def test_identical_schema_is_compatible() -> None:
    assert _problems(lambda s: None) == []


# ---- widenings the convention allows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: _props(s).update(urgent={"type": "boolean"}), id="add-optional-property"),
        pytest.param(lambda s: _props(s)["status"]["enum"].append("Suspended"), id="extend-enum"),
        pytest.param(lambda s: _props(s)["count"].update(type="number"), id="integer-to-number"),
        pytest.param(lambda s: _props(s)["count"].update(type=["integer", "null"]), id="add-type"),
        pytest.param(lambda s: _props(s)["count"].update(maximum=1000), id="loosen-maximum"),
        pytest.param(lambda s: _props(s)["count"].pop("minimum"), id="drop-minimum"),
        pytest.param(lambda s: _props(s)["ratio"].update(exclusiveMinimum=-1), id="loosen-exclusive-minimum"),
        pytest.param(
            lambda s: (_props(s)["ratio"].pop("exclusiveMinimum"), _props(s)["ratio"].update(minimum=0)),
            id="exclusive-to-inclusive-bound",
        ),
        pytest.param(lambda s: _props(s)["summary"].update(maxLength=1000), id="loosen-maxLength"),
        pytest.param(lambda s: _props(s)["tags"].update(maxItems=20), id="loosen-maxItems"),
        pytest.param(lambda s: s["required"].clear(), id="drop-required"),
        pytest.param(lambda s: _props(s)["summary"].update(description="free text"), id="annotation-only"),
        pytest.param(lambda s: _props(s)["kind"].update(enum=["referral", "transfer"]), id="const-to-enum"),
        pytest.param(
            lambda s: s["$defs"]["address"]["properties"].update(zone={}), id="add-property-in-defs"
        ),
    ],
)
def test_widening_is_compatible(change: Callable[[dict[str, Any]], None]) -> None:
    assert _problems(change) == []


# ---- one test per narrowing rule -----------------------------------------------------------------------


def test_removed_property() -> None:
    assert _problems(lambda s: _props(s).pop("summary")) == ["#/properties/summary: property removed"]


def test_added_required_property() -> None:
    problems = _problems(lambda s: s["required"].append("status"))
    assert problems == ['#: property "status" became required']


def test_added_required_new_property() -> None:
    def change(s: dict[str, Any]) -> None:
        _props(s)["urgent"] = {"type": "boolean"}
        s["required"].append("urgent")

    assert _problems(change) == ['#: property "urgent" became required']


def test_narrowed_type() -> None:
    problems = _problems(lambda s: _props(s)["ratio"].update(type="integer"))
    assert problems == ["#/properties/ratio: type narrowed: no longer accepts number"]


def test_type_added_where_any_was_allowed() -> None:
    problems = _problems(lambda s: _props(s)["address"].update(type="string"))
    assert any(p.startswith("#/properties/address: type") for p in problems), problems


def test_removed_enum_value() -> None:
    problems = _problems(lambda s: _props(s)["status"]["enum"].remove("Closed"))
    assert problems == ['#/properties/status: enum value(s) removed: "Closed"']


def test_changed_const() -> None:
    assert _problems(lambda s: _props(s)["kind"].update(const="transfer")) == [
        "#/properties/kind: const changed"
    ]


def test_enum_added() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update(enum=["a"]))
    assert problems == ["#/properties/summary: enum added"]


def test_tightened_max_length() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update(maxLength=100))
    assert problems == ["#/properties/summary: maxLength tightened: 500 -> 100"]


def test_tightened_min_length() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update(minLength=2))
    assert problems == ["#/properties/summary: minLength tightened: 1 -> 2"]


def test_added_max_items() -> None:
    problems = _problems(lambda s: _props(s)["tags"].update(minItems=1))
    assert problems == ["#/properties/tags: minItems tightened: null -> 1"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["count"].update(minimum=1), "#/properties/count: lower bound tightened: >= 0 -> >= 1"),
        (
            lambda p: p["count"].update(maximum=99),
            "#/properties/count: upper bound tightened: <= 100 -> <= 99",
        ),
        (
            lambda p: p["count"].update(exclusiveMaximum=100),
            "#/properties/count: upper bound tightened: <= 100 -> < 100",
        ),
        (
            lambda p: p["ratio"].update(exclusiveMinimum=0.5),
            "#/properties/ratio: lower bound tightened: > 0 -> > 0.5",
        ),
        (
            lambda p: p["summary"].update(minimum=3),
            "#/properties/summary: lower bound tightened: none -> >= 3",
        ),
    ],
)
def test_tightened_numeric_bound(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert _problems(lambda s: change(_props(s))) == [expected]


def test_changed_pattern() -> None:
    problems = _problems(lambda s: _props(s)["case_id"].update(pattern="^[A-Z0-9-]{6,65}$"))
    assert problems == ['#/properties/case_id: pattern changed: "^[A-Z0-9-]{6,64}$" -> "^[A-Z0-9-]{6,65}$"']


def test_added_pattern() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update(pattern="^[a-z]+$"))
    assert problems == ['#/properties/summary: pattern added: "^[a-z]+$"']


def test_added_format() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update(format="email"))
    assert problems == ['#/properties/summary: format added: "email"']


def test_new_additional_properties_false() -> None:
    problems = _problems(lambda s: s.update(additionalProperties=False))
    assert problems == ["#: additionalProperties: false added (unknown properties were allowed)"]


def test_new_additional_properties_false_nested() -> None:
    problems = _problems(lambda s: s["$defs"]["address"].update(additionalProperties=False))
    assert problems == [
        "#/properties/address: additionalProperties: false added (unknown properties were allowed)"
    ]


def test_additional_properties_schema_narrowed() -> None:
    problems = _problems(lambda s: s.update(additionalProperties={"type": "string"}))
    assert problems == ["#/additionalProperties: type added (string)"]


def test_changed_x_seal_category() -> None:
    problems = _problems(lambda s: _props(s)["identity"].update({"x-seal": "contact"}))
    assert problems == ['#/properties/identity: x-seal category changed: "identity" -> "contact"']


def test_x_seal_added_to_existing_property() -> None:
    problems = _problems(lambda s: _props(s)["summary"].update({"x-seal": "health"}))
    assert problems == ['#/properties/summary: x-seal category changed: null -> "health"']


def test_x_seal_removed() -> None:
    problems = _problems(lambda s: _props(s)["identity"].pop("x-seal"))
    assert problems == ['#/properties/identity: x-seal category changed: "identity" -> null']


def test_items_narrowed() -> None:
    problems = _problems(lambda s: _props(s)["tags"]["items"].update(maxLength=10))
    assert problems == ["#/properties/tags/items: maxLength tightened: 20 -> 10"]


def test_items_added() -> None:
    problems = _problems(lambda s: _props(s)["address"].update(items={"type": "string"}))
    assert problems == ["#/properties/address/items: type added (string)"]


def test_removed_definition() -> None:
    def change(s: dict[str, Any]) -> None:
        s["$defs"]["place"] = s["$defs"].pop("address")
        _props(s)["address"]["$ref"] = "#/$defs/place"

    assert _problems(change) == ["#/$defs/address: definition removed (a $ref to it would no longer resolve)"]


def test_local_ref_is_followed() -> None:
    problems = _problems(
        lambda s: s["$defs"]["address"]["properties"]["postcode"].update(pattern="^[0-9]{6}$")
    )
    assert problems == [
        '#/properties/address/properties/postcode: pattern changed: "^[0-9]{5}$" -> "^[0-9]{6}$"'
    ]


def test_ref_target_swapped_for_narrower_inline_schema() -> None:
    problems = _problems(lambda s: _props(s).update(country={"type": "string", "pattern": "^(ID|MY)$"}))
    assert problems == ['#/properties/country: pattern changed: "^[A-Z]{2}$" -> "^(ID|MY)$"']


def test_ref_into_common_is_followed_across_versions() -> None:
    """1.1 refs _common 1.1, where a code list lost a value: caught through the refs."""
    common_1_1 = copy.deepcopy(COMMON)
    common_1_1["$id"] = COMMON_1_1
    common_1_1["$defs"]["gender"]["enum"].remove("Unknown")

    def change(s: dict[str, Any]) -> None:
        _props(s)["identity"]["properties"]["prs_Gender"]["$ref"] = f"{COMMON_1_1}#/$defs/gender"
        _props(s)["country"]["$ref"] = f"{COMMON_1_1}#/$defs/countryCode"

    new = _evolve(change)
    problems = incompatibilities(BASE, new, registry=_registry(COMMON, common_1_1))
    assert problems == ['#/properties/identity/properties/prs_Gender: enum value(s) removed: "Unknown"']


def test_common_versions_compared_through_defs() -> None:
    common_1_1 = copy.deepcopy(COMMON)
    common_1_1["$id"] = COMMON_1_1
    common_1_1["$defs"]["countryCode"]["pattern"] = "^[A-Z]{3}$"
    problems = incompatibilities(COMMON, common_1_1, registry=_registry(COMMON, common_1_1))
    assert problems == ['#/$defs/countryCode: pattern changed: "^[A-Z]{2}$" -> "^[A-Z]{3}$"']


def test_unresolvable_ref_is_reported() -> None:
    problems = _problems(lambda s: _props(s)["country"].update({"$ref": f"{COMMON_1_0}#/$defs/nope"}))
    assert problems == [f'#/properties/country: cannot resolve $ref "{COMMON_1_0}#/$defs/nope"']


def test_recursive_refs_terminate() -> None:
    tree: dict[str, Any] = {
        "$id": "urn:test:tree:1.0",
        "$defs": {
            "node": {"type": "object", "properties": {"children": {"items": {"$ref": "#/$defs/node"}}}}
        },
        "$ref": "#/$defs/node",
    }
    narrowed = copy.deepcopy(tree)
    narrowed["$id"] = "urn:test:tree:1.1"
    narrowed["$defs"]["node"]["properties"]["label"] = {"type": "string"}
    narrowed["$defs"]["node"]["required"] = ["label"]
    assert incompatibilities(tree, tree, registry=Registry()) == []
    problems = incompatibilities(tree, narrowed, registry=Registry())
    assert '#: property "label" became required' in problems
    assert len(problems) <= 2  # the root and the recursive use of the same definition, each once


def test_allof_parts_are_combined() -> None:
    old = {"allOf": [{"type": "object"}, {"properties": {"a": {"type": "string"}}}]}
    new = {"allOf": [{"type": "object"}, {"properties": {"a": {"type": "string"}}, "required": ["a"]}]}
    assert incompatibilities(old, new) == ['#: property "a" became required']


def test_property_declared_in_two_conjuncts() -> None:
    old = {"properties": {"a": {"maxLength": 5}}, "allOf": [{"properties": {"a": {"type": "string"}}}]}
    new = {"properties": {"a": {"maxLength": 5}}, "allOf": [{"properties": {"a": {"type": "integer"}}}]}
    assert incompatibilities(old, new) == ["#/properties/a: type narrowed: no longer accepts string"]


def test_anyof_branch_added_is_compatible_oneof_is_not() -> None:
    old = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    new = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    assert incompatibilities(old, new) == []
    old_one, new_one = {"oneOf": old["anyOf"]}, {"oneOf": new["anyOf"]}
    assert incompatibilities(old_one, new_one) == [
        "#: oneOf branch added (may overlap an old branch; cannot be verified)"
    ]


def test_anyof_branch_narrowed() -> None:
    old = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}
    new = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 5}]}
    assert incompatibilities(old, new) == ["#/anyOf/1: lower bound tightened: >= 0 -> >= 5"]


@pytest.mark.parametrize("keyword", ["not", "if", "dependentRequired", "uniqueItems", "multipleOf"])
def test_unmodelled_keyword_change_is_flagged(keyword: str) -> None:
    values = {
        "not": {"type": "null"},
        "if": {"required": ["a"]},
        "dependentRequired": {"a": ["b"]},
        "uniqueItems": True,
        "multipleOf": 2,
    }
    problems = incompatibilities({}, {keyword: values[keyword]})
    assert problems == [f"#: {keyword} changed (compatibility cannot be verified structurally)"]
    assert incompatibilities({keyword: values[keyword]}, {}) == []  # dropping a constraint only widens


def test_false_schema() -> None:
    assert incompatibilities({"properties": {"a": {}}}, {"properties": {"a": False}}) == [
        "#/properties/a: now rejects every value (false schema)"
    ]
    assert incompatibilities({"properties": {"a": False}}, {"properties": {"a": {"type": "string"}}}) == []


@pytest.mark.parametrize("keyword", ["x-dataclassification", "x-partitionkey"])
def test_changed_root_annotation(keyword: str) -> None:
    problems = _problems(lambda s: s.update({keyword: "other"}))
    assert problems == [f'#: {keyword} changed: "{BASE[keyword]}" -> "other"']


def test_several_problems_each_named_by_path() -> None:
    def change(s: dict[str, Any]) -> None:
        _props(s).pop("tags")
        _props(s)["status"]["enum"] = ["Open"]
        s["additionalProperties"] = False

    problems = _problems(change)
    assert sorted(problems) == sorted(
        [
            "#/properties/tags: property removed",
            '#/properties/status: enum value(s) removed: "Closed"',
            "#: additionalProperties: false added (unknown properties were allowed)",
        ]
    )


# ---- property: a schema is always compatible with itself -----------------------------------------------

_leaf = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", "number", "boolean"]),
        "enum": st.lists(st.integers(0, 5) | st.text(max_size=3), min_size=1, max_size=4, unique=True),
        "minimum": st.integers(-5, 5),
        "exclusiveMaximum": st.floats(-5, 5, allow_nan=False),
        "maxLength": st.integers(0, 9),
        "pattern": st.sampled_from(["^a", "b$", "[0-9]"]),
        "x-seal": st.sampled_from(["identity", "health"]),
    },
)
_schemas = st.recursive(
    _leaf,
    lambda inner: st.fixed_dictionaries(
        {"properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)},
        optional={
            "required": st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
            "additionalProperties": st.booleans() | inner,
            "items": inner,
            "anyOf": st.lists(inner, min_size=1, max_size=3),
        },
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(_schemas)
def test_every_schema_is_compatible_with_itself(schema: dict[str, Any]) -> None:
    assert incompatibilities(schema, copy.deepcopy(schema)) == []


@settings(max_examples=150, deadline=None)
@given(_schemas, st.sampled_from(["a", "b", "c"]))
def test_adding_a_required_property_is_always_caught(schema: dict[str, Any], name: str) -> None:
    new = copy.deepcopy(schema)
    required = new.setdefault("required", [])
    if name in required:
        return
    required.append(name)
    assert f'#: property "{name}" became required' in incompatibilities(schema, new)
