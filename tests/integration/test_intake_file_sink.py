"""An agency system publishes with curl, exactly as docs/INTAKE_HTTP.md and the OpenAPI document say, and
the other agency receives the event through the file sink: real gateways, a real broker, real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from gateway.bus.kafka import KafkaSettings
from gateway.runtime.filesink import file_name
from gateway.runtime.http_intake import HttpIntake
from tests.integration.exchange import eventually, exchange
from tests.world import example

TOKEN = "iom-intake-token-for-tests"


async def _curl(*args: str) -> tuple[int, str]:
    """curl in a thread (it blocks); returns (HTTP status, body)."""

    def run() -> tuple[int, str]:
        done = subprocess.run(
            ["/usr/bin/curl", "--silent", "--show-error", "--max-time", "20",
             "--write-out", "\n%{http_code}", *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

    return await asyncio.to_thread(run)


async def test_publish_with_curl_and_receive_through_the_file_sink(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "intake.token").write_text(TOKEN + "\n")
    inbox = tmp_path / "kemensos-files"
    per_party = {
        "iom": {"sources": [{"kind": "http", "port": 0, "token_file": str(secrets / "intake.token")}]},
        "kemensos": {
            "sinks": [{"kind": "file", "directory": str(inbox), "types": ["id.trafficking.alert.*"]}]
        },
    }
    async with exchange(tmp_path / "x", ["iom", "kemensos"], isolated_kafka, per_party=per_party) as nodes:
        intake = next(s for s in nodes["iom"].gateway.sources if isinstance(s, HttpIntake))
        await asyncio.wait_for(intake.listening.wait(), 10)
        url = f"http://127.0.0.1:{intake.port}/v1/events"
        request = tmp_path / "supply.json"
        data = example("alert.supply", "1.0")[0][1]
        request.write_text(json.dumps({"type": "id.trafficking.alert.supply", "id": "iom-supply-2020-000045",
                                       "data": data}))  # fmt: skip
        status, body = await _curl(
            "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json",
            "--data-binary", f"@{request}", url,
        )  # fmt: skip
        assert status == 202, body
        answer = json.loads(body)
        assert answer == {
            "id": "iom-supply-2020-000045",
            "type": "id.trafficking.alert.supply",
            "accepted": "outbox",
        }

        # no token: refused, documented reason, nothing published
        status, body = await _curl(
            "-H", "Content-Type: application/json", "--data-binary", f"@{request}", url
        )
        assert (status, json.loads(body)["reason"]) == (401, "auth.unauthorized")

        target = inbox / file_name("iom", answer["id"])
        await eventually(target.exists, timeout=60, what="the event as a file in Kemensos' folder")
        delivered = json.loads(target.read_bytes())
        assert delivered["event"]["id"] == answer["id"]
        assert delivered["event"]["source"] == "iom"
        assert delivered["payload"] == data
        assert target.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in inbox.iterdir()) == [target.name]  # no temporary file left
