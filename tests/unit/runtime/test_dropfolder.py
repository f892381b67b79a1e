"""FileDropSource with a recording stand-in for the runtime's publish function."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.contract.envelope import Envelope
from gateway.errors import GatewayError, Reason
from gateway.runtime.catalogue import Catalogue
from gateway.runtime.dropfolder import PUBLISH_CHUNK
from gateway.runtime.intake import file_ref
from gateway.runtime.jsonlines import EVENT_ID_NAMESPACE, FileDropSource, drop_event_id
from tests.doubles import IMMEDIATE, Published
from tests.world import World, example

SYNTHETIC_NAME = "Ratna Kusumawardhani"  # invented; must never reach a quarantine report or a log line


@pytest.fixture(scope="module")
def envelope() -> Envelope:
    """Any real envelope: what the stand-in publish function returns."""
    world = World.build()
    return world.event(
        "id.trafficking.case.referral",
        example("case.referral", "1.0")[0][1],
        by="kemlu.kbri-kuching",
        recipients=["kemensos"],
    )


@dataclass
class FakePublish:
    """Records calls; refuses data with ``"refuse": true`` as the real publisher refuses bad payloads."""

    envelope: Envelope
    calls: list[Published] = field(default_factory=list)
    crash_on_call: int | None = None  # raise a non-GatewayError on this call number (1-based): a crash
    refuse_on_call: tuple[int, Reason] | None = None  # refuse this call number with this reason
    stop_after: asyncio.Event | None = None  # set this event after the first successful call
    published: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        if self.crash_on_call is not None and len(self.calls) + 1 == self.crash_on_call:
            raise RuntimeError("simulated crash")
        if self.refuse_on_call is not None and len(self.calls) + 1 == self.refuse_on_call[0]:
            raise GatewayError(self.refuse_on_call[1], "the gateway cannot take events now")
        if data.get("refuse"):
            raise GatewayError(Reason.AUTHZ_TYPE_NOT_PERMITTED, f"kemensos may not publish {event_type}")
        self.calls.append(Published(event_type, dict(data), tuple(recipients), dataschema, event_id))
        self.published.set()
        if self.stop_after is not None:
            self.stop_after.set()
        return self.envelope

    def ids(self) -> list[str | None]:
        return [c.event_id for c in self.calls]


@pytest.fixture
def publish(envelope: Envelope) -> FakePublish:
    return FakePublish(envelope)


def drop(source: FileDropSource, name: str, lines: Sequence[str | dict[str, Any]]) -> Path:
    """Drop a file the way writers must: write ``.<name>.tmp``, then rename it into place."""
    source.ensure_directories()
    content = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    temporary = source.inbox / f".{name}.tmp"
    temporary.write_text(content, "utf-8")
    return temporary.rename(source.inbox / name)


def good(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "id.trafficking.case.referral",
        "data": {"case_id": f"CASE-{n}", "prs_GivenName": SYNTHETIC_NAME, **extra},
        "recipients": ["kemensos"],
    }


MIXED: list[str | dict[str, Any]] = [
    good(1),
    f'{{"type": "id.trafficking.case.referral", "data": {{"prs_GivenName": "{SYNTHETIC_NAME}"',  # truncated
    {"data": {"prs_GivenName": SYNTHETIC_NAME}},  # no type
    good(4, refuse=True),  # refused by publish
    "",  # blank: skipped, but counted
    {**good(6), "dataschema": "urn:id.trafficking:schema:case.referral:1.0"},
]


def read_report(source: FileDropSource, name: str) -> tuple[bytes, list[dict[str, Any]]]:
    raw = (source.quarantine / f"{name}.rejected.jsonl").read_bytes()
    return raw, [json.loads(line) for line in raw.splitlines()]


async def test_good_lines_published_bad_lines_quarantined(tmp_path: Path, publish: FakePublish) -> None:
    quarantined: list[tuple[str, str]] = []
    source = FileDropSource(
        tmp_path,
        bounds=IMMEDIATE,
        name="kemensos-export",
        on_quarantine=lambda *args: quarantined.append(args),
    )
    path = drop(source, "2026-05-01T10-00.jsonl", MIXED)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    with capture_logs() as logs:
        assert await source.process_pending(publish) == 1

    assert [c.data["case_id"] for c in publish.calls] == ["CASE-1", "CASE-6"]
    assert publish.ids() == [drop_event_id(digest, 1), drop_event_id(digest, 6)]
    assert publish.calls[0].recipients == ("kemensos",)
    assert publish.calls[0].dataschema is None
    assert publish.calls[1].dataschema == "urn:id.trafficking:schema:case.referral:1.0"

    raw, report = read_report(source, "2026-05-01T10-00.jsonl")
    assert [(r["line"], r["reason"]) for r in report] == [
        (2, "parse.invalid-json"),
        (3, "schema.invalid"),
        (4, "authz.type-not-permitted"),
    ]
    assert all(set(r) == {"file", "line", "reason", "detail", "explanation"} for r in report)
    assert all(set(r["explanation"]) == {"id", "en"} for r in report)
    catalogue = Catalogue.load()
    assert report[0]["explanation"]["id"] == catalogue.reasons["parse"]["id"]
    assert report[2]["explanation"]["en"] == catalogue.problems["publish-refused"]["en"]
    # the clerk's text report: Indonesian first, then English, by line and reason code, never a value
    text = (source.quarantine / "2026-05-01T10-00.jsonl.rejected.txt").read_text("utf-8")
    ref = report[0]["file"]
    assert text.index(f"Laporan karantina berkas {ref}: 3 rekaman tidak dikirim") < text.index(
        f"Quarantine report for file {ref}: 3 record(s) were not sent"
    )
    assert "- Baris 2 (kode alasan parse.invalid-json):\n  " + catalogue.reasons["parse"]["id"] in text
    assert (
        "- Line 4 (reason code authz.type-not-permitted):\n  " + catalogue.problems["publish-refused"]["en"]
        in text
    )
    assert SYNTHETIC_NAME not in text
    assert "2026-05-01T10-00" not in text  # the file is named by its digest only
    assert all(r["file"] == file_ref("2026-05-01T10-00.jsonl") for r in report)
    assert quarantined == [
        ("kemensos-export", "parse.invalid-json"),
        ("kemensos-export", "schema.invalid"),
        ("kemensos-export", "authz.type-not-permitted"),
    ]
    assert all(type(reason) is str for _, reason in quarantined)
    for text in (raw.decode(), repr(logs)):
        assert SYNTHETIC_NAME not in text
        assert "Kusumawardhani" not in text

    assert list(source.inbox.iterdir()) == []
    assert (source.done / "2026-05-01T10-00.jsonl").read_bytes().count(b"\n") == len(MIXED)
    assert stat.S_IMODE((source.quarantine / "2026-05-01T10-00.jsonl.rejected.jsonl").stat().st_mode) == 0o600
    assert not [p for p in source.quarantine.iterdir() if p.name.startswith(".")]  # no temporary left


async def test_clean_file_has_no_quarantine_report(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    drop(source, "a.jsonl", [good(1), good(2)])
    await source.process_pending(publish)
    assert len(publish.calls) == 2
    assert list(source.quarantine.iterdir()) == []
    assert [p.name for p in source.done.iterdir()] == ["a.jsonl"]


async def test_crash_mid_file_reprocesses_with_the_same_ids(tmp_path: Path, envelope: Envelope) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    drop(source, "batch.jsonl", [good(1), good(2), good(3)])

    crashing = FakePublish(envelope, crash_on_call=3)
    with pytest.raises(RuntimeError):
        await source.process_pending(crashing)
    assert [p.name for p in source.inbox.iterdir()] == ["batch.jsonl"]  # still to do
    assert list(source.done.iterdir()) == []

    restarted = FakePublish(envelope)
    assert await source.process_pending(restarted) == 1
    assert restarted.ids()[:2] == crashing.ids()  # the same events, not new ones
    assert len(set(restarted.ids())) == 3
    assert [p.name for p in source.done.iterdir()] == ["batch.jsonl"]


async def test_same_content_same_ids_and_unique_done_names(tmp_path: Path, envelope: Envelope) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    lines = [good(1), good(2, refuse=True), good(3)]
    runs = []
    for _ in range(3):
        drop(source, "daily.jsonl", lines)
        run = FakePublish(envelope)
        await source.process_pending(run)
        runs.append(run.ids())
    assert runs[0] == runs[1] == runs[2]
    assert all(isinstance(i, str) and uuid.UUID(i).version == 5 for i in runs[0])
    assert sorted(p.name for p in source.done.iterdir()) == ["daily.1.jsonl", "daily.2.jsonl", "daily.jsonl"]
    assert sorted(p.name for p in source.quarantine.iterdir()) == [
        "daily.1.jsonl.rejected.jsonl",
        "daily.1.jsonl.rejected.txt",
        "daily.2.jsonl.rejected.jsonl",
        "daily.2.jsonl.rejected.txt",
        "daily.jsonl.rejected.jsonl",
        "daily.jsonl.rejected.txt",
    ]


@pytest.mark.parametrize("reason", [Reason.OUTBOX_FULL, Reason.STOPPING, Reason.BUS_UNAVAILABLE])
async def test_gateway_state_refusals_defer_instead_of_quarantining(
    tmp_path: Path, envelope: Envelope, reason: Reason
) -> None:
    quarantined: list[tuple[str, str]] = []
    source = FileDropSource(tmp_path, bounds=IMMEDIATE, on_quarantine=lambda *args: quarantined.append(args))
    drop(source, "a.jsonl", [good(1), good(2), good(3)])
    drop(source, "b.jsonl", [good(4)])
    first = FakePublish(envelope, refuse_on_call=(2, reason))

    assert await source.process_pending(first) == 0
    assert [c.data["case_id"] for c in first.calls] == ["CASE-1"]  # b.jsonl waits behind a.jsonl
    assert sorted(p.name for p in source.inbox.iterdir()) == ["a.jsonl", "b.jsonl"]
    assert list(source.quarantine.iterdir()) == []
    assert quarantined == []

    later = FakePublish(envelope)  # the outbox drained / the gateway restarted
    assert await source.process_pending(later) == 2
    assert later.ids()[0] == first.ids()[0]
    assert [c.data["case_id"] for c in later.calls] == ["CASE-1", "CASE-2", "CASE-3", "CASE-4"]


async def test_different_content_different_ids(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    drop(source, "a.jsonl", [good(1)])
    drop(source, "b.jsonl", [good(2)])
    await source.process_pending(publish)
    assert len(set(publish.ids())) == 2


async def test_half_written_and_foreign_files_are_ignored(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    source.ensure_directories()
    content = json.dumps(good(1)) + "\n"
    ignored = [".export.jsonl.tmp", ".export.jsonl", "export.json", "export.jsonl.tmp", "README"]
    for name in ignored:
        (source.inbox / name).write_text(content, "utf-8")
    (source.inbox / "link.jsonl").symlink_to(source.inbox / "export.json")
    (source.inbox / "dir.jsonl").mkdir()

    assert await source.process_pending(publish) == 0
    assert publish.calls == []
    assert sorted(p.name for p in source.inbox.iterdir()) == sorted([*ignored, "link.jsonl", "dir.jsonl"])

    (source.inbox / ".export.jsonl").rename(source.inbox / "export.jsonl")  # the writer finishes
    assert await source.process_pending(publish) == 1
    assert len(publish.calls) == 1


async def test_files_processed_in_name_order(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    for n in (3, 1, 2):
        drop(source, f"2026-05-0{n}.jsonl", [good(n)])
    await source.process_pending(publish)
    assert [c.data["case_id"] for c in publish.calls] == ["CASE-1", "CASE-2", "CASE-3"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('["not", "an", "object"]', "schema.invalid"),
        ('{"type": "t", "data": {}, "recipient": ["kemensos"]}', "schema.invalid"),  # typo: unknown member
        ('{"type": "", "data": {}}', "schema.invalid"),
        ('{"type": "t", "data": []}', "schema.invalid"),
        ('{"type": "t", "data": {}, "recipients": "kemensos"}', "schema.invalid"),
        ('{"type": "t", "data": {}, "recipients": [1]}', "schema.invalid"),
        ('{"type": "t", "data": {}, "dataschema": 1}', "schema.invalid"),
        ('{"type": "t", "type": "u", "data": {}}', "parse.duplicate-key"),
        ('{"type": "t", "data": {"x": NaN}}', "parse.non-finite-number"),
        ("\ufeff" + json.dumps(good(1)), "parse.invalid-json"),
    ],
)
async def test_malformed_lines(tmp_path: Path, publish: FakePublish, line: str, reason: str) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    drop(source, "x.jsonl", [line, good(2)])
    await source.process_pending(publish)
    _, report = read_report(source, "x.jsonl")
    assert [(r["line"], r["reason"]) for r in report] == [(1, reason)]
    assert "recipient" not in report[0]["detail"].replace("recipients", "")  # unknown names not echoed
    assert [c.data["case_id"] for c in publish.calls] == ["CASE-2"]


async def test_oversized_and_invalid_utf8_lines(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE, max_line_bytes=200)
    source.ensure_directories()
    big = json.dumps(good(1, notes="x" * 300)).encode()
    (source.inbox / "x.jsonl").write_bytes(
        big + b"\n" + b'{"type": "\xff"}\r\n' + json.dumps(good(3)).encode()
    )
    await source.process_pending(publish)
    _, report = read_report(source, "x.jsonl")
    assert [(r["line"], r["reason"]) for r in report] == [(1, "size.exceeded"), (2, "parse.invalid-utf8")]
    assert [c.data["case_id"] for c in publish.calls] == ["CASE-3"]  # last line without newline, CRLF ok


async def test_directories_are_private(tmp_path: Path) -> None:
    source = FileDropSource(tmp_path / "drop", bounds=IMMEDIATE)
    source.ensure_directories()
    for path in (source.directory, source.inbox, source.done, source.quarantine):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


async def test_run_picks_up_new_files_and_stops_promptly(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(publish, stop))
    drop(source, "late.jsonl", [good(1)])  # dropped while run() is polling
    await asyncio.wait_for(publish.published.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert len(publish.calls) == 1


async def test_stop_interrupts_the_poll_wait(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(
        tmp_path, bounds=IMMEDIATE, poll_interval=3600
    )  # only a prompt stop lets this test finish
    drop(source, "a.jsonl", [good(1)])
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(publish, stop))
    await asyncio.wait_for(publish.published.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert (source.done / "a.jsonl").exists()


async def test_stop_mid_file_leaves_it_in_the_inbox(tmp_path: Path, envelope: Envelope) -> None:
    """``stop`` is honoured between chunks: the first chunk is published, the file waits for the rest."""
    source = FileDropSource(tmp_path, bounds=IMMEDIATE, poll_interval=3600)
    drop(source, "a.jsonl", [good(n) for n in range(1, PUBLISH_CHUNK + 3)])
    stop = asyncio.Event()
    publish = FakePublish(envelope, stop_after=stop)
    await asyncio.wait_for(source.run(publish, stop), timeout=10)
    assert len(publish.calls) == PUBLISH_CHUNK
    assert [p.name for p in source.inbox.iterdir()] == ["a.jsonl"]

    again = FakePublish(envelope)
    await source.process_pending(again)
    assert again.ids()[:PUBLISH_CHUNK] == publish.ids()
    assert len(again.calls) == PUBLISH_CHUNK + 2


async def test_a_file_is_published_in_order_in_chunks(tmp_path: Path, envelope: Envelope) -> None:
    """Records go out in chunks of concurrent calls, started in line order, around rejected lines."""
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    lines: list[str | dict[str, Any]] = [good(n) for n in range(1, 2 * PUBLISH_CHUNK + 10)]
    lines[5] = "not json"
    lines[PUBLISH_CHUNK + 7] = good(PUBLISH_CHUNK + 8, refuse=True)
    drop(source, "a.jsonl", lines)
    publish = FakePublish(envelope)
    assert await source.process_pending(publish) == 1
    expected = [n for n in range(1, 2 * PUBLISH_CHUNK + 10) if n not in (6, PUBLISH_CHUNK + 8)]
    assert [int(c.data["case_id"].removeprefix("CASE-")) for c in publish.calls] == expected


async def test_already_set_stop_returns_without_processing(tmp_path: Path, publish: FakePublish) -> None:
    source = FileDropSource(tmp_path, bounds=IMMEDIATE)
    drop(source, "a.jsonl", [good(1)])
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(source.run(publish, stop), timeout=10)
    assert publish.calls == []


def test_event_id_is_uuid5_of_digest_and_line() -> None:
    derived = uuid.uuid5(uuid.NAMESPACE_URL, "urn:id.trafficking:gateway:file-drop")
    assert derived == EVENT_ID_NAMESPACE
    digest = hashlib.sha256(b"x").hexdigest()
    assert drop_event_id(digest, 7) == str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{digest}:7"))
    assert drop_event_id(digest, 7) != drop_event_id(digest, 8)


@pytest.mark.parametrize("kwargs", [{"poll_interval": 0}, {"max_line_bytes": 0}])
def test_invalid_configuration(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        FileDropSource(tmp_path, bounds=IMMEDIATE, **kwargs)
    assert info.value.reason is Reason.CONFIG_INVALID


async def test_a_large_file_logs_its_progress_then_a_summary(tmp_path: Path, publish: FakePublish) -> None:
    ticks = iter(range(0, 10_000, 4))  # every reading of the clock is 4 s later: no sleeping, no timing
    source = FileDropSource(tmp_path, bounds=IMMEDIATE, name="bulk", clock=lambda: float(next(ticks)))
    drop(source, "bulk.jsonl", [good(n) for n in range(1, 401)])
    with capture_logs() as logs:
        assert await source.process_pending(publish) == 1
    progress = [e for e in logs if e["event"] == "file_drop.file_progress"]
    assert progress
    assert all(set(e) >= {"file", "read", "published", "quarantined"} for e in progress)
    assert [e["read"] for e in progress] == sorted(e["read"] for e in progress)
    assert all(0 < e["read"] <= 400 for e in progress)
    (done,) = [e for e in logs if e["event"] == "file_drop.file_done"]
    assert (done["published"], done["quarantined"]) == (400, 0)
    assert SYNTHETIC_NAME not in json.dumps(logs, default=str)
