"""Every file under ``tile/`` accounted for: a path of the tree, or a leftover consistent with it.

The scan (:mod:`gateway.audit.auditor`, :mod:`gateway.audit._log_reader`) reads the files the tree of the
log's size needs: full tiles and bundles and the right edge. A tlog-tiles client may read others: the
partial tiles of earlier sizes, which the notary keeps until the full tile exists (a client checking a
signed historical checkpoint needs them), and anything else a web server serving ``tile/`` hands out. So,
after the scan, :func:`check_tile_files` walks ``tile/`` and requires of each file (``docs/AUDIT.md``
section 14.1, step 2b):

* a canonical tlog-tiles path (``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]``), else
  ``log.stray-file`` (a misnamed tile, a temporary file, anything else);
* for leaves the tree has: a tile or bundle ending after the tree's size is ``log.beyond-tree``;
* a partial tile or bundle other than the tree's right edge (a *leftover* of an earlier size, documented in
  section 3: kept until superseded) must be a prefix of the tree's own tile or bundle of that index, byte for
  byte, else ``log.leftover-mismatch``;

and, for every signed checkpoint size the log reproduces, that the partial tiles a tlog-tiles client needs to
recompute that checkpoint's root are there (or the full tile that superseded them): else ``log.tile-missing``.
A file listed in ``pending`` (a batch the writer did not finish) is named so in the finding's detail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from gateway.audit._log_reader import Find
from gateway.audit.layout import (
    PENDING_FILE,
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_prefix,
    entries_path,
    parse_tile_path,
    split_bundle,
    tile_end,
    tile_path,
)
from gateway.audit.merkle import HASH_SIZE
from gateway.errors import Reason

__all__ = ["check_tile_files"]

_TILES: Final = "tile"


def _edge_width(size: int, level: int | None, index: int) -> int:
    """The width of tile ``index`` of ``level`` in the tree of ``size`` leaves (0: it has none)."""
    hashes = size >> (TILE_HEIGHT * (level or 0))
    if index < hashes // TILE_WIDTH:
        return TILE_WIDTH
    return hashes % TILE_WIDTH if index == hashes // TILE_WIDTH else 0


def _path(level: int | None, index: int, width: int = TILE_WIDTH) -> str:
    return entries_path(index, width) if level is None else tile_path(level, index, width)


def _pending(directory: Path) -> set[str]:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return set((directory / PENDING_FILE).read_text(encoding="utf-8").splitlines())
    return set()


def check_tile_files(directory: Path, size: int, signed_sizes: Iterable[int], find: Find) -> None:
    """Check every file under ``directory/tile`` against the tree of ``size`` leaves, and the tiles each of
    ``signed_sizes`` (reproduced signed checkpoints) needs; defects go to ``find``."""
    root = directory / _TILES
    pending = _pending(directory)
    present: set[str] = set()
    for path in sorted(root.rglob("*")) if root.is_dir() else ():
        if path.is_dir():
            continue
        relative = path.relative_to(directory).as_posix()
        present.add(relative)
        note = (
            " (listed in pending: written by an unfinished batch, which the notary deletes when it next "
            "opens the log)"
            if relative in pending
            else ""
        )
        parsed = parse_tile_path(relative) if path.is_file() else None
        if parsed is None:
            find(
                Reason.LOG_STRAY_FILE,
                f"{relative} is not a tlog-tiles path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>], "
                f"<N> in 3-digit groups): a misnamed or foreign file{note}",
                source=relative,
            )
            continue
        level, index, width = parsed
        end = tile_end(level, index, width)
        if end > size:
            find(
                Reason.LOG_BEYOND_TREE,
                f"{relative} holds data for leaves up to {end}, but the tree has {size}: content no "
                f"checkpoint or state vouches for{note}",
                leaf_index=size,
                source=relative,
            )
            continue
        edge = _edge_width(size, level, index)
        if width in (TILE_WIDTH, edge):
            continue  # a file of the tree itself: the scan read and checked it
        _check_leftover(directory, relative, parsed, edge, find)
    for signed in sorted(set(signed_sizes)):
        if 0 < signed <= size:
            _check_needed(signed, size, present, find)


def _check_leftover(
    directory: Path, relative: str, shape: tuple[int | None, int, int], edge: int, find: Find
) -> None:
    """A partial tile or bundle of an earlier size: a prefix of the tree's own file of that index (the full
    one, or the right edge of width ``edge``). ``shape`` is its (level, index, width)."""
    level, index, width = shape
    own = _path(level, index, edge)
    try:
        reference = (directory / own).read_bytes()
    except OSError:
        return  # the tree's own file is missing: the scan reported it
    try:
        data: bytes | None = (directory / relative).read_bytes()
    except OSError:
        data = None
    if data is None:
        consistent = False
    elif level is None:
        consistent = split_bundle(data, width)[1] and data == bundle_prefix(reference, width)
    else:
        consistent = len(data) == width * HASH_SIZE and reference.startswith(data)
    if not consistent:
        find(
            Reason.LOG_LEFTOVER_MISMATCH,
            f"{relative} (the tree as it was at size {tile_end(level, index, width)}) is not a prefix of the "
            f"tree's {own}: a tlog-tiles client checking an earlier checkpoint would read other data than "
            "the log holds",
            leaf_index=(index * TILE_WIDTH) << (TILE_HEIGHT * (level or 0)),
            source=relative,
        )


def _check_needed(signed: int, size: int, present: set[str], find: Find) -> None:
    """The right-edge partial tiles of the tree of ``signed`` leaves (or the full tiles that superseded
    them): what a tlog-tiles client reads to recompute that checkpoint's root."""
    level = 0
    while signed >> (TILE_HEIGHT * level):
        width = (signed >> (TILE_HEIGHT * level)) % TILE_WIDTH
        index = signed >> (TILE_HEIGHT * (level + 1))
        if width and width != _edge_width(size, level, index):  # the tree's own edge: the scan's business
            partial, full = tile_path(level, index, width), tile_path(level, index)
            if partial not in present and full not in present:
                find(
                    Reason.LOG_TILE_MISSING,
                    f"{partial} is gone and {full} does not exist: a tlog-tiles client cannot recompute the "
                    f"root of the signed checkpoint of size {signed}",
                    checkpoint_size=signed,
                    source=partial,
                )
        level += 1
