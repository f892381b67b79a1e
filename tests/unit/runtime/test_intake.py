"""Intake bounds on real files: no poison file stops a source, a file being written is never read.

The examples of issue 18, on files in a real folder: a file over ``max_file_bytes`` and one of NUL bytes, a
file with more records than ``max_records``, a file written in place (it must settle first, and is read
again if it changed while read), a reader that raises part-way, IOM workbooks with truncated sheet XML or a
DOCTYPE. Each ends in a quarantine entry with a reason code and the file in ``done/``, and the next file is
processed in the same round; no file name reaches a log line or a report.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.iom import HtcdsExportSource, IomMapping
from adapters.kemensos import CsvDropSource, KemensosMapping
from adapters.simulators.iom import sample_rows, write_htcds_export
from gateway.errors import Reason
from gateway.runtime.dropfolder import DropFile, DropOutcome, DropRecord
from gateway.runtime.intake import FileWatch, IntakeBounds, file_ref
from gateway.runtime.jsonlines import FileDropSource
from tests.doubles import IMMEDIATE, WorldPublish
from tests.world import World, example

PERSON = "Siti Contoh"  # an invented name, as a writer might put it into a file name
ALERT = "id.trafficking.alert.group-arrival"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def alert_line(number: int) -> str:
    payload = {**example("alert.group-arrival", "1.0")[0][1], "alert_id": f"ALR-KCH-2026-{number:06d}"}
    return json.dumps({"type": ALERT, "data": payload})


def write(source: FileDropSource | CsvDropSource | HtcdsExportSource, name: str, content: bytes) -> Path:
    source.ensure_directories()
    path = source.inbox / name
    path.write_bytes(content)
    return path


def reports(source: Any) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(source.quarantine.glob("*.rejected.jsonl"))
        for line in path.read_text("utf-8").splitlines()
    ]


def test_file_watch_needs_an_unchanged_size_and_mtime_for_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    watch = FileWatch(2.0, clock)
    path = tmp_path / "a.csv"
    path.write_bytes(b"one")
    assert watch.observe({"a.csv": path.stat()}) == set()
    clock.now += 1.9
    assert watch.observe({"a.csv": path.stat()}) == set()
    path.write_bytes(b"one two")  # still being written: the interval starts again
    clock.now += 1.0
    assert watch.observe({"a.csv": path.stat()}) == set()
    clock.now += 2.0
    assert watch.observe({"a.csv": path.stat()}) == {"a.csv"}
    assert FileWatch(0.0, clock).observe({"a.csv": path.stat()}) == {"a.csv"}


async def test_a_file_written_in_place_is_read_only_once_it_has_settled(tmp_path: Path, world: World) -> None:
    clock = Clock()
    source = FileDropSource(tmp_path, bounds=IntakeBounds(settle_seconds=5.0), clock=clock)
    publish = WorldPublish(world, "kemlu.kbri-kuching")
    path = write(source, "arrivals.jsonl", (alert_line(1) + "\n").encode())
    assert await source._process_ready(publish) == []  # just appeared: it may still be written
    with path.open("ab") as handle:  # the writer goes on, in place
        handle.write((alert_line(2) + "\n").encode())
    clock.now += 4.0
    assert await source._process_ready(publish) == []
    clock.now += 5.0
    [result] = await source._process_ready(publish)
    assert (result.outcome, result.published) == (DropOutcome.DONE, 2)  # every row, none lost


async def test_a_file_that_changes_while_it_is_read_stays_in_the_inbox(tmp_path: Path, world: World) -> None:
    class Appending(FileDropSource):
        def read_file(self, path: Path) -> DropFile:
            drop = super().read_file(path)
            with path.open("ab") as handle:  # the writer was not done after all
                handle.write((alert_line(9) + "\n").encode())
            return drop

    source = Appending(tmp_path, bounds=IMMEDIATE)
    path = write(source, "a.jsonl", (alert_line(1) + "\n").encode())
    with capture_logs() as logs:
        [result] = await source._process_ready(WorldPublish(world, "kemlu.kbri-kuching"))
    assert result.outcome is DropOutcome.DEFERRED
    assert path.exists()  # read again, whole, once it settles
    assert [e["event"] for e in logs if e["event"].endswith("file_changed")] == ["file_drop.file_changed"]


async def test_a_ready_marker_gates_the_file_and_is_removed_with_it(tmp_path: Path, world: World) -> None:
    source = FileDropSource(tmp_path, bounds=IntakeBounds(settle_seconds=0, ready_marker=True))
    publish = WorldPublish(world, "kemlu.kbri-kuching")
    write(source, "a.jsonl", (alert_line(1) + "\n").encode())
    assert await source._process_ready(publish) == []
    (source.inbox / "a.jsonl.ready").touch()
    [result] = await source._process_ready(publish)
    assert result.done
    assert sorted(p.name for p in source.inbox.iterdir()) == []


async def test_too_large_and_too_many_records_end_in_quarantine_and_the_next_file_goes_on(
    tmp_path: Path, world: World
) -> None:
    source = FileDropSource(
        tmp_path, bounds=IntakeBounds(settle_seconds=0, max_file_bytes=20_000, max_records=3)
    )
    publish = WorldPublish(world, "kemlu.kbri-kuching")
    write(source, f"a-{PERSON}.jsonl", b"\x00" * 50_000)  # over the size limit (and NUL bytes)
    write(source, "b-long.jsonl", "".join(alert_line(n) + "\n" for n in range(1, 6)).encode())
    write(source, "c-good.jsonl", (alert_line(7) + "\n").encode())
    with capture_logs() as logs:
        results = await source._process_ready(publish)
    assert [r.outcome for r in results] == [DropOutcome.DONE] * 3
    assert [r.published for r in results] == [0, 3, 1]
    found = {(r["file"], r["line"], r["reason"]) for r in reports(source)}
    assert found == {
        (file_ref(f"a-{PERSON}.jsonl"), None, "size.exceeded"),
        (file_ref("b-long.jsonl"), 4, "size.exceeded"),
    }
    assert PERSON not in json.dumps(logs)
    assert all(PERSON not in json.dumps(r) for r in reports(source))


async def test_a_reader_that_raises_part_way_quarantines_the_rest_and_the_source_goes_on(
    tmp_path: Path, world: World
) -> None:
    class Breaking(FileDropSource):
        def read_file(self, path: Path) -> DropFile:
            drop = super().read_file(path)
            if "broken" not in path.name:
                return drop

            def records() -> Iterator[DropRecord]:
                for number, record in drop.records:
                    if number == 2:
                        raise OverflowError(f"date value out of range near {PERSON}")
                    yield number, record

            return DropFile(records(), drop.facts)

    source = Breaking(tmp_path, bounds=IMMEDIATE)
    publish = WorldPublish(world, "kemlu.kbri-kuching")
    write(source, "a-broken.jsonl", "".join(alert_line(n) + "\n" for n in (1, 2, 3)).encode())
    write(source, "b-good.jsonl", (alert_line(4) + "\n").encode())
    results = await source._process_ready(publish)
    assert [(r.outcome, r.published) for r in results] == [(DropOutcome.DONE, 1), (DropOutcome.DONE, 1)]
    [entry] = reports(source)
    assert (entry["line"], entry["reason"]) == (2, str(Reason.INTERNAL_ERROR))
    assert entry["detail"] == "reading the file from record 2 on raised OverflowError"


# ---- the agencies' files ----------------------------------------------------------------------------


def _rewrite_sheet(path: Path, edit: Any) -> None:
    """Rewrite ``xl/worksheets/sheet1.xml`` of a workbook with ``edit(xml) -> xml``."""
    original = path.read_bytes()
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(original)) as zin,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = edit(data)
            zout.writestr(item, data)
    path.write_bytes(out.getvalue())


@pytest.mark.parametrize(
    ("edit", "row", "reason"),
    [
        (lambda xml: xml[: len(xml) * 2 // 3], None, "schema.invalid"),  # truncated sheet XML
        (lambda xml: b'<!DOCTYPE x [<!ENTITY e "' + b"A" * 64 + b'">]>' + xml, 0, "schema.invalid"),
    ],
    ids=["truncated", "doctype-with-entity"],
)
async def test_a_malformed_workbook_is_quarantined_and_the_next_file_is_processed(
    tmp_path: Path, world: World, edit: Any, row: int | None, reason: str
) -> None:
    source = HtcdsExportSource(tmp_path / "iom", party="iom", mapping=IomMapping.load(), bounds=IMMEDIATE)
    source.ensure_directories()
    bad = write_htcds_export(source.inbox / "a-export.xlsx", sample_rows())
    _rewrite_sheet(bad, edit)
    write_htcds_export(source.inbox / "b-export.csv", sample_rows())
    publish = WorldPublish(world, "iom")
    first, second = await source.process_pending(publish)
    assert first.done
    assert second.done
    assert second.published == 3  # the next file is not held up behind the broken one
    entries = reports(source)
    assert [(e["file"], e["reason"]) for e in entries][-1:] == [(file_ref("a-export.xlsx"), reason)]
    if row is not None:
        assert entries[-1]["row"] == row
    assert not any(source.inbox.iterdir())


async def test_a_kemensos_file_of_nul_bytes_is_quarantined(tmp_path: Path, world: World) -> None:
    source = CsvDropSource(tmp_path / "kemensos", KemensosMapping.load(), bounds=IMMEDIATE)
    write(source, "penerimaan_2026-01-01.csv", b"\x00" * 300_000)
    [result] = await source._process_ready(WorldPublish(world, "kemensos"))
    assert result.done
    [entry] = reports(source)
    assert (entry["row"], entry["reason"]) == (1, "schema.invalid")
