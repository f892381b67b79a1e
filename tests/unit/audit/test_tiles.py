"""The durable tile log: layout per c2sp.org/tlog-tiles, agreement with the in-memory reference, reopening,
and recovery from every state a crash can leave (simulated on disk, by injected I/O failures, and by a real
SIGKILL of a writing process)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit import layout, merkle
from gateway.audit.layout import entries_path, parse_tile_path, tile_path
from gateway.audit.tiles import TileLog
from gateway.errors import GatewayError, Reason

_REPO = Path(__file__).resolve().parents[3]


def _entry(i: int) -> bytes:
    return b"entry-%d" % i + b"x" * (i % 7)


def _entries(start: int, count: int) -> list[bytes]:
    return [_entry(i) for i in range(start, start + count)]


class _Reference:
    """Leaf hashes in a list; roots and proofs by the (separately tested) pure Merkle functions."""

    def __init__(self, count: int) -> None:
        self.hashes = [merkle.leaf_hash(_entry(i)) for i in range(count)]

    def hash_at(self, level: int, index: int) -> bytes:
        start = index << level
        return merkle.root_from_leaf_hashes(self.hashes[start : start + (1 << level)])

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.hashes[:size])


_REF = _Reference(70_000)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


@pytest.fixture
def log(tmp_path: Path) -> Iterator[TileLog]:
    with TileLog.open(tmp_path / "log") as opened:
        yield opened


# -- paths ------------------------------------------------------------------------------------------------


def test_paths_follow_tlog_tiles() -> None:
    assert tile_path(0, 0) == "tile/0/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"  # the spec's example
    assert tile_path(1, 1000) == "tile/1/x001/000"
    assert tile_path(2, 5, 1) == "tile/2/005.p/1"
    assert entries_path(0, 7) == "tile/entries/000.p/7"
    assert entries_path(999) == "tile/entries/999"
    for path, parsed in [
        ("tile/0/x001/x234/067", (0, 1234067, 256)),
        ("tile/entries/000.p/7", (None, 0, 7)),
        ("tile/63/000", (63, 0, 256)),
    ]:
        assert parse_tile_path(path) == parsed
    for bad in [
        "tile/0/x000/067",
        "tile/0/67",
        "tile/64/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/01/000",
        "tile/0/000.tmp",
        "state",
    ]:
        assert parse_tile_path(bad) is None, bad
    with pytest.raises(GatewayError):
        tile_path(64, 0)
    with pytest.raises(GatewayError):
        tile_path(0, 0, 0)


def test_layout_of_the_spec_example_sizes(tmp_path: Path) -> None:
    """tlog-tiles: size 256 is a full level-0 tile plus a level-1 partial tile of width 1."""
    with TileLog.open(tmp_path / "a", durable=False) as log:
        log.append(_entries(0, 256))
        names = set(_files(log.directory))
    assert {"tile/0/000", "tile/entries/000", "tile/1/000.p/1", "state"} == names


def test_tile_contents(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "a", durable=False) as log:
        log.append(_entries(0, 600))
        level0 = (log.directory / "tile/0/001").read_bytes()
        assert level0 == b"".join(_REF.hashes[256:512])
        assert (log.directory / "tile/0/002.p/88").read_bytes() == b"".join(_REF.hashes[512:600])
        level1 = (log.directory / "tile/1/000.p/2").read_bytes()
        assert level1 == _REF.hash_at(8, 0) + _REF.hash_at(8, 1)
        bundle = (log.directory / "tile/entries/002.p/88").read_bytes()
        assert bundle[:2] == len(_entry(512)).to_bytes(2, "big")
        assert bundle[2 : 2 + len(_entry(512))] == _entry(512)


# -- agreement with the reference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batches", [[1] * 40, [255, 1, 1], [256, 256], [1000], [3, 700, 1, 300, 65536 - 1004]]
)
def test_batches_match_the_reference(tmp_path: Path, batches: list[int]) -> None:
    with TileLog.open(tmp_path / "log", durable=False) as log:
        size = 0
        for count in batches:
            assert log.append(_entries(size, count)) == size
            size += count
            assert log.size == size
            assert log.root() == _REF.root(size)
        for probe in {0, 1, size // 3, size // 2, size - 1}:
            assert log.leaf_hash(probe) == _REF.hashes[probe]
            assert log.entry(probe) == _entry(probe)
            assert log.inclusion_proof(probe) == merkle.inclusion_proof(probe, size, _REF.hash_at)
            assert log.consistency_proof(probe) == merkle.consistency_proof(probe, size, _REF.hash_at)
            assert log.root_at(probe) == _REF.root(probe)
        log.check()


def test_large_tree_levels(tmp_path: Path) -> None:
    """70,000 entries: the spec's example of 273 full level-0 tiles, widths 112 / 17 / 1 at levels 0-2."""
    with TileLog.open(tmp_path / "log", durable=False) as log:
        for start in range(0, 70_000, 7_000):
            log.append(_entries(start, 7_000))
        assert log.root() == _REF.root(70_000)
        names = set(_files(log.directory))
        assert {"tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1", "tile/1/000"} <= names
        assert len([n for n in names if n.startswith("tile/0/") and ".p/" not in n]) == 273
        assert log.inclusion_proof(65_535, 70_000) == merkle.inclusion_proof(65_535, 70_000, _REF.hash_at)
        assert log.consistency_proof(65_536, 70_000) == merkle.consistency_proof(65_536, 70_000, _REF.hash_at)
        assert list(log.iter_entries(69_990)) == _entries(69_990, 10)
        log.check()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 600), min_size=1, max_size=8), st.data())
