"""The files of a log directory as the auditor reads them: one by one, tolerantly, trusting none of them.

:class:`~gateway.audit.tiles.TileLog` refuses to open a damaged log; an audit must instead say what is
damaged, and where, and go on. So :class:`LogReader` reads the ``state`` file, entry bundles and tiles on
its own (paths and formats: :mod:`gateway.audit.layout`) and reports every missing or malformed file as a
``tlog.corrupt`` finding through the auditor's ``find`` instead of raising (``docs/AUDIT.md`` section 14.1,
step 2). A partial bundle or tile may be gone once its full version exists (tlog-tiles allows deleting it);
the full one's prefix is read instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Protocol

from gateway.audit.layout import (
    STATE_FILE,
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_prefix,
    decode_state,
    entries_path,
    split_bundle,
    tile_hashes,
    tile_path,
    tile_root,
)
from gateway.audit.merkle import HASH_SIZE
from gateway.errors import Reason

_HASH: Final = HASH_SIZE


class Find(Protocol):
    """Records a finding (:meth:`gateway.audit.auditor.Auditor._find`)."""

    def __call__(self, reason: Reason, detail: str, **where: Any) -> None: ...


class LogReader:
    """The files of the log in ``directory``; each defect is reported through ``find``."""

    def __init__(self, directory: Path, find: Find) -> None:
        self._dir = directory
        self._find = find
        self._cached: tuple[int, list[bytes]] | None = None

    def entry(self, index: int, size: int) -> bytes | None:
        """Entry ``index`` of the tree of ``size`` entries read again, quietly (None if unreadable): the
        auditor re-reads the few leaves whose record differs, to name the fields that differ."""
        number = index // TILE_WIDTH
        if self._cached is None or self._cached[0] != number:
            width = min(TILE_WIDTH, size - number * TILE_WIDTH)
            data = self._read(entries_path(number, width))
            if data is None and width < TILE_WIDTH:
                full = self._read(entries_path(number))
                data = None if full is None else bundle_prefix(full, width)
            entries, exact = split_bundle(data or b"", width)
            self._cached = (number, entries if exact else [])
        entries = self._cached[1]
        position = index - number * TILE_WIDTH
        return entries[position] if position < len(entries) else None

    def state(self) -> tuple[int, bytes] | None:
        """``(size, root)`` of the ``state`` file, or None (a finding) when it is unreadable or malformed."""
        path = self._dir / STATE_FILE
        try:
            data = path.read_bytes()
        except OSError:
            self._find(Reason.TLOG_CORRUPT, "the log has no readable state file", source=str(path))
            return None
        state = decode_state(data)
        if state is None:
            self._find(Reason.TLOG_CORRUPT, "the state file is malformed", source=str(path))
        return state

    def _read(self, relative: str) -> bytes | None:
        try:
            return (self._dir / relative).read_bytes()
        except OSError:
            return None

    def bundle(self, index: int, width: int) -> list[bytes] | None:
        """The ``width`` entries of bundle ``index``, or None (a finding naming the first bad entry)."""
        relative = entries_path(index, width)
        data = self._read(relative)
        if data is None and width < TILE_WIDTH:  # a partial bundle may be gone once full (tlog-tiles)
            full = self._read(entries_path(index))
            if full is not None:
                relative, data = entries_path(index), bundle_prefix(full, width)
        if data is None:
            self._find(
                Reason.TLOG_CORRUPT,
                f"entry bundle {relative} is missing",
                leaf_index=index * TILE_WIDTH,
                source=relative,
            )
            return None
        entries, exact = split_bundle(data, width)
        if not exact:
            self._find(
                Reason.TLOG_CORRUPT,
                f"entry bundle {relative} does not hold exactly {width} length-prefixed entries",
                leaf_index=index * TILE_WIDTH + len(entries),
                source=relative,
            )
            return None
        return entries

    def tile(self, level: int, index: int, width: int) -> list[bytes] | None:
        """The ``width`` hashes of a tile, or None (a finding)."""
        relative = tile_path(level, index, width)
        data = self._read(relative)
        if data is None and width < TILE_WIDTH:  # same for a partial tile
            full = self._read(tile_path(level, index))
            if full is not None and len(full) == TILE_WIDTH * _HASH:
                relative, data = tile_path(level, index), full[: width * _HASH]
        if data is None or len(data) != width * _HASH:
            what = "missing" if data is None else f"{len(data)} bytes, not {width * _HASH}"
            self._find(Reason.TLOG_CORRUPT, f"tile {relative} is {what}", source=relative)
            return None
        return tile_hashes(data)

    def check_upper_tiles(self, size: int) -> None:
        """Each full tile of level L-1, hashed up, must equal its hash in the tile of level L."""
        level = 1
        while size >> (TILE_HEIGHT * level):
            count = size >> (TILE_HEIGHT * level)  # hashes at tile level `level`
            current: tuple[int, list[bytes] | None] = (-1, None)
            for j in range(count):
                below = self.tile(level - 1, j, TILE_WIDTH)
                parent_index = j // TILE_WIDTH
                if current[0] != parent_index:
                    width = TILE_WIDTH if parent_index < count // TILE_WIDTH else count % TILE_WIDTH
                    current = (parent_index, self.tile(level, parent_index, width))
                parent = current[1]
                if below is None or parent is None:
                    continue
                if tile_root(below) != parent[j % TILE_WIDTH]:
                    self._find(
                        Reason.TLOG_CORRUPT,
                        f"tile {tile_path(level - 1, j)} does not hash to its entry in level {level}",
                        leaf_index=j << (TILE_HEIGHT * level),
                        source=tile_path(level, parent_index),
                    )
            level += 1
