"""Fuzzing the running HTTP intake from its OpenAPI 3.1 document with schemathesis (bounded examples).

The listener runs for real (its own event loop in a thread, a real Publisher and outbox, a bearer token);
schemathesis generates requests from ``gateway/runtime/openapi.json`` — valid ones (positive) and ones that
break the document (negative: wrong types, missing members, extra members) — sends them over HTTP and
checks every answer: never a 5xx, status codes and content types the document lists, bodies that match
its schemas (so every error is ``{"reason", "detail"}`` with a documented reason code), and invalid
requests refused. Bounded by ``EXAMPLES`` per operation and mode, for the default suite; set
``XCHG_FUZZ_EXAMPLES`` for a longer run (docs/INTAKE_HTTP.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from gateway.bus.database import Database
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.runtime.http_intake import OPENAPI_FILE, http_intake_source
from gateway.settings import Table
from tests.world import World

EXAMPLES = int(os.environ.get("XCHG_FUZZ_EXAMPLES", "40"))
TOKEN = "fuzz-token"
OPERATIONS = [("/v1/events", "POST"), ("/v1/events:batch", "POST"), ("/v1/openapi.json", "GET")]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The intake listening on a free loopback port, served by its own loop in a daemon thread."""
    directory = tmp_path_factory.mktemp("intake")
    (directory / "token").write_text(TOKEN)
    world = World.build()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: dict[str, Any] = {}

    async def serve() -> None:
        database = Database(directory / "outbox.db", durable=True)
        await database.open()
        outbox = Outbox(database, max_backlog=1_000_000)
        await outbox.attach()
        publisher = Publisher(
            signer=world.members["iom"].signer, registry=world.registry, schemas=world.schemas,
            outbox=outbox, metrics=GatewayMetrics(party="iom"),
        )  # fmt: skip
        table = Table(
            {"port": 0, "token_file": "token", "max_batch": 20}, where="sources[0]", base_dir=directory
        )
        intake = http_intake_source(table, party="iom")
        stop["event"] = asyncio.Event()
        task = asyncio.create_task(intake.run(publisher.publish, stop["event"]))
        await intake.listening.wait()
        stop["url"] = f"http://127.0.0.1:{intake.port}"
        started.set()
        await task
        await outbox.wait_flushed()
        await database.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the intake did not start"
    yield str(stop["url"])
    loop.call_soon_threadsafe(stop["event"].set)
    thread.join(10)
    loop.close()


#: What counts as refusing a request that breaks the document: the 4xx statuses the document lists (413 for a
#: batch over ``max_items`` included, which schemathesis does not expect by default).
REFUSALS = ["400", "401", "404", "405", "413", "415", "422"]


def _schema() -> Any:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    )
    return schemathesis.openapi.from_dict(json.loads(Path(OPENAPI_FILE).read_text("utf-8")), config=config)


CASES = [
    *((path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS),
    # negative: the operations with a body to break (the document's GET has no parameter to violate)
    *((path, method, GenerationMode.NEGATIVE) for path, method in OPERATIONS if method == "POST"),
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_the_intake_answers_every_generated_request_as_documented(
    base_url: str, path: str, method: str, mode: GenerationMode
) -> None:
    operation = _schema()[path][method]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode), authenticated=st.booleans())
    def fuzz(case: Any, authenticated: bool) -> None:
        response = case.call(base_url=base_url, headers=headers if authenticated else {}, timeout=10)
        case.validate_response(response, checks=checks, headers=headers if authenticated else {})
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"reason", "detail"}
            assert "Traceback" not in body["detail"]

    fuzz()