def test_random_batches_and_reopens(tmp_path: Path, batches: list[int], data: st.DataObject) -> None:
    directory = tmp_path / f"log-{time.monotonic_ns()}"
    size = 0
    for count in batches:
        with TileLog.open(directory, durable=False) as log:
            assert (log.size, log.root()) == (size, _REF.root(size))
            log.append(_entries(size, count))
            size += count
    with TileLog.open(directory, read_only=True) as log:
        assert (log.size, log.root()) == (size, _REF.root(size))
        if size:
            index = data.draw(st.integers(0, size - 1))
            tree = data.draw(st.integers(index + 1, size))
            proof = log.inclusion_proof(index, tree)
            assert merkle.verify_inclusion(_REF.hashes[index], index, tree, proof, _REF.root(tree))
            old = data.draw(st.integers(0, size))
            assert merkle.verify_consistency(
                old, size, _REF.root(old), log.root(), log.consistency_proof(old)
            )
        assert list(log.iter_entries()) == _entries(0, size)


# -- opening, locking, limits -----------------------------------------------------------------------------


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "log") as log:
        log.append(_entries(0, 300))
        log.append(_entries(300, 5))
    with TileLog.open(tmp_path / "log") as log:
        assert log.recovered == 0
        assert (log.size, log.root()) == (305, _REF.root(305))
        assert log.append(_entries(305, 400)) == 305
        assert log.root() == _REF.root(705)
        log.check()


def test_single_writer_and_read_only(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "log") as writer:
        writer.append(_entries(0, 10))
        with pytest.raises(GatewayError) as caught:
            TileLog.open(tmp_path / "log")
        assert caught.value.reason == Reason.TLOG_LOCKED
        with TileLog.open(tmp_path / "log", read_only=True) as reader:
            assert reader.size == 10
            with pytest.raises(GatewayError):
                reader.append([b"x"])
    with pytest.raises(GatewayError):
        writer.append([b"closed"])


def test_readers_while_a_writer_appends(tmp_path: Path) -> None:
    """Read-only opens during appends (which delete superseded partial tiles) always see a committed tree."""
    directory = tmp_path / "log"
    with TileLog.open(directory, durable=False) as writer:
        writer.append(_entries(0, 1))
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for size in range(1, 6000, 97):
                    writer.append(_entries(size, 97))
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        seen = 0
        while thread.is_alive() or not seen:
            with TileLog.open(directory, read_only=True) as reader:
                assert reader.root() == _REF.root(reader.size)
                seen += 1
        thread.join()
        assert not errors


def test_open_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(GatewayError):
        TileLog.open(tmp_path / "nothing", create=False)
    with pytest.raises(GatewayError):
        TileLog.open(tmp_path / "nothing", read_only=True)


