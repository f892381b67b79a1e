"""The inbox's outcome journal: what survives a crash between ``note`` and ``settle``, and a torn line.

The end-to-end bound (a reader SIGKILLed mid-stream repeats at most one event per kill) is asserted by
tests/integration/test_resilience.py; these tests pin down the mechanism behind it.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import structlog.testing

from gateway.bus.database import Database
from gateway.bus.inbox import PRUNE_INTERVAL, Inbox

SOURCE = "kemlu.kbri-kuching"


async def _open(directory: Path) -> tuple[Database, Inbox]:
    database = Database(directory / "inbox.db", durable=False)
    await database.open()
    inbox = Inbox(database)
    await inbox.attach()
    return database, inbox


def test_noted_outcomes_survive_a_crash_before_settle(tmp_path: Path) -> None:
    """A crash after ``note`` (no settle, nothing closed): the next start replays the journal first."""

    async def scenario() -> tuple[set[tuple[str, str]], int]:
        database, inbox = await _open(tmp_path)
        inbox.note(SOURCE, "e-1", "delivered")
        inbox.note(SOURCE, "e-2", "dead-lettered")
        await database.close()  # the process dies: the journal is neither settled nor closed
        database, inbox = await _open(tmp_path)
        try:
            seen = await inbox.seen([(SOURCE, "e-1"), (SOURCE, "e-2"), (SOURCE, "e-3")])
            return seen, inbox.journal_path.stat().st_size
        finally:
            inbox.close()
            await database.close()

    seen, journal_size = asyncio.run(scenario())
    assert seen == {(SOURCE, "e-1"), (SOURCE, "e-2")}
    assert journal_size == 0  # replayed into the database, then emptied


def test_settle_moves_outcomes_to_the_database_and_empties_the_journal(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, set[tuple[str, str]], int]:
        database, inbox = await _open(tmp_path)
        try:
            inbox.note(SOURCE, "e-1", "delivered")
            before = inbox.journal_path.stat().st_size
            await inbox.settle()
            after = inbox.journal_path.stat().st_size
            seen = await inbox.seen([(SOURCE, "e-1")])
            mode = stat.S_IMODE(inbox.journal_path.stat().st_mode)
            return before, after, seen, mode
        finally:
            inbox.close()
            await database.close()

    before, after, seen, mode = asyncio.run(scenario())
    assert before > 0
    assert after == 0
    assert seen == {(SOURCE, "e-1")}
    assert mode == 0o600


def test_a_torn_last_line_ends_the_replay_and_keeps_what_came_before(tmp_path: Path) -> None:
    """Power lost mid-write leaves half a line: the lines before it count, the torn one is reported."""

    async def scenario() -> set[tuple[str, str]]:
        database, inbox = await _open(tmp_path)
        inbox.note(SOURCE, "e-1", "delivered")
        inbox.close()
        await database.close()
        with inbox.journal_path.open("ab") as journal:
            journal.write(b'["kemlu.kbri-kuching","e-2","deliv')
        database, inbox = await _open(tmp_path)
        try:
            return await inbox.seen([(SOURCE, "e-1"), (SOURCE, "e-2")])
        finally:
            inbox.close()
            await database.close()

    with structlog.testing.capture_logs() as logs:
        seen = asyncio.run(scenario())
    assert seen == {(SOURCE, "e-1")}
    assert [entry["line"] for entry in logs if "unreadable" in entry["event"]] == [2]


def test_unknown_outcome_in_the_journal_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "inbox.db.outcomes").write_bytes(b'["kemlu.kbri-kuching","e-9","maybe",1.0]\n')

    async def scenario() -> set[tuple[str, str]]:
        database, inbox = await _open(tmp_path)
        try:
            return await inbox.seen([(SOURCE, "e-9")])
        finally:
            inbox.close()
            await database.close()

    assert asyncio.run(scenario()) == set()


def test_settle_deletes_outcomes_past_retention_at_most_once_per_interval(tmp_path: Path) -> None:
    """Outcomes older than the retention are deleted by a settle, not kept for ever; within the retention
    they still deduplicate; and a settle less than :data:`PRUNE_INTERVAL` after the last prune deletes
    nothing (a retention shorter than the interval makes that visible)."""
    now = [0.0]
    retention = PRUNE_INTERVAL / 4

    async def scenario() -> list[set[tuple[str, str]]]:
        database = Database(tmp_path / "inbox.db", durable=False)
        await database.open()
        inbox = Inbox(database, retention_seconds=retention, clock=lambda: now[0])
        await inbox.attach()
        keys = [(SOURCE, "a"), (SOURCE, "b"), (SOURCE, "c")]
        seen = []
        try:
            for at, event_id in [(0.0, "a"), (PRUNE_INTERVAL / 2, "b"), (PRUNE_INTERVAL, "c")]:
                now[0] = at
                inbox.note(SOURCE, event_id, "delivered")
                await inbox.settle()
                seen.append(await inbox.seen(keys))
            return seen
        finally:
            inbox.close()
            await database.close()

    first, half_an_interval_later, an_interval_later = asyncio.run(scenario())
    assert first == {(SOURCE, "a")}
    assert half_an_interval_later == {(SOURCE, "a"), (SOURCE, "b")}  # "a" is past retention: not yet pruned
    assert an_interval_later == {(SOURCE, "c")}  # pruned with the settle; "c" is within retention
