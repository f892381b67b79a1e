"""Every schema example through the real sign -> verify path, as every reader of its topic."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.contract.canonical import canonical_json
from gateway.contract.envelope import Envelope
from gateway.contract.policy import event_topic
from gateway.contract.schemas import MessageSchema, SchemaStore, default_schema_root
from gateway.contract.seal import EventBinding, Recipient, seal
from gateway.contract.sign import sign_envelope
from gateway.contract.verify import Accepted, Rejected
from gateway.errors import GatewayError, Reason
from tests.world import World, example

_STORE = SchemaStore.load(default_schema_root())
_SCHEMAS = _STORE.schemas()


def _publisher(world: World, schema: MessageSchema, payload: dict[str, Any] | None = None) -> str:
    """A party that may publish the type; the one an ``x-party: source`` field of ``payload`` names."""
    named = {payload[f] for f in schema.party_fields if payload and f in payload}
    return next(
        p.id for p in world.registry.parties.values() if p.may_publish(schema.type) and named <= {p.id}
    )


def _readers(world: World, schema: MessageSchema, source: str) -> list[str]:
    return [p for p in world.registry.readers(event_topic(source, schema)) if p != source]


def _examples(which: str) -> list[Any]:
    cases = []
    for schema in _SCHEMAS:
        version = f"{schema.version[0]}.{schema.version[1]}"
        for path, payload in example(schema.name, version, which):
            cases.append(pytest.param(schema.id, payload, id=f"{schema.name}-{version}-{path.stem}"))
    return cases


def test_every_schema_has_examples() -> None:
    assert len(_SCHEMAS) >= 14
    for schema in _SCHEMAS:
        version = f"{schema.version[0]}.{schema.version[1]}"
        assert len(example(schema.name, version, "valid")) >= 2, schema.id
        assert len(example(schema.name, version, "invalid")) >= 3, schema.id


@pytest.mark.parametrize(("schema_id", "payload"), _examples("valid"))
def test_valid_example_round_trips(world: World, schema_id: str, payload: dict[str, Any]) -> None:
    schema = world.schemas.get(schema_id)
    source = _publisher(world, schema, payload)
    readers = _readers(world, schema, source)
    assert readers, f"nobody may read {schema.type} from {source}"
    recipients = readers if schema.sealed_fields else []
    event = world.event(schema.type, payload, by=source, recipients=recipients, dataschema=schema_id)

    wire = event.data_value()
    assert not set(schema.sealed_fields) & set(wire), "a sealed field travelled in clear"
    for reader in readers:
        for encoded in (event.to_structured(), None):
            if encoded is None:
                record = event.to_kafka()
                verdict = world.verifier(reader).verify_kafka(record.value, record.headers, record.key)
            else:
                verdict = world.verifier(reader).verify_structured(encoded)
            assert isinstance(verdict, Accepted), verdict
            assert verdict.event.id == event.id
            assert verdict.payload() == payload
    # a verifier that holds no sealing key still accepts, and sees only the clear fields
    anonymous = world.verifier().verify_structured(event.to_structured())
    assert isinstance(anonymous, Accepted)
    assert anonymous.unsealed is None
    assert set(anonymous.payload()) == set(payload) - set(schema.sealed_fields)


@pytest.mark.parametrize(("schema_id", "payload"), _examples("invalid"))
def test_invalid_example_is_refused_by_signer(world: World, schema_id: str, payload: dict[str, Any]) -> None:
    schema = world.schemas.get(schema_id)
    source = _publisher(world, schema)
    with pytest.raises(GatewayError) as caught:
        world.event(
            schema.type, payload, by=source, recipients=_readers(world, schema, source), dataschema=schema_id
        )
    assert caught.value.reason == Reason.SCHEMA_INVALID


@pytest.mark.parametrize(("schema_id", "payload"), _examples("invalid"))
def test_invalid_example_signed_anyway_is_rejected(
    world: World, schema_id: str, payload: dict[str, Any]
) -> None:
    """A producer that skips validation (buggy or hostile) is caught by every reader: schema.invalid."""
    schema = world.schemas.get(schema_id)
    source = _publisher(world, schema)
    reader = _readers(world, schema, source)[0]
    event = _sign_unvalidated(world, schema, source, reader, payload)
    verdict = world.verifier(reader).verify_structured(event.to_structured())
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.SCHEMA_INVALID, verdict


def _sign_unvalidated(
    world: World, schema: MessageSchema, source: str, reader: str, payload: dict[str, Any]
) -> Envelope:
    binding = EventBinding("evt-unvalidated-1", source, schema.type)
    clear = {k: v for k, v in payload.items() if k not in schema.sealed_fields}
    secret = {k: v for k, v in payload.items() if k in schema.sealed_fields}
    if "sealed" in payload:  # the example already carries a wire-form block: send the payload as it is
        clear = dict(payload)
    elif secret:
        member = world.members[reader]
        clear["sealed"] = seal(
            secret, binding, [Recipient(reader, member.seal_kid, member.sealing.public_key)]
        )
    key = str(payload.get(schema.partition_key_field, "CASE-MISSING-KEY"))
    attributes = {
        "id": binding.id,
        "source": source,
        "specversion": "1.0",
        "type": schema.type,
        "datacontenttype": "application/json",
        "dataschema": schema.id,
        "subject": key,
        "time": "2026-11-01T00:00:00Z",
        "partitionkey": key,
        "dataclassification": schema.classification,
    }
    return sign_envelope(
        Envelope.from_attributes(attributes, canonical_json(clear)), world.members[source].signer
    )