def test_entry_limits(log: TileLog) -> None:
    assert log.append([]) == 0
    log.append([b"", b"\x00" * layout.MAX_ENTRY_SIZE])
    assert log.entry(0) == b""
    assert len(log.entry(1)) == layout.MAX_ENTRY_SIZE
    with pytest.raises(GatewayError) as caught:
        log.append([b"ok", b"\x00" * (layout.MAX_ENTRY_SIZE + 1)])
    assert caught.value.reason == Reason.SIZE_EXCEEDED
    assert log.size == 2  # all or nothing
    with pytest.raises(GatewayError):
        log.entry(2)
    with pytest.raises(GatewayError):
        log.inclusion_proof(0, 3)
    with pytest.raises(GatewayError):
        log.hash_at(1, 1)


# -- corruption is detected, not silently served ----------------------------------------------------------


def test_tampered_partial_tile_is_refused(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "log") as log:
        log.append(_entries(0, 300))
    target = tmp_path / "log" / "tile/0/001.p/44"
    data = bytearray(target.read_bytes())
    data[0] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(GatewayError) as caught:
        TileLog.open(tmp_path / "log")
    assert caught.value.reason == Reason.TLOG_CORRUPT


def test_tampered_full_entry_bundle_is_found_by_check(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "log") as log:
        log.append(_entries(0, 600))
    target = tmp_path / "log" / "tile/entries/000"
    target.write_bytes(target.read_bytes().replace(b"entry-5", b"entry-6", 1))
    with (
        TileLog.open(tmp_path / "log", read_only=True) as log,  # the right edge is intact: opens
        pytest.raises(GatewayError) as caught,
    ):
        log.check()
    assert caught.value.reason == Reason.TLOG_CORRUPT


def test_missing_state_with_tiles_is_refused(tmp_path: Path) -> None:
    with TileLog.open(tmp_path / "log") as log:
        log.append(_entries(0, 3))
    (tmp_path / "log" / "state").unlink()
    with pytest.raises(GatewayError) as caught:
        TileLog.open(tmp_path / "log")
    assert caught.value.reason == Reason.TLOG_CORRUPT


# -- crash recovery ---------------------------------------------------------------------------------------


def _crash_state(tmp_path: Path, before: int, count: int) -> tuple[Path, Path, list[str]]:
    """Directories of a log at ``before`` entries and of the same log after appending ``count`` more, plus
    the paths the batch wrote (what ``pending`` lists)."""
    old, new = tmp_path / "old", tmp_path / "new"
    with TileLog.open(old) as log:
        log.append(_entries(0, before))
    shutil.copytree(old, new)
    with TileLog.open(new) as log:
        log.append(_entries(before, count))
    old_files, new_files = _files(old), _files(new)
    written = sorted(name for name in new_files if name not in old_files and name != "state")
    assert all(
        old_files[name] == new_files[name] for name in old_files if name in new_files and name != "state"
    )
    return old, new, written


def _assert_recovers_to(directory: Path, size: int, total: int) -> None:
    with TileLog.open(directory) as log:
        assert not (directory / "pending").exists()
        assert not list(directory.rglob("*.tmp"))
        assert (log.size, log.root()) == (size, _REF.root(size))
        log.check()
        for name in _files(directory):
            parsed = parse_tile_path(name)
            if parsed is not None:
                level, index, width = parsed
                assert (index * 256 + width) << (8 * (level or 0)) <= size, f"{name} is beyond size {size}"
        # Resuming from log.size gives exactly the reference sequence: no gap, no duplicate.
        log.append(_entries(size, total - size))
        assert log.root() == _REF.root(total)
        assert list(log.iter_entries()) == _entries(0, total)
        log.check()


