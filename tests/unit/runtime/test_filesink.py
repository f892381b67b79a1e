"""The file sink: one JSON file per event, atomic, idempotent, never a path a peer's id could choose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.bus.delivery import SinkError
from gateway.contract.verify import Accepted
from gateway.runtime.filesink import FileSink, file_name
from tests.world import World, example


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


def accepted(world: World, event_id: str | None = None) -> Accepted:
    data = example("alert.supply", "1.0")[0][1]
    event = world.event("id.trafficking.alert.supply", data, by="iom", event_id=event_id)
    verdict = world.verifier("kemensos").verify_envelope(event)
    assert isinstance(verdict, Accepted)
    return verdict


async def test_each_event_is_one_file_written_once_under_a_stable_name(tmp_path: Path, world: World) -> None:
    sink = FileSink(tmp_path / "out")
    event = accepted(world)
    await sink.deliver(event)
    await sink.deliver(event)  # a redelivery replaces the file with the same content
    files = list((tmp_path / "out").iterdir())
    assert [f.name for f in files] == [file_name("iom", event.event.id)]
    document = json.loads(files[0].read_bytes())
    assert document["event"]["id"] == event.event.id
    assert document["payload"] == event.payload()
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700


def test_a_peer_chosen_id_never_names_a_path() -> None:
    for event_id in ("../../etc/passwd", "/abs", "a/b", "..", "x" * 1000):
        name = file_name("kemlu.kbri-kuching", event_id)
        assert "/" not in name
        assert name.startswith("kemlu.kbri-kuching--")
        assert name.endswith(".json")
        assert len(name) < 120
    assert file_name("iom", "a") != file_name("iom", "b")
    assert file_name("IOM/../x", "a").startswith("iom_.._x--")


async def test_formula_cells_are_listed_or_neutralised(tmp_path: Path, world: World) -> None:
    plan = {**example("case.repatriation-plan", "1.0")[0][1], "departure_city": "=cmd"}
    signed = world.event(
        "id.trafficking.case.repatriation-plan", plan, by="kemlu.kbri-kuching", recipients=["kemensos"]
    )
    event = world.verifier("kemensos").verify_envelope(signed)
    assert isinstance(event, Accepted)
    assert event.formula_cells
    await FileSink(tmp_path / "flag").deliver(event)
    await FileSink(tmp_path / "neutral", formulas="neutralise").deliver(event)
    flagged = json.loads(next((tmp_path / "flag").iterdir()).read_bytes())
    neutral = json.loads(next((tmp_path / "neutral").iterdir()).read_bytes())
    assert flagged["formula_cells"] == ["/departure_city"]
    assert flagged["payload"]["departure_city"] == "=cmd"
    assert neutral["payload"]["departure_city"] == "'=cmd"


async def test_a_failed_write_is_a_retryable_sink_error(tmp_path: Path, world: World) -> None:
    sink = FileSink(tmp_path / "out")
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(SinkError) as caught:
        await sink.deliver(accepted(world))
    assert caught.value.retryable
    assert caught.value.detail == "sink file: cannot write (FileExistsError)"
