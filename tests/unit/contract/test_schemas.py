"""SchemaStore and MessageSchema on small fixture schemas (tests/data/schemas), not the real ones."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contract.authoring import check_schemas
from gateway.contract.schemas import MessageSchema, SchemaStore, default_schema_root
from gateway.errors import GatewayError, Reason
from tests.paths import DATA

FIXTURES = DATA / "schemas"
REFERRAL_1_0 = "urn:id.trafficking:schema:case.test-referral:1.0"
REFERRAL_1_1 = "urn:id.trafficking:schema:case.test-referral:1.1"
CAPACITY_1_0 = "urn:id.trafficking:schema:alert.test-capacity:1.0"
REFERRAL_TYPE = "id.trafficking.case.test-referral"
SEAL_ALG = "HPKE-Base-X25519-SHA256-ChaCha20Poly1305"
SYNTHETIC_NAME = "Siti Aminah Rahayu"


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load(FIXTURES)


@pytest.fixture
def referral(store: SchemaStore) -> MessageSchema:
    return store.get(REFERRAL_1_0)


def _payload(**extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "case_id": "KBRI-KCH-2026-000001",
        "referred_at": "2026-03-01T08:30:00+07:00",
        "from_party": "kemlu.kbri-kuching",
        "identity": {"prs_FirstName": "Siti", "prs_Gender": "Feminine"},
        "contact": {"phone": "+6281200000000"},
    }
    payload.update(extra)
    return payload


def _sealed_block(parties: int = 1) -> dict[str, Any]:
    return {
        "alg": SEAL_ALG,
        "recipients": [
            {
                "party": f"party-{i}",
                "kid": f"party-{i}-seal-2026a",
                "enc": base64.b64encode(bytes(32)).decode(),
                "ct": base64.b64encode(b"ciphertext").decode(),
            }
            for i in range(parties)
        ],
    }


def _wire(schema: MessageSchema, payload: dict[str, Any]) -> dict[str, Any]:
    clear = {k: v for k, v in payload.items() if k not in schema.sealed_fields}
    return {**clear, "sealed": _sealed_block()}


def _error_text(validate: Callable[[object], None], payload: object) -> str:
    """``str()`` of the GatewayError ``validate`` raises (empty if it passes)."""
    try:
        validate(payload)
    except GatewayError as exc:
        return str(exc)
    return ""


def _invalid(call: Callable[[], object]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.reason is Reason.SCHEMA_INVALID
    return caught.value


# ---- loading and lookups -------------------------------------------------------------------------------


def test_load_builds_every_schema(store: SchemaStore) -> None:
    assert [(s.name, s.version) for s in store.schemas()] == [
        ("alert.test-capacity", (1, 0)),
        ("case.test-referral", (1, 0)),
        ("case.test-referral", (1, 1)),
    ]


def test_message_schema_attributes(referral: MessageSchema) -> None:
    assert referral.name == "case.test-referral"
    assert referral.version == (1, 0)
    assert referral.id == REFERRAL_1_0
    assert referral.type == REFERRAL_TYPE
    assert referral.kind == "case"
    assert referral.classification == "restricted"
    assert referral.partition_key_field == "case_id"
    assert dict(referral.sealed_fields) == {"identity": "identity", "contact": "contact"}
    assert referral.raw["$id"] == REFERRAL_1_0


def test_alert_attributes(store: SchemaStore) -> None:
    alert = store.get(CAPACITY_1_0)
    assert (alert.kind, alert.classification, alert.partition_key_field) == ("alert", "internal", "alert_id")
    assert dict(alert.sealed_fields) == {}


def test_message_schema_is_frozen_ordered_and_hashable(store: SchemaStore, referral: MessageSchema) -> None:
    with pytest.raises(AttributeError):
        referral.name = "case.other"  # type: ignore[misc]  # asserting the dataclass is frozen
    with pytest.raises(TypeError):
        referral.sealed_fields["summary"] = "health"  # type: ignore[index]  # read-only mapping proxy
    assert referral < store.get(REFERRAL_1_1)
    assert len({referral, store.get(REFERRAL_1_0)}) == 1


def test_get_unknown_dataschema(store: SchemaStore) -> None:
    for unknown in [
        "urn:id.trafficking:schema:case.test-referral:9.9",
        "urn:id.trafficking:schema:_common:1.0",
    ]:
        with pytest.raises(GatewayError) as caught:
            store.get(unknown)
        assert caught.value.reason is Reason.SCHEMA_UNKNOWN


def test_latest_and_for_type(store: SchemaStore) -> None:
    assert store.latest(REFERRAL_TYPE).id == REFERRAL_1_1
    assert [s.id for s in store.for_type(REFERRAL_TYPE)] == [REFERRAL_1_0, REFERRAL_1_1]
    assert store.for_type("id.trafficking.case.nope") == []
    with pytest.raises(GatewayError) as caught:
        store.latest("id.trafficking.case.nope")
    assert caught.value.reason is Reason.SCHEMA_UNKNOWN


def test_resolve_checks_the_type(store: SchemaStore) -> None:
    assert store.resolve(REFERRAL_TYPE, REFERRAL_1_0).id == REFERRAL_1_0
    with pytest.raises(GatewayError) as caught:
        store.resolve("id.trafficking.alert.test-capacity", REFERRAL_1_0)
    assert caught.value.reason is Reason.SCHEMA_TYPE_MISMATCH


def test_default_schema_root() -> None:
    root = default_schema_root()
    assert root.name == "schemas"
    assert (root.parent / "gateway" / "contract" / "schemas.py").is_file()
    assert default_schema_root(FIXTURES) == FIXTURES


def test_fixture_store_checks_clean(store: SchemaStore) -> None:
    assert check_schemas(store) == []


# ---- validation and error details ----------------------------------------------------------------------


def test_valid_payload_passes(referral: MessageSchema) -> None:
    referral.validate(_payload())
    referral.validate(_payload(summary="x" * 500, destination_country="ID", vic_TypeOfExploitation=[]))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.pop("case_id"), "$: required property 'case_id' missing"),
        (lambda p: p["identity"].update(prs_Gender="female"), "$.identity.prs_Gender: enum"),
        (lambda p: p.update(destination_country="id"), "$.destination_country: pattern ^[A-Z]{2}$"),
        (lambda p: p.update(summary="x" * 501), "$.summary: maxLength 500"),
        (lambda p: p.update(referred_at="2026-03-01T08:30:00"), "$.referred_at: format (date-time)"),
        (
            lambda p: p["identity"].update(prs_DateOfBirth="2001-02-30"),
            "$.identity.prs_DateOfBirth: format (date)",
        ),
        (lambda p: p["contact"].update(email="not-an-address"), "$.contact.email: format (email)"),
        (
            lambda p: p.update(vic_TypeOfExploitation=["ForcedLabour", 3]),
            "$.vic_TypeOfExploitation[1]: type (expected string); $.vic_TypeOfExploitation[1]: enum",
        ),
        (
            lambda p: p["identity"].update(nickname="Ani"),
            "$.identity: additionalProperties (1 unexpected property)",
        ),
        (lambda p: p["identity"].update(prs_FirstName=""), "$.identity.prs_FirstName: minLength 1"),
    ],
)
def test_invalid_payload_detail(
    referral: MessageSchema, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    payload = _payload()
    mutate(payload)
    assert _invalid(lambda: referral.validate(payload)).detail == expected


def test_python_regex_pitfalls_are_rejected(referral: MessageSchema) -> None:
    """``$`` does not match before a trailing newline and ``\\d``-style classes take ASCII digits only."""
    _invalid(lambda: referral.validate(_payload(destination_country="ID\n")))
    _invalid(lambda: referral.validate(_payload(contact={"phone": "+\u0666\u0662812000000"})))


def test_detail_never_contains_personal_data(referral: MessageSchema) -> None:
    payload = _payload()
    payload["identity"] = {
        "prs_FirstName": SYNTHETIC_NAME,
        "prs_LastName": 42,
        SYNTHETIC_NAME: SYNTHETIC_NAME,
    }
    payload["contact"] = {"phone": "+62 812 0000 0000", "email": f"{SYNTHETIC_NAME}@"}
    payload["summary"] = SYNTHETIC_NAME * 40
    error = _invalid(lambda: referral.validate(payload))
    for fragment in [SYNTHETIC_NAME, "Siti", "Aminah", "812", "0000"]:
        assert fragment not in error.detail
        assert fragment not in str(error)
    assert error.__cause__ is None  # jsonschema-rs messages quote the instance: never chained


def test_undeclared_keys_are_masked_in_paths(store: SchemaStore) -> None:
    alert = store.get(CAPACITY_1_0)
    payload = {
        "alert_id": "ALR-KEMENSOS-2026-000001",
        "shelter": "rptc-pontianak",
        "beds_free": 1,
        "as_of": "2026-03-01",
        SYNTHETIC_NAME: {"phone": "+6281200000000"},
    }
    error = _invalid(lambda: alert.validate(payload))
    assert error.detail == "$: additionalProperties (1 unexpected property)"


def test_several_errors_reported_deterministically(referral: MessageSchema) -> None:
    payload = _payload(summary="x" * 501, destination_country="id")
    payload.pop("case_id")
    payload.pop("from_party")
    details = {_invalid(lambda: referral.validate(payload)).detail for _ in range(5)}
    assert details == {
        "$: required property 'case_id' missing; $: required property 'from_party' missing; "
        "$.destination_country: pattern ^[A-Z]{2}$ (+1 more)"
    }


@pytest.mark.parametrize("value", [{"case_id": {1, 2}}, {1: "x"}, {"case_id": object()}], ids=repr)
def test_non_json_values_are_schema_invalid(referral: MessageSchema, value: object) -> None:
    assert _invalid(lambda: referral.validate(value)).detail == "$: payload is not a JSON value"


def test_non_object_payload(referral: MessageSchema) -> None:
    assert _invalid(lambda: referral.validate([SYNTHETIC_NAME])).detail == "$: type (expected object)"


# ---- wire form -----------------------------------------------------------------------------------------


def test_wire_schema_derivation(referral: MessageSchema) -> None:
    wire = referral.wire
    assert wire["properties"]["identity"] is False
    assert wire["properties"]["contact"] is False
    assert wire["properties"]["sealed"] == {
        "$ref": "urn:id.trafficking:schema:_common:1.0#/$defs/sealedBlock"
    }
    assert "identity" not in wire["required"]
    assert "sealed" in wire["required"]
    assert referral.raw["properties"]["identity"]["x-seal"] == "identity"  # the logical schema is untouched


def test_wire_payload_passes(referral: MessageSchema) -> None:
    referral.validate_wire(_wire(referral, _payload()))


def test_wire_rejects_sealed_field_in_clear(referral: MessageSchema) -> None:
    wire = {**_wire(referral, _payload()), "identity": {"prs_FirstName": SYNTHETIC_NAME}}
    error = _invalid(lambda: referral.validate_wire(wire))
    assert (
        error.detail
        == "$.identity: sealed field sent in clear (x-seal properties travel only inside 'sealed')"
    )
    assert SYNTHETIC_NAME not in error.detail


def test_wire_requires_sealed_block_when_a_sealed_field_is_required(referral: MessageSchema) -> None:
    wire = _wire(referral, _payload())
    del wire["sealed"]
    assert _invalid(lambda: referral.validate_wire(wire)).detail == "$: required property 'sealed' missing"


def test_wire_rejects_malformed_sealed_block(referral: MessageSchema) -> None:
    wire = _wire(referral, _payload())
    wire["sealed"]["recipients"] = []
    assert _invalid(lambda: referral.validate_wire(wire)).detail == "$.sealed.recipients: minItems 1"


def test_logical_schema_rejects_sealed_block(referral: MessageSchema) -> None:
    """The logical payload has the sealed fields in clear; the wire form lacks them."""
    _invalid(lambda: referral.validate(_wire(referral, _payload())))


def test_alert_wire_form_rejects_a_sealed_block(store: SchemaStore) -> None:
    alert = store.get(CAPACITY_1_0)
    payload = {
        "alert_id": "ALR-KEMENSOS-2026-000001",
        "shelter": "rptc-pontianak",
        "beds_free": 1,
        "as_of": "2026-03-01",
    }
    alert.validate_wire(payload)
    error = _invalid(lambda: alert.validate_wire({**payload, "sealed": _sealed_block()}))
    assert error.detail == "$.sealed: not allowed (this message type has no sealed fields)"


_OFFSETS = [UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-3, minutes=-30))]
_identity = st.fixed_dictionaries(
    {"prs_FirstName": st.text(min_size=1, max_size=100)},
    optional={
        "prs_LastName": st.text(max_size=100),
        "prs_Gender": st.sampled_from(["Feminine", "Masculine", "NonBinary", "Unknown"]),
        "prs_DateOfBirth": st.dates().map(lambda d: d.isoformat()),
    },
)
_contact = st.fixed_dictionaries(
    {},
    optional={
        "phone": st.from_regex(r"\A\+?[1-9][0-9]{1,14}\Z"),
        "email": st.sampled_from(["siti@example.org", "a.b@kemensos.go.id"]),
    },
)
_logical = st.fixed_dictionaries(
    {
        "case_id": st.from_regex(r"\A[A-Z0-9][A-Z0-9-]{5,63}\Z"),
        "referred_at": st.datetimes(timezones=st.sampled_from(_OFFSETS)).map(lambda t: t.isoformat()),
        "from_party": st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,2}\Z"),
        "identity": _identity,
    },
    optional={
        "contact": _contact,
        "destination_country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "summary": st.text(max_size=500),
        "vic_TypeOfExploitation": st.lists(
            st.sampled_from(["ForcedLabour", "SexualExploitation", "ForcedMarriage"]), unique=True
        ),
        "free_extra_field": st.integers(),  # the referral schema allows additional properties
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_logical, recipients=st.integers(min_value=1, max_value=4))
def test_wire_derivation_property(store: SchemaStore, payload: dict[str, Any], recipients: int) -> None:
    """A valid logical payload minus its sealed fields, plus a well-formed block, is a valid wire payload."""
    for schema in store.for_type(REFERRAL_TYPE):
        schema.validate(payload)
        clear = {k: v for k, v in payload.items() if k not in schema.sealed_fields}
        schema.validate_wire({**clear, "sealed": _sealed_block(recipients)})
        for name in schema.sealed_fields.keys() & payload.keys():  # and any sealed field left in clear fails
            leaky = {**clear, name: payload[name], "sealed": _sealed_block()}
            with pytest.raises(GatewayError) as caught:
                schema.validate_wire(leaky)
            assert caught.value.reason is Reason.SCHEMA_INVALID


@settings(max_examples=200, deadline=None)
@given(
    marker=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30),
    where=st.sampled_from(["case_id", "summary", "key", "identity", "nested-key", "array"]),
)
def test_details_never_echo_instance_data(store: SchemaStore, marker: str, where: str) -> None:
    token = f"qzx {marker} qzx"  # cannot occur in a detail by chance: details come from schema text only
    payload = _payload()
    match where:
        case "case_id":
            payload["case_id"] = token
        case "summary":
            payload["summary"] = token * 100
        case "key":
            payload[token] = token
            payload.pop("from_party")
        case "identity":
            payload["identity"] = {"prs_FirstName": token, "prs_Gender": token}
        case "nested-key":
            payload["identity"][token] = [token]
        case "array":
            payload["vic_TypeOfExploitation"] = [token]
    details = [
        _error_text(validate, payload)
        for schema in store.schemas()
        for validate in (schema.validate, schema.validate_wire)
    ]
    assert all(details)  # every payload above is invalid for every fixture schema, in both forms
    assert not [d for d in details if "qzx" in d]


# ---- broken schema directories -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(FIXTURES, root)
    return root


def _edit(root: Path, relative: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / relative
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


REFERRAL_FILE = "case.test-referral/1.0.json"
ALERT_FILE = "alert.test-capacity/1.0.json"
COMMON_FILE = "_common/1.0.json"


def _break_nested_seal(s: dict[str, Any]) -> None:
    s["properties"]["identity"]["properties"]["prs_LastName"]["x-seal"] = "identity"


@pytest.mark.parametrize(
    ("relative", "change", "message"),
    [
        (REFERRAL_FILE, lambda s: s.update({"$id": "urn:id.trafficking:schema:case.referral:1.0"}), "$id is"),
        (
            REFERRAL_FILE,
            lambda s: s.update({"$schema": "http://json-schema.org/draft-07/schema#"}),
            "$schema must",
        ),
        (REFERRAL_FILE, lambda s: s["properties"]["summary"].update(type="strin"), "meta-schema"),
        (REFERRAL_FILE, lambda s: s["properties"]["summary"].update(pattern="(unclosed"), "meta-schema"),
        (REFERRAL_FILE, lambda s: s["properties"].update(x={"$ref": "#/$defs/missing"}), "does not resolve"),
        (
            REFERRAL_FILE,
            lambda s: s["properties"].update(x={"$ref": "urn:id.trafficking:schema:_common:1.0#/$defs/nope"}),
            "does not resolve",
        ),
        (
            REFERRAL_FILE,
            lambda s: s["properties"]["identity"].update({"x-seal": "secret"}),
            "x-seal of 'identity'",
        ),
        (REFERRAL_FILE, _break_nested_seal, "x-seal at /properties/identity/properties/prs_LastName"),
        (
            COMMON_FILE,
            lambda s: s["$defs"]["gender"].update({"x-seal": "identity"}),
            "x-seal at /$defs/gender",
        ),
        (REFERRAL_FILE, lambda s: s.pop("x-dataclassification"), "x-dataclassification must be"),
        (
            REFERRAL_FILE,
            lambda s: s.update({"x-dataclassification": "secret"}),
            "x-dataclassification must be",
        ),
        (REFERRAL_FILE, lambda s: s.pop("x-partitionkey"), "x-partitionkey must"),
        (REFERRAL_FILE, lambda s: s["properties"].update(sealed={"type": "object"}), "'sealed' is reserved"),
        (REFERRAL_FILE, lambda s: s["properties"]["summary"].update(format="datetime"), "does not compile"),
        (COMMON_FILE, lambda s: s["$defs"].pop("sealedBlock"), "sealedBlock, which does not exist"),
        (COMMON_FILE, lambda s: s.update({"$id": "urn:id.trafficking:schema:_common:2.0"}), "$id is"),
    ],
)
def test_broken_schema_is_config_invalid(
    tree: Path, relative: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    _edit(tree, relative, change)
    with pytest.raises(GatewayError) as caught:
        SchemaStore.load(tree)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert message in caught.value.detail


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: (r / REFERRAL_FILE).write_text('{"$id": "a", "$id": "b"}'), "duplicate member name"),
        (lambda r: (r / REFERRAL_FILE).write_text("{not json"), "parse.invalid-json"),
        (lambda r: (r / REFERRAL_FILE).write_text("[]"), "not a JSON object"),
        (
            lambda r: (r / REFERRAL_FILE).rename(r / "case.test-referral/1.0.0.json"),
            "not <major>.<minor>.json",
        ),
        (lambda r: (r / "case_bad").mkdir(), "not a message name"),
        (lambda r: (r / "_common/examples").mkdir(), "unexpected directory"),
    ],
)
def test_broken_directory_is_config_invalid(
    tree: Path, setup: Callable[[Path], object], message: str
) -> None:
    setup(tree)
    with pytest.raises(GatewayError) as caught:
        SchemaStore.load(tree)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert message in caught.value.detail


def test_every_problem_is_listed(tree: Path) -> None:
    _edit(tree, REFERRAL_FILE, lambda s: s.pop("x-partitionkey"))
    _edit(tree, ALERT_FILE, lambda s: s.pop("x-dataclassification"))
    with pytest.raises(GatewayError) as caught:
        SchemaStore.load(tree)
    assert "2 problem(s)" in caught.value.detail


def test_missing_or_empty_root(tmp_path: Path) -> None:
    for root in [tmp_path / "absent", tmp_path]:
        with pytest.raises(GatewayError) as caught:
            SchemaStore.load(root)
        assert caught.value.reason is Reason.CONFIG_INVALID


# ---- check_schemas() (gateway.contract.authoring) ------------------------------------------------------


def _check(root: Path, *, examples: bool = True) -> list[str]:
    problems = check_schemas(SchemaStore.load(root))
    return problems if examples else [p for p in problems if "examples/" not in p]


def test_check_too_few_examples(tree: Path) -> None:
    (tree / "case.test-referral/examples/1.0/valid-full.json").unlink()
    (tree / "case.test-referral/examples/1.0/invalid-gender-not-htcds.json").unlink()
    assert _check(tree) == [
        "case.test-referral/1.0: 1 valid example(s), need >= 2",
        "case.test-referral/1.0: 2 invalid example(s), need >= 3",
    ]


def test_check_missing_examples_directory(tree: Path) -> None:
    shutil.rmtree(tree / "alert.test-capacity/examples")
    assert _check(tree) == ["alert.test-capacity/1.0: no examples directory examples/1.0/"]


def test_check_valid_example_that_fails(tree: Path) -> None:
    (tree / "case.test-referral/examples/1.1/valid-bad.json").write_text('{"case_id": "x"}')
    problems = _check(tree)
    assert len(problems) == 1
    assert problems[0].startswith(
        "case.test-referral/1.1: examples/1.1/valid-bad.json: should be valid but fails: $"
    )


def test_check_invalid_example_that_passes(tree: Path) -> None:
    shutil.copy(
        tree / "alert.test-capacity/examples/1.0/valid-some-beds.json",
        tree / "alert.test-capacity/examples/1.0/invalid-oops.json",
    )
    assert _check(tree) == [
        "alert.test-capacity/1.0: examples/1.0/invalid-oops.json: should be invalid but passes"
    ]


def test_check_badly_named_or_unparsable_examples(tree: Path) -> None:
    (tree / "alert.test-capacity/examples/1.0/good.json").write_text("{}")
    (tree / "alert.test-capacity/examples/1.0/valid-dup.json").write_text('{"a": 1, "a": 2}')
    (tree / "alert.test-capacity/examples/2.0").mkdir()
    problems = _check(tree)
    assert (
        "alert.test-capacity/1.0: examples/1.0/good.json: not named valid-*.json/invalid-*.json" in problems
    )
    assert any(
        p.startswith("alert.test-capacity/1.0: examples/1.0/valid-dup.json: parse.duplicate-key")
        for p in problems
    )
    assert "alert.test-capacity/examples/2.0: no schema alert.test-capacity/2.0.json" in problems


def test_check_alert_rules(tree: Path) -> None:
    def change(s: dict[str, Any]) -> None:
        s.pop("additionalProperties")
        s["properties"]["shelter"]["x-seal"] = "contact"

    _edit(tree, ALERT_FILE, change)
    assert _check(tree, examples=False) == [
        "alert.test-capacity/1.0: alert has x-seal properties: shelter",
        "alert.test-capacity/1.0: alert must set additionalProperties: false at top level",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["required"].remove("case_id"), ["x-partitionkey 'case_id' is not required"]),
        (
            lambda s: s["properties"].update(case_id={"type": "integer"}),
            ["x-partitionkey 'case_id' is not declared as a string"],
        ),
        (
            lambda s: s["properties"]["case_id"].update({"x-seal": "identity"}),
            ["x-partitionkey 'case_id' is sealed (it travels in clear as subject and key)"],
        ),
        (
            lambda s: s.update({"x-partitionkey": "summary"}),
            [
                "x-partitionkey is 'summary'; case messages use 'case_id'",
                "x-partitionkey 'summary' is not required",
            ],
        ),
        (lambda s: s.update(type=["object", "null"]), ['top level must be "type": "object"']),
    ],
)
def test_check_partition_key_rules(
    tree: Path, change: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    _edit(tree, "case.test-referral/1.1.json", change)
    problems = [p for p in _check(tree, examples=False) if p.startswith("case.test-referral/1.1: ")]
    assert [p.removeprefix("case.test-referral/1.1: ") for p in problems] == expected


def test_check_recursive_ref(tree: Path) -> None:
    def change(s: dict[str, Any]) -> None:
        s["$defs"] = {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}}
        s["properties"]["tree"] = {"$ref": "#/$defs/node"}

    _edit(tree, "case.test-referral/1.1.json", change)
    assert _check(tree) == [
        "case.test-referral/1.1: recursive $ref via #/$defs/node (message schemas must have bounded depth)"
    ]


def test_check_incompatible_minor(tree: Path) -> None:
    def change(s: dict[str, Any]) -> None:
        s["properties"]["summary"]["maxLength"] = 100
        s["properties"]["contact"]["x-seal"] = "identity"
        s["required"].append("urgent")

    _edit(tree, "case.test-referral/1.1.json", change)
    assert _check(tree, examples=False) == [
        "case.test-referral 1.0 -> 1.1: #/properties/summary: maxLength tightened: 500 -> 100",
        "case.test-referral 1.0 -> 1.1: #/properties/contact: "
        'x-seal category changed: "contact" -> "identity"',
        'case.test-referral 1.0 -> 1.1: #: property "urgent" became required',
    ]


def test_check_minor_gap(tree: Path) -> None:
    (tree / "case.test-referral/1.1.json").rename(tree / "case.test-referral/1.2.json")
    _edit(tree, "case.test-referral/1.2.json", lambda s: s.update({"$id": s["$id"].replace("1.1", "1.2")}))
    (tree / "case.test-referral/examples/1.1").rename(tree / "case.test-referral/examples/1.2")
    assert _check(tree) == [
        "case.test-referral: minor version(s) 1.1 missing (minors must be contiguous)",
    ]


def test_check_wire_form_of_valid_examples(tree: Path) -> None:
    """A sealedBlock definition the sealing code's output would not satisfy is caught through the examples."""

    def change(s: dict[str, Any]) -> None:
        s["$defs"]["sealedBlock"]["properties"]["recipients"]["items"]["required"].append("tag")

    _edit(tree, COMMON_FILE, change)
    problems = _check(tree)
    assert problems
    assert all("its wire form (sealed fields in a sealed block) fails" in p for p in problems)
    assert any(p.endswith("$.sealed.recipients[0]: required property 'tag' missing") for p in problems)
