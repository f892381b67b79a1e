"""A durable, append-only RFC 6962 log stored in the C2SP tlog-tiles layout (c2sp.org/tlog-tiles).

Files under the log directory (the ``tile/`` tree can be served as static files by any web server):

* ``tile/<L>/<N>[.p/<W>]`` — tiles: 256 consecutive 32-byte hashes of tile level L (level 0 = leaf hashes,
  level L+1 = the Merkle roots of the full tiles of level L); ``.p/<W>`` marks a partial tile of W hashes;
* ``tile/entries/<N>[.p/<W>]`` — entry bundles: the entries of level-0 tile N, each ``u16be(len) || entry``;
* ``state`` — ``xchg-tlog-state/v1\\n<size>\\n<base64 root>\\n``: the committed tree. Not part of tlog-tiles;
  the signed ``checkpoint`` is the notary's business;
* ``pending`` — while a batch is being written: the paths it writes (a redo-nothing/undo journal);
* ``lock`` — ``flock``-ed by the single writer.

The paths and the byte formats of these files are :mod:`gateway.audit.layout`'s (the auditor reads them too).

Commit protocol of :meth:`TileLog.append` (one batch):

1. ``pending`` is written durably, listing every path the batch will create;
2. every new tile and bundle is written to a temporary file, fsynced, renamed into place, and the touched
   directories are fsynced;
3. ``state`` is replaced durably — **this is the commit point**;
4. ``pending`` is removed and partial tiles made obsolete by full ones are deleted (both best effort).

Every path a batch writes describes data *beyond* the previously committed size, so a committed file is
never overwritten. :meth:`TileLog.open` recovers from a crash at any point by deleting the ``pending`` paths
that lie beyond the committed size: a batch is all or nothing, and the log resumes exactly at ``size`` — no
gap and no duplicate, provided the caller resumes from :attr:`TileLog.size` (never from a return value it may
not have seen). Open then re-derives the root from the tiles and refuses a log whose tiles disagree with
``state``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from gateway.audit import _fs, merkle
from gateway.audit.layout import (
    LOCK_FILE,
    MAX_ENTRY_SIZE,
    PENDING_FILE,
    STATE_FILE,
    TILE_HEIGHT,
    TILE_WIDTH,
    decode_state,
    encode_bundle,
    encode_state,
    entries_path,
    parse_tile_path,
    split_bundle,
    tile_end,
    tile_hashes,
    tile_path,
    tile_root,
)
from gateway.errors import GatewayError, Reason

__all__ = ["TileLog"]

_HASH: Final = merkle.HASH_SIZE
_FILE_MODE: Final = 0o640
_TILE_CACHE: Final = 512  # full tiles (8 KiB each) kept in memory: 4 MiB
_BUNDLE_CACHE: Final = 4


def _root_from_edges(edges: list[list[bytes]]) -> bytes:
    """The tree root from the right edge alone: every peak of the tree lies in a current partial tile.

    The peaks (perfect subtrees, one per set bit of the size) at tile level L are aligned runs of the
    partial tile's hashes, one per set bit of its width, largest first; the root folds them right to left.
    """
    peaks: list[bytes] = []
    for edge in reversed(edges):
        position = 0
        for bit in range(TILE_HEIGHT - 1, -1, -1):
            if len(edge) >> bit & 1:
                peaks.append(tile_root(edge[position : position + (1 << bit)]))
                position += 1 << bit
    if not peaks:
        return merkle.EMPTY_ROOT
    root = peaks[-1]
    for peak in reversed(peaks[:-1]):
        root = merkle.node_hash(peak, root)
    return root


def _decode_bundle(data: bytes, count: int, what: str) -> list[bytes]:
    entries, exact = split_bundle(data, count)
    if not exact:
        raise GatewayError(Reason.TLOG_CORRUPT, f"{what}: expected {count} entries")
    return entries


class TileLog:
    """One append-only log in a directory. One writer at a time (``flock``); any number of read-only openers.

    Methods are serialised by an internal lock, so threads may share an instance. A read-only instance sees
    the tree as of its opening; reopen it to see later appends.
    """

    def __init__(self, directory: Path, *, read_only: bool, durable: bool) -> None:
        # Use TileLog.open(); the constructor only sets fields.
        self._dir = directory
        self._read_only = read_only
        self._durable = durable
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._size = 0
        self._root = merkle.EMPTY_ROOT
        self._edges: list[list[bytes]] = []  # per tile level: the hashes of the current partial tile
        self._bundle: list[bytes] = []  # entries of the current partial bundle
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._bundles: OrderedDict[int, list[bytes]] = OrderedDict()
        self.recovered = 0
        """Files removed at open because a crashed batch wrote them beyond the committed size."""

    # -- opening, recovery ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path | str, *, create: bool = True, read_only: bool = False, durable: bool = True
    ) -> TileLog:
        """Open (and, unless ``read_only``, lock and recover) the log in ``directory``.

        ``create`` makes an empty log if the directory holds none. ``durable=False`` skips every fsync: for
        tests and benchmarks only, a crash may then lose or tear committed data.
        """
        log = cls(Path(directory), read_only=read_only, durable=durable)
        try:
            log._open(create)
        except BaseException:
            log.close()
            raise
        return log

    def _open(self, create: bool) -> None:
        state = self._dir / STATE_FILE
        try:
            if not self._dir.is_dir():
                if not create or self._read_only:
                    raise GatewayError(Reason.TLOG_IO_FAILED, f"no tile log at {self._dir}")
                self._dir.mkdir(parents=True)
            if not self._read_only:
                self._take_lock()
            if not state.exists():
                if (self._dir / "tile").exists() or (self._dir / PENDING_FILE).exists():
                    raise GatewayError(Reason.TLOG_CORRUPT, f"{self._dir}: tiles without a state file")
                if not create or self._read_only:
                    raise GatewayError(Reason.TLOG_IO_FAILED, f"no tile log at {self._dir}")
                self._write_state(0, merkle.EMPTY_ROOT)
            size, root = self._read_state()
            if not self._read_only:
                self.recovered = self._recover(size)
                self._load(size, root)
            else:
                self._load_concurrently(size, root)
        except OSError as exc:
            raise GatewayError(
                Reason.TLOG_IO_FAILED, f"cannot open tile log {self._dir}: {exc.strerror}"
            ) from exc

    def _load_concurrently(self, size: int, root: bytes) -> None:
        """A read-only open races with the writer, which deletes partial tiles once they are full: if the
        right edge vanished while loading, the state has moved on; load the newer state instead."""
        for attempt in range(3):
            try:
                self._load(size, root)
                return
            except GatewayError:
                newer = self._read_state()
                if newer == (size, root) or attempt == 2:
                    raise
                size, root = newer

    def _take_lock(self) -> None:
        fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise GatewayError(Reason.TLOG_LOCKED, f"{self._dir} is open for writing elsewhere") from exc
        self._lock_fd = fd

    def _read_state(self) -> tuple[int, bytes]:
        state = decode_state((self._dir / STATE_FILE).read_bytes())
        if state is None:
            raise GatewayError(Reason.TLOG_CORRUPT, f"{self._dir / STATE_FILE} is malformed")
        return state

    def _write_state(self, size: int, root: bytes) -> None:
        _fs.replace_files(
            {self._dir / STATE_FILE: encode_state(size, root)}, durable=self._durable, mode=_FILE_MODE
        )

    def _recover(self, size: int) -> int:
        """Undo an interrupted batch: delete what ``pending`` lists beyond ``size``; drop temporary files."""
        pending = self._dir / PENDING_FILE
        _fs.remove_files([_fs.temporary_path(self._dir / name) for name in (STATE_FILE, PENDING_FILE)])
        if not pending.exists():
            return 0
        removed = 0
        lines = pending.read_text("utf-8").splitlines()
        for line in lines:
            parsed = parse_tile_path(line)
            if parsed is None:
                raise GatewayError(Reason.TLOG_CORRUPT, f"{pending}: unexpected path {line!r}")
            path = self._dir / line
            _fs.remove_files([_fs.temporary_path(path)])
            if tile_end(*parsed) > size and path.exists():
                path.unlink()
                removed += 1
        if removed and self._durable:
            for directory in {(self._dir / line).parent for line in lines}:
                if directory.is_dir():
                    _fs.fsync_dir(directory)
        pending.unlink()
        return removed

    def _load(self, size: int, root: bytes) -> None:
        """Read the right edge (current partial tiles and bundle) and check it reproduces the stored root."""
        edges: list[list[bytes]] = []
        level = 0
        while size >> (TILE_HEIGHT * level):
            count = size >> (TILE_HEIGHT * level)
            width = count % TILE_WIDTH
            hashes: list[bytes] = []
            if width:
                path = tile_path(level, count // TILE_WIDTH, width)
                data = self._read_file(path, width * _HASH)
                hashes = tile_hashes(data)
            edges.append(hashes)
            level += 1
        bundle: list[bytes] = []
        if size % TILE_WIDTH:
            width = size % TILE_WIDTH
            path = entries_path(size // TILE_WIDTH, width)
            bundle = _decode_bundle(self._read_file(path, None), width, path)
            if [merkle.leaf_hash(entry) for entry in bundle] != edges[0]:
                raise GatewayError(Reason.TLOG_CORRUPT, f"{path} does not match its level-0 tile")
        if _root_from_edges(edges) != root:
            raise GatewayError(Reason.TLOG_CORRUPT, f"{self._dir}: tiles do not reproduce the stored root")
        self._size, self._root, self._edges, self._bundle = size, root, edges, bundle
        self._tiles.clear()
        self._bundles.clear()

    def _read_file(self, relative: str, expected: int | None) -> bytes:
        try:
            data = (self._dir / relative).read_bytes()
        except FileNotFoundError as exc:
            raise GatewayError(Reason.TLOG_CORRUPT, f"{relative} is missing") from exc
        except OSError as exc:
            raise GatewayError(Reason.TLOG_IO_FAILED, f"cannot read {relative}: {exc.strerror}") from exc
        if expected is not None and len(data) != expected:
            raise GatewayError(Reason.TLOG_CORRUPT, f"{relative} has {len(data)} bytes, not {expected}")
        return data

    def close(self) -> None:
        """Release the writer lock. The log stays consistent on disk whether or not this is called."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> TileLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def size(self) -> int:
        """The committed number of entries (the next entry gets this index)."""
        return self._size

    def root(self) -> bytes:
        """The root hash at the committed size."""
        return self._root

    def root_at(self, size: int) -> bytes:
        """The root hash of the tree as it was at ``size`` (0 <= size <= :attr:`size`)."""
        with self._lock:
            if not 0 <= size <= self._size:
                raise GatewayError(
                    Reason.PROOF_OUT_OF_RANGE, f"no tree of size {size} (log size {self._size})"
                )
            if size == self._size:
                return self._root
            return merkle.subtree_hash(0, size, self.hash_at) if size else merkle.EMPTY_ROOT

    def _tile(self, level: int, index: int) -> bytes:
        """Tile ``index`` of tile level ``level``: a stored full tile, or the current partial one (memory)."""
        full = self._size >> (TILE_HEIGHT * (level + 1))
        if index == full:
            edge = self._edges[level] if level < len(self._edges) else []
            return b"".join(edge)
        if index > full:
            raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"tile {level}/{index} is beyond the tree")
        key = (level, index)
        data = self._tiles.get(key)
        if data is None:
            data = self._read_file(tile_path(level, index), TILE_WIDTH * _HASH)
            self._remember_tile(key, data)
        else:
            self._tiles.move_to_end(key)
        return data

    def _remember_tile(self, key: tuple[int, int], data: bytes) -> None:
        self._tiles[key] = data
        if len(self._tiles) > _TILE_CACHE:
            self._tiles.popitem(last=False)

    def hash_at(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree of ``2**level`` leaves starting at leaf ``index * 2**level``."""
        with self._lock:
            if level < 0 or index < 0 or (index + 1) << level > self._size:
                raise GatewayError(
                    Reason.PROOF_OUT_OF_RANGE, f"no complete subtree {level}/{index} in the tree"
                )
            tile_level, height = divmod(level, TILE_HEIGHT)
            first = index << height
            tile = self._tile(tile_level, first // TILE_WIDTH)
            offset = first % TILE_WIDTH
            hashes = tile_hashes(tile[offset * _HASH : (offset + (1 << height)) * _HASH])
            return hashes[0] if height == 0 else tile_root(hashes)

    def leaf_hash(self, index: int) -> bytes:
        return self.hash_at(0, index)

    def _read_bundle(self, index: int) -> list[bytes]:
        full = self._size >> TILE_HEIGHT
        if index == full:
            return self._bundle
        if index > full:
            raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"entry bundle {index} is beyond the tree")
        entries = self._bundles.get(index)
        if entries is None:
            path = entries_path(index)
            entries = _decode_bundle(self._read_file(path, None), TILE_WIDTH, path)
            self._bundles[index] = entries
            if len(self._bundles) > _BUNDLE_CACHE:
                self._bundles.popitem(last=False)
        return entries

    def entry(self, index: int) -> bytes:
        """The entry (leaf data) at ``index``."""
        with self._lock:
            if not 0 <= index < self._size:
                raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"no entry {index} (log size {self._size})")
            return self._read_bundle(index // TILE_WIDTH)[index % TILE_WIDTH]

    def iter_entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``[start, end)`` in order (``end`` defaults to the size when iteration starts)."""
        stop = self._size if end is None else end
        if not 0 <= start <= stop <= self._size:
            raise GatewayError(
                Reason.PROOF_OUT_OF_RANGE, f"no entries [{start}, {stop}) (log size {self._size})"
            )
        index = start
        while index < stop:
            with self._lock:
                bundle = list(self._read_bundle(index // TILE_WIDTH))
            first = index % TILE_WIDTH
            take = min(TILE_WIDTH - first, stop - index)
            yield from bundle[first : first + take]
            index += take

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 inclusion proof of leaf ``index`` in the tree of ``size`` (default: current size)."""
        with self._lock:
            tree = self._size if size is None else size
            if tree > self._size:
                raise GatewayError(
                    Reason.PROOF_OUT_OF_RANGE, f"no tree of size {tree} (log size {self._size})"
                )
            return merkle.inclusion_proof(index, tree, self.hash_at)

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        """RFC 6962 consistency proof from size ``m`` to ``n`` (default: current size)."""
        with self._lock:
            tree = self._size if n is None else n
            if tree > self._size:
                raise GatewayError(
                    Reason.PROOF_OUT_OF_RANGE, f"no tree of size {tree} (log size {self._size})"
                )
            return merkle.consistency_proof(m, tree, self.hash_at)

    def check(self) -> None:
        """Re-derive every stored hash from the entries and compare (O(size) reads); raises TLOG_CORRUPT."""
        with self._lock:
            size = self._size
            accumulator = merkle.MerkleAccumulator()
            for index in range(-(-size // TILE_WIDTH)):
                hashes = [merkle.leaf_hash(entry) for entry in self._read_bundle(index)]
                if b"".join(hashes) != self._tile(0, index):
                    raise GatewayError(
                        Reason.TLOG_CORRUPT, f"entry bundle {index} does not match tile 0/{index}"
                    )
                for value in hashes:
                    accumulator.append_leaf_hash(value)
            level = 1
            while size >> (TILE_HEIGHT * level):
                for j in range(size >> (TILE_HEIGHT * level)):
                    below = tile_root(tile_hashes(self._tile(level - 1, j)))
                    tile = self._tile(level, j // TILE_WIDTH)
                    if tile[(j % TILE_WIDTH) * _HASH : (j % TILE_WIDTH + 1) * _HASH] != below:
                        raise GatewayError(Reason.TLOG_CORRUPT, f"hash {level}/{j} does not match its tile")
                level += 1
            if accumulator.root() != self._root:
                raise GatewayError(Reason.TLOG_CORRUPT, "entries do not reproduce the stored root")

    # -- appending ----------------------------------------------------------------------------------------

    def append(self, entries: Sequence[bytes]) -> int:
        """Durably append a batch; returns the index of its first entry. All or nothing.

        On any error the in-memory view is reloaded from disk: :attr:`size` then says what is committed (a
        failure while committing can leave the batch either committed or not; the caller must look).
        """
        if self._read_only:
            raise GatewayError(Reason.TLOG_LOCKED, "tile log opened read-only")
        batch = [bytes(entry) for entry in entries]
        for entry in batch:
            if len(entry) > MAX_ENTRY_SIZE:
                raise GatewayError(Reason.SIZE_EXCEEDED, f"entry of {len(entry)} bytes > {MAX_ENTRY_SIZE}")
        with self._lock:
            if self._lock_fd is None:
                raise GatewayError(Reason.TLOG_LOCKED, "tile log is closed")
            first = self._size
            if not batch:
                return first
            try:
                self._append(batch)
            except BaseException as exc:
                self._reload_after_failure(exc)
                raise
            return first

    def _reload_after_failure(self, failure: BaseException) -> None:
        """Make the in-memory view equal what is on disk again (the disk is the truth after a failure)."""
        try:
            size, root = self._read_state()
            self._recover(size)
            self._load(size, root)
        except (OSError, GatewayError) as exc:
            self.close()  # unusable until reopened, which recovers again
            raise GatewayError(
                Reason.TLOG_IO_FAILED, "append failed and the log could not be reloaded; reopen it"
            ) from exc
        if isinstance(failure, OSError):
            raise GatewayError(Reason.TLOG_IO_FAILED, f"append failed: {failure.strerror}") from failure

    def _append(self, batch: list[bytes]) -> None:
        built = self._build(batch)
        pending = "".join(f"{path}\n" for path in built.files).encode()
        _fs.replace_files({self._dir / PENDING_FILE: pending}, durable=self._durable, mode=_FILE_MODE)
        files = {self._dir / path: data for path, data in built.files.items()}
        _fs.replace_files(files, durable=self._durable, mode=_FILE_MODE)
        self._write_state(built.size, built.root)  # commit point
        with contextlib.suppress(OSError):  # a leftover journal only lists committed paths: harmless
            (self._dir / PENDING_FILE).unlink()

        self._size, self._root = built.size, built.root
        self._edges, self._bundle = built.edges, built.bundle
        for level, index, data in built.full_tiles:
            if level is not None:
                self._remember_tile((level, index), data)
            # The full tile supersedes its partial versions (tlog-tiles allows deleting them).
            partials = self._dir / (entries_path(index) if level is None else tile_path(level, index))
            with contextlib.suppress(OSError):
                shutil.rmtree(partials.with_name(partials.name + ".p"))

    def _build(self, batch: list[bytes]) -> _Batch:
        """Compute, in memory, every file the batch writes and the state after it; touches nothing."""
        built = _Batch(
            size=self._size,
            root=self._root,
            edges=[list(edge) for edge in self._edges],
            bundle=list(self._bundle),
        )
        edges, files = built.edges, built.files
        touched: set[int] = set()
        sha256 = hashlib.sha256
        for entry in batch:
            value = sha256(b"\x00" + entry).digest()  # merkle.leaf_hash, inlined: this loop is the hot path
            built.size += 1
            size = built.size
            built.bundle.append(entry)
            if len(built.bundle) == TILE_WIDTH:
                index = (size >> TILE_HEIGHT) - 1
                files[entries_path(index)] = encode_bundle(built.bundle)
                built.full_tiles.append((None, index, b""))
                built.bundle = []
            level = 0
            while True:  # carry a full tile's root into the level above
                if level == len(edges):
                    edges.append([])
                edge = edges[level]
                edge.append(value)
                touched.add(level)
                if len(edge) < TILE_WIDTH:
                    break
                index = (size >> (TILE_HEIGHT * (level + 1))) - 1
                data = b"".join(edge)
                files[tile_path(level, index)] = data
                built.full_tiles.append((level, index, data))
                value = tile_root(edge)
                edges[level] = []
                level += 1
        for level in sorted(touched):  # untouched levels keep their (already stored) partial tile
            if edges[level]:
                index = built.size >> (TILE_HEIGHT * (level + 1))
                files[tile_path(level, index, len(edges[level]))] = b"".join(edges[level])
        if built.bundle:
            index = built.size >> TILE_HEIGHT
            files[entries_path(index, len(built.bundle))] = encode_bundle(built.bundle)
        built.root = _root_from_edges(edges)
        return built


@dataclass(slots=True)
class _Batch:
    """The outcome of one append, computed before anything is written."""

    size: int
    root: bytes
    edges: list[list[bytes]]
    bundle: list[bytes]
    files: dict[str, bytes] = field(default_factory=dict)
    full_tiles: list[tuple[int | None, int, bytes]] = field(default_factory=list)
