"""Where everything lives in a log directory, and the byte formats of its files: coded once, here.

Both sides of the log read this module: the writer (:mod:`gateway.audit.tiles`, the notary's checkpoint
store) and the offline auditor (:mod:`gateway.audit.auditor`), which reads the same files on its own,
tolerantly, so that a damaged log is a finding rather than a crash. In the spirit of Tessera's
``api/layout`` package; the formats are those of ``docs/AUDIT.md`` sections 3 and 11.3:

* ``tile/<L>/<N>[.p/<W>]`` — tiles of 32-byte hashes (C2SP tlog-tiles): :func:`tile_path`;
* ``tile/entries/<N>[.p/<W>]`` — entry bundles, each entry ``uint16_be(len) || entry``: :func:`entries_path`,
  :func:`encode_bundle`, :func:`split_bundle`, :func:`bundle_prefix`;
* ``state`` — ``xchg-tlog-state/v1\\n<size>\\n<base64 root>\\n``, the committed tree: :func:`encode_state`,
  :func:`decode_state`;
* ``pending``, ``lock`` — the writer's journal and lock (:mod:`gateway.audit.tiles`);
* ``checkpoint`` and ``checkpoints/<size>`` — the notary's signed checkpoints: :func:`checkpoint_path`,
  :func:`checkpoint_size`.

``<N>`` is written in 3-digit groups, all but the last prefixed with ``x`` (``1234067`` ->
``x001/x234/067``). The hash a tile level stores for an aligned run of ``2**k`` hashes of the level below is
their Merkle root (:func:`tile_root`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Final

from gateway.audit.merkle import HASH_SIZE
from gateway.audit.note import decode_base64
from gateway.errors import GatewayError, Reason

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_HISTORY",
    "LOCK_FILE",
    "MAX_ENTRY_SIZE",
    "PENDING_FILE",
    "STATE_FILE",
    "STATE_FORMAT",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "bundle_prefix",
    "checkpoint_path",
    "checkpoint_size",
    "decode_state",
    "encode_bundle",
    "encode_state",
    "entries_path",
    "parse_tile_path",
    "split_bundle",
    "tile_end",
    "tile_hashes",
    "tile_path",
    "tile_root",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
#: Entry bundles length-prefix entries with a big-endian uint16.
MAX_ENTRY_SIZE: Final = 0xFFFF

#: The committed tree (not part of tlog-tiles).
STATE_FILE: Final = "state"
STATE_FORMAT: Final = "xchg-tlog-state/v1"
#: Present only while a batch is written: the ``tile/...`` paths it creates, one per line.
PENDING_FILE: Final = "pending"
#: ``flock``-ed by the single writer.
LOCK_FILE: Final = "lock"
#: The latest signed checkpoint, at the tlog-tiles location (``<prefix>/checkpoint``).
CHECKPOINT_FILE: Final = "checkpoint"
#: Every checkpoint ever signed: ``checkpoints/<size>`` (decimal), cosignatures attached as they arrive.
CHECKPOINT_HISTORY: Final = "checkpoints"

_DECIMAL: Final = re.compile(r"0|[1-9][0-9]*")
_PATH: Final = re.compile(
    r"^tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?$"
)


# ---- paths -----------------------------------------------------------------------------------------------


def _index_path(index: int) -> str:
    """``1234067`` -> ``x001/x234/067``: 3-digit groups, all but the last prefixed with ``x``."""
    if index < 0:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"negative tile index {index}")
    groups: list[int] = []
    while True:
        index, group = divmod(index, 1000)
        groups.append(group)
        if index == 0:
            break
    groups.reverse()
    return "/".join([*(f"x{g:03d}" for g in groups[:-1]), f"{groups[-1]:03d}"])


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"tile width {width} outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """The tlog-tiles path of a Merkle tile, relative to the log prefix (``tile/0/x001/234``)."""
    if not 0 <= level <= 63:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"tile level {level} outside 0..63")
    return f"tile/{level}/{_index_path(index)}{_suffix(width)}"


def tile_end(level: int | None, index: int, width: int) -> int:
    """One past the last leaf a tile of this shape covers (level ``None``: an entry bundle, as level 0)."""
    return (index * TILE_WIDTH + width) << (TILE_HEIGHT * (level or 0))


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """The tlog-tiles path of an entry bundle (``tile/entries/000.p/7``)."""
    return f"tile/entries/{_index_path(index)}{_suffix(width)}"


def parse_tile_path(path: str) -> tuple[int | None, int, int] | None:
    """``(level, index, width)`` of a canonical tile path (level ``None`` = entry bundle), else ``None``."""
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    kind, digits, width_text = match.groups()
    index = int(digits.replace("x", "").replace("/", ""))
    width = int(width_text) if width_text else TILE_WIDTH
    level = None if kind == "entries" else int(kind)
    if (width_text and width >= TILE_WIDTH) or (level is not None and level > 63):
        return None
    canonical = entries_path(index, width) if level is None else tile_path(level, index, width)
    return (level, index, width) if canonical == path else None


def checkpoint_path(size: int) -> str:
    """The history file of the checkpoint of ``size`` (``checkpoints/<size>``), relative to the log."""
    return f"{CHECKPOINT_HISTORY}/{size}"


def checkpoint_size(name: str) -> int | None:
    """The size a file name in ``checkpoints/`` stands for; ``None`` for anything but canonical decimal
    (a crash may leave a torn ``<size>.tmp`` that was never a checkpoint)."""
    return int(name) if _DECIMAL.fullmatch(name) else None


# ---- tiles -----------------------------------------------------------------------------------------------


def tile_hashes(data: bytes) -> list[bytes]:
    """The 32-byte hashes of a tile's bytes, in order."""
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def tile_root(hashes: Sequence[bytes]) -> bytes:
    """The Merkle root of a power-of-two run of hashes of one tile level: what a full tile (or an aligned
    part of one) stands for at the level above, and a peak of the tree on the right edge."""
    sha256 = hashlib.sha256  # merkle.node_hash, inlined: ~1 call per appended entry
    level = list(hashes)
    while len(level) > 1:
        level = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


