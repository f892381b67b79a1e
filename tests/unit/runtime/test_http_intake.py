"""The HTTP intake: real HTTP to a real listener, publishing through a real Publisher into a real outbox.

No Kafka is involved (the intake ends at the outbox); what the outbox holds is verified as a peer would.
Every refusal is checked to answer ``{"reason", "detail"}`` with its status and to write nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.bus.database import Database
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.contract.envelope import Envelope
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.runtime.http_intake import OPENAPI_FILE, HttpIntake, http_intake_source
from gateway.settings import Table
from tests.tls import issue_cert, make_ca
from tests.world import World, example

PARTY = "iom"
SUPPLY = "id.trafficking.alert.supply"
TOKEN = "s3cret-token-for-tests"


def supply() -> dict[str, Any]:
    return example("alert.supply", "1.0")[0][1]


@dataclass
class Running:
    url: str
    outbox: Outbox
    intake: HttpIntake
    world: World
    database: Database

    async def stored(self) -> list[Envelope]:
        entries = await self.outbox.pending(1000)
        verifier = self.world.verifier()
        events = []
        for entry in entries:
            verdict = verifier.verify_kafka(entry.value, entry.headers, entry.key)
            assert isinstance(verdict, Accepted), verdict  # as a peer would check it
            events.append(verdict.event)
        return events


async def _start(tmp_path: Path, world: World, options: dict[str, Any]) -> AsyncIterator[Running]:
    database = Database(tmp_path / "outbox.db", durable=True)
    await database.open()
    outbox = Outbox(database, max_backlog=1000)
    await outbox.attach()
    publisher = Publisher(
        signer=world.members[PARTY].signer, registry=world.registry, schemas=world.schemas, outbox=outbox,
        metrics=GatewayMetrics(party=PARTY),
    )  # fmt: skip
    table = Table({"port": 0, **options}, where="sources[0]", base_dir=tmp_path)
    intake = http_intake_source(table, party=PARTY)
    table.refuse_unknown()
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(publisher.publish, stop))
    await asyncio.wait_for(intake.listening.wait(), 5)
    scheme = "https" if intake.settings.tls is not None else "http"
    try:
        yield Running(f"{scheme}://127.0.0.1:{intake.port}", outbox, intake, world, database)
    finally:
        stop.set()
        await task
        await outbox.wait_flushed()
        await database.close()


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


@pytest.fixture
async def server(tmp_path: Path, world: World) -> AsyncIterator[Running]:
    (tmp_path / "token").write_text(TOKEN + "\n")
    async for running in _start(tmp_path, world, {"token_file": "token"}):
        yield running


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _post(url: str, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    data = io.BytesIO(body.encode() if isinstance(body, str) else body)  # aiohttp warns on large raw bodies
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as answer:
        text = await answer.text()
        return answer.status, json.loads(text) if text else None, answer.headers.get("Content-Type", "")


async def test_an_event_is_published_into_the_outbox_and_its_id_returned(server: Running) -> None:
    body = json.dumps({"type": SUPPLY, "data": supply()})
    with capture_logs() as logs:
        status, answer, content_type = await _post(
            server.url + "/v1/events", body, {**AUTH, "Content-Type": "application/json"}
        )
    assert status == 202, answer
    assert content_type.startswith("application/json")
    assert answer["accepted"] == "outbox"
    assert answer["type"] == SUPPLY
    stored = await server.stored()
    assert [event.id for event in stored] == [answer["id"]]
    assert stored[0].source == PARTY
    # the request log names the route, status and event id; never the body or the token
    request_logs = [entry for entry in logs if entry["event"] == "http_intake.request"]
    assert request_logs == [{**request_logs[0], "route": "events", "status": 202, "event_id": answer["id"]}]
    flat = json.dumps(logs, default=str)
    assert "pos-pemulangan-pontianak" not in flat
    assert TOKEN not in flat


async def test_a_given_id_makes_a_retry_idempotent(server: Running) -> None:
    body = json.dumps({"type": SUPPLY, "data": supply(), "id": "iom-supply-2020-000045"})
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    first = await _post(server.url + "/v1/events", body, headers)
    second = await _post(server.url + "/v1/events", body, headers)
    assert first[0] == second[0] == 202
    assert first[1]["id"] == second[1]["id"] == "iom-supply-2020-000045"
    assert len(await server.stored()) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        ('{"type": "x", "data": {}}', {"Content-Type": "application/json"}, 401, "auth.unauthorized"),
        ("{}", {"Content-Type": "application/json", "Authorization": "Bearer wrong"}, 401,
         "auth.unauthorized"),
        ("{}", {"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"}, 401,
         "auth.unauthorized"),
        ("type=x", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415,
         "http.unsupported-media-type"),
        ("{}", {**AUTH, "Content-Type": "text/plain"}, 415, "http.unsupported-media-type"),
        ("{not json", {**AUTH, "Content-Type": "application/json"}, 400, "parse.invalid-json"),
        ('{"type": "a", "type": "b", "data": {}}', {**AUTH, "Content-Type": "application/json"}, 400,
         "parse.duplicate-key"),
        ("[1, 2]", {**AUTH, "Content-Type": "application/json"}, 400, "schema.invalid"),
        ('{"type": "x", "data": {}, "recipient": []}', {**AUTH, "Content-Type": "application/json"}, 400,
         "schema.invalid"),
        ('{"type": "x", "data": {}, "id": "../../etc"}', {**AUTH, "Content-Type": "application/json"}, 400,
         "schema.invalid"),
        ('{"type": "id.trafficking.nope", "data": {}}', {**AUTH, "Content-Type": "application/json"}, 422,
         "schema.unknown"),
        (json.dumps({"type": SUPPLY, "data": {**example("alert.supply", "1.0")[0][1], "quantity": 0}}),
         {**AUTH, "Content-Type": "application/json"}, 422, "schema.invalid"),
        (json.dumps({"type": "id.trafficking.case.shelter-admission",
                     "data": example("case.shelter-admission", "1.0")[0][1]}),
         {**AUTH, "Content-Type": "application/json"}, 422, "authz.type-not-permitted"),
        ("x" * (1024 * 1024 + 1), {**AUTH, "Content-Type": "application/json"}, 413, "size.exceeded"),
    ],
)  # fmt: skip
async def test_bad_requests_are_refused_with_a_reason_and_write_nothing(
    server: Running, body: str, headers: dict[str, str], status: int, reason: str
) -> None:
    answered, answer, content_type = await _post(server.url + "/v1/events", body, headers)
    assert (answered, answer["reason"]) == (status, reason), answer
    assert set(answer) == {"reason", "detail"}
    assert content_type.startswith("application/json")
    assert "Traceback" not in answer["detail"]
    assert Reason(answer["reason"])  # a documented code
    assert await server.stored() == []


async def test_unknown_paths_and_methods(server: Running) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(server.url + "/v1/events") as answer:
            assert answer.status == 405
            assert (await answer.json())["reason"] == "http.method-not-allowed"
            assert answer.headers["Allow"] == "POST"
        async with session.get(server.url + "/admin") as answer:
            assert answer.status == 404
            assert (await answer.json())["reason"] == "http.not-found"
        async with session.get(server.url + "/v1/openapi.json") as answer:
            assert answer.status == 200
            assert await answer.read() == OPENAPI_FILE.read_bytes()
    async with aiohttp.ClientSession() as session, session.get(server.url + "/v1/openapi.json") as answer:
        assert answer.status == 401  # the whole listener needs the token


async def test_a_batch_answers_each_event_in_order(server: Running) -> None:
    events = [
        {"type": SUPPLY, "data": supply()},
        {"type": SUPPLY, "data": {**supply(), "quantity": -1}},
        {"type": "id.trafficking.nope", "data": supply()},
        {"type": SUPPLY, "data": supply(), "id": "batch-3"},
    ]
    status, answer, _ = await _post(
        server.url + "/v1/events:batch",
        json.dumps({"events": events}),
        {**AUTH, "Content-Type": "application/json"},
    )
    assert status == 200
    assert (answer["accepted"], answer["refused"]) == (2, 2)
    assert [r.get("reason") for r in answer["results"]] == [None, "schema.invalid", "schema.unknown", None]
    assert [r["index"] for r in answer["results"]] == [0, 1, 2, 3]
    assert answer["results"][3]["id"] == "batch-3"
    assert len(await server.stored()) == 2
    malformed = json.dumps({"events": [{"type": SUPPLY, "data": supply()}, {"type": SUPPLY, "data": None}]})
    for body in ('{"events": []}', '{"events": {}}', '{"events": [], "x": 1}', malformed):
        status, answer, _ = await _post(
            server.url + "/v1/events:batch", body, {**AUTH, "Content-Type": "application/json"}
        )
        assert (status, answer["reason"]) == (400, "schema.invalid"), body
    assert len(await server.stored()) == 2


def test_a_listener_beyond_loopback_needs_authentication(tmp_path: Path) -> None:
    table = Table({"host": "0.0.0.0"}, where="sources[2]", base_dir=tmp_path)  # noqa: S104 - the test's point
    with pytest.raises(GatewayError) as caught:
        http_intake_source(table, party=PARTY)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert caught.value.detail.startswith("sources[2].host:")
    (tmp_path / "token").write_text(TOKEN)
    table = Table({"host": "0.0.0.0", "token_file": "token"}, where="sources[2]", base_dir=tmp_path)  # noqa: S104
    assert http_intake_source(table, party=PARTY).settings.token == TOKEN
    with pytest.raises(GatewayError, match=r"sources\[2\]\.client_ca_file"):
        http_intake_source(
            Table({"client_ca_file": "ca.pem"}, where="sources[2]", base_dir=tmp_path), party=PARTY
        )
    table = Table({"max_body_bytes": 10}, where="sources[2]", base_dir=tmp_path)
    with pytest.raises(GatewayError, match=r"sources\[2\]\.max_body_bytes"):
        http_intake_source(table, party=PARTY)


async def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(
    tmp_path: Path, world: World
) -> None:
    ca_path, ca_key, ca_cert = make_ca(tmp_path / "ca")
    server_cert, server_key = issue_cert(tmp_path, "intake", ca_key, ca_cert)
    client_cert, client_key = issue_cert(tmp_path, "kemensos-case-system", ca_key, ca_cert, client=True)
    _, other_key, other_cert = make_ca(tmp_path / "other", "another CA")
    stranger_cert, stranger_key = issue_cert(tmp_path, "stranger", other_key, other_cert, client=True)
    options = {
        "host": "127.0.0.1", "tls_cert_file": str(server_cert), "tls_key_file": str(server_key),
        "client_ca_file": str(ca_path),
    }  # fmt: skip
    async for running in _start(tmp_path, world, options):
        assert running.intake.settings.mutual_tls
        body = json.dumps({"type": SUPPLY, "data": supply()})

        def context(cert: Path | None, key: Path | None) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=str(ca_path))
            if cert is not None:
                ctx.load_cert_chain(str(cert), str(key))
            return ctx

        for cert, key in ((None, None), (stranger_cert, stranger_key)):
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientError):
                    async with session.post(
                        running.url + "/v1/events", data=body, headers={"Content-Type": "application/json"},
                        ssl=context(cert, key),
                    ) as answer:  # fmt: skip
                        await answer.read()
        assert await running.stored() == []
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                running.url + "/v1/events", data=body, headers={"Content-Type": "application/json"},
                ssl=context(client_cert, client_key),
            ) as answer,
        ):  # fmt: skip
            assert answer.status == 202
        assert len(await running.stored()) == 1
