"""The README's first command, through the same code path (`gateway demo --once`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import load_scenario, run_demo
from gateway.logs import configure_logging
from gateway.schemas import SchemaStore, default_schema_root


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _sealed_strings() -> set[str]:
    """Every string the scenario puts in a sealed field (names, phone numbers, health notes...)."""
    store = SchemaStore.load(default_schema_root())
    found: set[str] = set()
    for step in load_scenario()[1]:
        payload = step.payload()
        sealed = store.latest(step.type).sealed_fields
        found.update(s for key in sealed if key in payload for s in _strings(payload[key]) if len(s) >= 4)
    return found


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json_output=True, level="debug", stream=stream)
    yield stream
    configure_logging(json_output=True, level="warning")
    logging.getLogger().setLevel(logging.WARNING)


async def test_demo_delivers_every_step_and_leaks_nothing(tmp_path: Path, captured_logs: io.StringIO) -> None:
    out = io.StringIO()
    summary = await run_demo(directory=tmp_path / "demo", once=True, out=out)
    parties, steps = load_scenario()
    assert set(summary) == set(parties)
    assert sum(row["published"] for row in summary.values()) == len(steps)
    assert all(row["rejected"] == 0 for row in summary.values())
    assert all(row["received"] > 0 for row in summary.values())
    assert "Summary" in out.getvalue()

    secrets = _sealed_strings()
    assert "Budi Sampel" in secrets or any(" " in s for s in secrets)  # the scenario does carry personal data
    logs = captured_logs.getvalue()
    assert len(logs.splitlines()) > 50  # debug logging of a full run, aiokafka included
    leaked = sorted(s for s in secrets if s in logs or s in out.getvalue())
    assert leaked == [], leaked