# ---- entry bundles ---------------------------------------------------------------------------------------


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """A bundle: each entry as ``uint16_be(len) || entry`` (entries of at most :data:`MAX_ENTRY_SIZE`)."""
    return b"".join(len(entry).to_bytes(2, "big") + entry for entry in entries)


def split_bundle(data: bytes, count: int) -> tuple[list[bytes], bool]:
    """The first (at most ``count``) entries of a bundle, and whether it holds exactly ``count`` entries
    and nothing else. The entries before a defect are returned, so a reader can say where it is."""
    entries: list[bytes] = []
    offset = 0
    while offset + 2 <= len(data) and len(entries) < count:
        length = int.from_bytes(data[offset : offset + 2], "big")
        if offset + 2 + length > len(data):
            break
        entries.append(data[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return entries, len(entries) == count and offset == len(data)


def bundle_prefix(data: bytes, count: int) -> bytes:
    """The bytes of the first ``count`` entries of a bundle (all of it if shorter): the partial bundle a full
    one superseded (tlog-tiles lets a writer delete partial tiles and bundles once they are full)."""
    offset = 0
    for _ in range(count):
        if offset + 2 > len(data):
            break
        offset += 2 + int.from_bytes(data[offset : offset + 2], "big")
    return data[:offset]


# ---- the state file --------------------------------------------------------------------------------------


def encode_state(size: int, root: bytes) -> bytes:
    """The ``state`` file: format line, tree size, base64 root, each followed by a newline."""
    return f"{STATE_FORMAT}\n{size}\n{base64.b64encode(root).decode('ascii')}\n".encode("ascii")


def decode_state(data: bytes) -> tuple[int, bytes] | None:
    """``(size, root)`` of a ``state`` file; ``None`` unless it is exactly :func:`encode_state`'s form
    (canonical decimal size, canonical base64 of a 32-byte root)."""
    lines = data.split(b"\n")
    if len(lines) != 4 or lines[0] != STATE_FORMAT.encode("ascii") or lines[3] != b"":
        return None
    size_text = lines[1].decode("ascii", "replace")
    root = decode_base64(lines[2].decode("ascii", "replace"))
    if not _DECIMAL.fullmatch(size_text) or root is None or len(root) != HASH_SIZE:
        return None
    return int(size_text), root
