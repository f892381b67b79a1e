"""Spreadsheet formulas (CSV injection, OWASP): flagged in the signed event, checked, neutralised on output.

A KBRI's repatriation plan whose clear ``departure_city`` is ``=HYPERLINK(…)`` (a cell of someone's
spreadsheet) is flagged by the signer in the signed ``formulacells`` extension; a consumer that is told
otherwise rejects the event; a recipient sees every formula cell, sealed ones included; a webhook sink
sends the pointers in a header and, when configured for a spreadsheet-writing agency system, prefixes the
values with ``'`` so they are shown, never evaluated.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.contract.canonical import canonical_json
from gateway.contract.dsse import PAYLOAD_TYPE, DsseEnvelope, DsseSignature, pae, verification_material
from gateway.contract.envelope import Envelope
from gateway.contract.formulas import FORMULA_EXTENSION, flag_value, formula_pointers, neutralise
from gateway.contract.verify import Accepted, Rejected
from gateway.errors import Reason
from gateway.runtime.webhook import WebhookSink
from tests.world import World, example

KCH = "kemlu.kbri-kuching"
PLAN = "id.trafficking.case.repatriation-plan"
FORMULA = '=HYPERLINK("http://attacker.example/x","click")'


def _plan() -> dict[str, Any]:
    payload = example("case.repatriation-plan", "1.0")[0][1]
    return {**payload, "departure_city": FORMULA}


def test_pointers_and_neutralising() -> None:
    value = {"a": "=1+1", "b": ["ok", "+cmd|' /C calc'!A0", "-2", "@SUM(A1)"], "c/d": "\tx", "n": -5}
    assert formula_pointers(value) == ["/a", "/b/1", "/b/2", "/b/3", "/c~1d"]
    assert neutralise(value) == {
        "a": "'=1+1", "b": ["ok", "'+cmd|' /C calc'!A0", "'-2", "'@SUM(A1)"], "c/d": "'\tx", "n": -5,
    }  # fmt: skip
    assert flag_value([]) is None
    assert flag_value(["/b", "/a"]) == '["/a","/b"]'
    assert flag_value([f"/{i:06d}" for i in range(1000)]) == "*"  # bounded


def test_the_signer_flags_clear_formula_cells_under_the_signature(world: World) -> None:
    event = world.event(PLAN, _plan(), by=KCH, recipients=["kemensos"])
    assert event.extensions[FORMULA_EXTENSION] == '["/departure_city"]'
    assert event.signedextattrs == f"partitionkey,dataclassification,{FORMULA_EXTENSION}"
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted)
    assert verdict.event.extensions[FORMULA_EXTENSION] == '["/departure_city"]'  # kept: it is signed
    assert verdict.formula_cells == ["/departure_city"]

    stripped = Envelope.from_attributes(
        {k: v for k, v in event.attributes().items() if k != FORMULA_EXTENSION}, event.data
    )
    rejected = world.verifier("kemensos").verify_structured(stripped.to_structured())
    assert isinstance(rejected, Rejected)  # removing the flag breaks the signature
    assert rejected.reason in (Reason.SIG_EXTATTRS_INVALID, Reason.SIG_DIGEST_MISMATCH)


def test_a_producer_that_hides_a_formula_behind_the_flag_is_rejected(world: World) -> None:
    """A signed ``formulacells`` that does not list the formula cell (a hostile or buggy producer)."""
    honest = world.event(PLAN, _plan(), by=KCH, recipients=["kemensos"])
    attributes = {k: v for k, v in honest.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    attributes[FORMULA_EXTENSION] = '["/elsewhere"]'
    names = ("partitionkey", "dataclassification", FORMULA_EXTENSION)
    signer = world.members[KCH].signer
    material = verification_material(attributes, honest.data, names)
    signature = DsseSignature(signer.kid, signer.key.sign(pae(PAYLOAD_TYPE, material)))
    lying = Envelope.from_attributes(attributes, honest.data).with_signature(
        ",".join(names), DsseEnvelope(PAYLOAD_TYPE, material, (signature,)).to_b64()
    )
    verdict = world.verifier("kemensos").verify_structured(lying.to_structured())
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.CE_INVALID_ATTRIBUTE
    assert FORMULA_EXTENSION in verdict.detail


def test_sealed_formula_cells_are_not_flagged_in_clear_but_seen_by_the_recipient(world: World) -> None:
    referral = example("case.referral", "1.0")[0][1]
    referral = {**referral, "identity": {**referral["identity"], "prs_FirstName": "=1+2"}}
    event = world.event("id.trafficking.case.referral", referral, by=KCH, recipients=["kemensos"])
    assert "/identity/prs_FirstName" not in event.extensions.get(FORMULA_EXTENSION, "")
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted)
    assert "/identity/prs_FirstName" in verdict.formula_cells
    assert canonical_json(verdict.data).find(b"=1+2") == -1  # sealed on the wire


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield str(server.make_url("/hook")), received
    await server.close()


@pytest.mark.parametrize(("mode", "expected"), [("flag", FORMULA), ("neutralise", "'" + FORMULA)])
async def test_webhook_flags_or_neutralises(
    world: World, endpoint: tuple[str, list[tuple[dict[str, str], bytes]]], mode: Any, expected: str
) -> None:
    url, received = endpoint
    event = world.event(PLAN, _plan(), by=KCH, recipients=["kemensos"])
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted)
    sink = WebhookSink(url, formulas=mode)
    try:
        await sink.deliver(verdict)
    finally:
        await sink.close()
    [(headers, body)] = received
    assert json.loads(headers["X-Xchg-Formula-Cells"]) == ["/departure_city"]
    assert json.loads(body)["payload"]["departure_city"] == expected