@pytest.mark.parametrize(("before", "count"), [(0, 1), (300, 5), (250, 10), (200, 900), (512, 256)])
@pytest.mark.parametrize("renamed", ["none", "half", "all"])
def test_crash_before_commit_rolls_back(tmp_path: Path, before: int, count: int, renamed: str) -> None:
    """Killed after ``pending`` was written and some or all tiles were renamed, before ``state``."""
    old, new, written = _crash_state(tmp_path, before, count)
    keep = {"none": [], "half": written[::2], "all": written}[renamed]
    for name in written:
        source = new / name
        if name in keep:
            (old / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, old / name)
        else:  # not renamed yet: its temporary file may be there, complete or torn
            (old / name).parent.mkdir(parents=True, exist_ok=True)
            (old / (name + ".tmp")).write_bytes(source.read_bytes()[:17])
    (old / "pending").write_text("".join(f"{name}\n" for name in written))
    (old / "state.tmp").write_bytes(b"torn")
    _assert_recovers_to(old, before, before + count + 3)


@pytest.mark.parametrize(("before", "count"), [(300, 5), (200, 900)])
def test_crash_after_commit_keeps_the_batch(tmp_path: Path, before: int, count: int) -> None:
    """Killed after ``state`` was replaced but before ``pending`` was removed (and partials cleaned up)."""
    _, new, written = _crash_state(tmp_path, before, count)
    (new / "pending").write_text("".join(f"{name}\n" for name in written))
    _assert_recovers_to(new, before + count, before + count + 3)


def test_crash_before_pending_is_durable(tmp_path: Path) -> None:
    """Killed while writing ``pending``: only temporary files exist; nothing to undo."""
    old, _, written = _crash_state(tmp_path, 300, 5)
    (old / "pending.tmp").write_text(written[0])
    _assert_recovers_to(old, 300, 400)


@pytest.mark.parametrize("fail_at", range(1, 26))  # this append makes 25 rename/fsync calls
def test_io_failure_mid_append_leaves_a_consistent_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """An OSError at the n-th rename or fsync: the append raises, the log reloads what is on disk."""
    with TileLog.open(tmp_path / "log") as log:
        log.append(_entries(0, 300))
        calls = {"n": 0}
        real_replace, real_fsync = os.replace, os.fsync

        def failing(real: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any) -> Any:
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise OSError(5, "injected I/O error")
                return real(*args)

            return wrapper

        monkeypatch.setattr(os, "replace", failing(real_replace))
        monkeypatch.setattr(os, "fsync", failing(real_fsync))
        with pytest.raises(GatewayError) as caught:
            log.append(_entries(300, 700))
        assert caught.value.reason == Reason.TLOG_IO_FAILED
        monkeypatch.undo()
        assert log.size in (300, 1000)
        assert log.root() == _REF.root(log.size)
        log.append(_entries(log.size, 1200 - log.size))
        assert log.root() == _REF.root(1200)
    _assert_recovers_to(tmp_path / "log", 1200, 1300)


_WRITER = textwrap.dedent(
    """
    import sys
    from gateway.audit.tiles import TileLog

    def entry(i):
        return b"entry-%d" % i + b"x" * (i % 7)

    log = TileLog.open(sys.argv[1])
    size = log.size
    sizes = [1, 7, 255, 256, 300, 1000]
    n = 0
    while True:
        count = sizes[n % len(sizes)]
        log.append([entry(i) for i in range(size, size + count)])
        size += count
        n += 1
        print(size, flush=True)
    """
)


def test_sigkill_while_appending(tmp_path: Path) -> None:
    """A real writer process killed at arbitrary moments, three times; every restart is consistent."""
    directory = tmp_path / "log"
    acknowledged = 0
    for delay in (0.15, 0.3, 0.05):
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory)],
            cwd=_REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(_REPO)},
        ) as process:
            assert process.stdout is not None
            first = process.stdout.readline()  # wait until it is appending
            assert first, process.stderr.read() if process.stderr else ""
            time.sleep(delay)  # where in the appending the kill lands; nothing is timed
            process.send_signal(signal.SIGKILL)
            lines = first + process.stdout.read()
            process.wait()
        printed = [int(x) for x in lines.split()]
        acknowledged = max(acknowledged, *printed)
        with TileLog.open(directory) as log:
            # Everything acknowledged is there; at most the one unacknowledged batch may have committed.
            assert log.size >= acknowledged
            assert log.size - acknowledged <= 1000
            assert log.root() == _REF.root(log.size)
        with TileLog.open(directory) as log:
            log.check()
            assert list(log.iter_entries(max(0, log.size - 300))) == _entries(
                max(0, log.size - 300), min(300, log.size)
            )
