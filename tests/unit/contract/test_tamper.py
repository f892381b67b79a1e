"""Tampering campaign: random single-byte changes to signed events are never accepted."""

from __future__ import annotations

import random

from gateway.contract.envelope import Envelope
from gateway.contract.verify import Accepted, EventVerifier
from tests.world import World, example

CHANGES = 1000


def _signed(world: World) -> Envelope:
    return world.event(
        "id.trafficking.case.referral",
        example("case.referral", "1.0")[0][1],
        by="kemlu.kbri-kuching",
        recipients=["kemensos"],
    )


def _flip(raw: bytes, rng: random.Random, lo: int = 0, hi: int | None = None) -> bytes:
    position = rng.randrange(lo, len(raw) if hi is None else hi)
    replacement = rng.choice([b for b in range(256) if b != raw[position]])
    return raw[:position] + bytes([replacement]) + raw[position + 1 :]


def test_structured_single_byte_changes_are_never_accepted(world: World) -> None:
    rng = random.Random(20261128)  # fixed seed: a failure is reproducible
    raw = _signed(world).to_structured()
    verifier: EventVerifier = world.verifier("kemensos")
    assert isinstance(verifier.verify_structured(raw), Accepted)
    accepted = [
        m
        for m in (_flip(raw, rng) for _ in range(CHANGES))
        if isinstance(verifier.verify_structured(m), Accepted)
    ]
    assert accepted == []


def test_kafka_single_byte_changes_in_value_headers_and_material_are_never_accepted(world: World) -> None:
    rng = random.Random(6962)
    record = _signed(world).to_kafka()
    verifier = world.verifier("kemensos")
    assert isinstance(verifier.verify_kafka(record.value, record.headers, record.key), Accepted)
    accepted = 0
    for i in range(CHANGES):
        value, headers = record.value, list(record.headers)
        if i % 2 == 0:  # the data bytes
            value = _flip(value, rng)
        else:  # one attribute header (ce_id, ce_source, ..., ce_dssematerial)
            index = rng.randrange(len(headers))
            name, header_value = headers[index]
            headers[index] = (name, _flip(header_value, rng))
        if isinstance(verifier.verify_kafka(value, headers, record.key), Accepted):
            accepted += 1
    assert accepted == 0
