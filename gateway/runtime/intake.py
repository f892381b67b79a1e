"""Bounds on file intake, shared by every drop folder: size, record count, "has it stopped changing", names.

Why: one file must never stop a source or the process. A 1 GiB CSV (or one of NUL bytes) drove a gateway to
7 GB of memory with its health endpoint unanswered, and a file written in place (no temporary name and
rename) was read half-written and moved to ``done/`` while its writer went on. So every drop folder
(:mod:`gateway.runtime.dropfolder`) applies :class:`IntakeBounds`:

* ``max_file_bytes``: a larger file is not read at all; it is quarantined whole (``size.exceeded``) and
  moved to ``done/``;
* ``max_records``: records (lines, rows) beyond it are not read; the file gets one ``size.exceeded``
  quarantine entry saying so (split the export), the records before it are processed as usual;
* ``settle_seconds``: a file is read only once its size and modification time have not changed for that
  long (:class:`FileWatch`), and it is moved to ``done/`` only if they did not change while it was read
  (else it stays in ``inbox/`` and is read again once settled), so a file being written is never read and
  never moved away from its writer;
* ``ready_marker``: when true, a file is read only once a companion ``<name>.ready`` exists (removed when the
  file is done), for export jobs that can write a marker but not rename.

Records are parsed in a worker thread, a chunk at a time, so memory stays bounded by the file size limit
plus a chunk and the event loop (health endpoints, the consumer) keeps running.

File names are never logged or reported in clear (they may carry a person's name: ``rujukan_Dewi.csv``):
:func:`file_ref` is what logs and quarantine reports show, ``<sha-256 prefix of the name><suffix>``; an
operator finds the file with ``gateway``-independent tools (``printf %s NAME | sha256sum``), and the
quarantine report itself is named after the file in ``quarantine/``, beside it on the same disk.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = [
    "BOUND_OPTIONS",
    "MARKER_SUFFIX",
    "FileWatch",
    "IntakeBounds",
    "file_ref",
    "read_bounded",
]

#: The companion marker of ``<name>`` is ``<name>.ready`` (when ``ready_marker`` is on).
MARKER_SUFFIX: Final = ".ready"
#: Option names every drop-folder source accepts in its ``[[sources]]`` table.
BOUND_OPTIONS: Final = ("max_file_bytes", "max_records", "settle_seconds", "ready_marker")


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeBounds:
    """Limits on one drop folder's files (see the module docstring)."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_records: int = 100_000
    settle_seconds: float = 1.0
    ready_marker: bool = False

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1 or self.max_records < 1 or self.settle_seconds < 0:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                "intake bounds: max_file_bytes and max_records must be positive, settle_seconds >= 0",
            )

    @classmethod
    def from_options(cls, options: Table, *, max_file_bytes: int | None = None) -> IntakeBounds:
        """Read :data:`BOUND_OPTIONS` from a source's option table (errors name the key)."""
        default = cls()
        return cls(
            max_file_bytes=options.integer(
                "max_file_bytes", max_file_bytes or default.max_file_bytes, low=1, high=2**40
            ),
            max_records=options.integer("max_records", default.max_records, low=1, high=10**9),
            settle_seconds=options.number("settle_seconds", default.settle_seconds, low=0.0, high=3600.0),
            ready_marker=options.boolean("ready_marker", default.ready_marker),
        )


def file_ref(name: str) -> str:
    """How logs and quarantine reports name a drop file: a digest of its name, and its suffix.

    ``file-<first 12 hex digits of SHA-256(name)><suffix>``: stable, distinct per name, and free of
    whatever the name says (a person's name, a place).
    """
    suffix = os.path.splitext(name)[1].lower()
    if not suffix[1:].isalnum() or len(suffix) > 8:
        suffix = ""
    return f"file-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}{suffix}"


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, reading at most ``max_bytes + 1``: a file that grew past the limit after it was
    listed is ``size.exceeded``, not a surprise allocation."""
    with path.open("rb") as handle:
        content = handle.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise GatewayError(Reason.SIZE_EXCEEDED, f"file exceeds max_file_bytes ({max_bytes})")
    return content


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


class FileWatch:
    """Which listed files have stopped changing: same size and modification time for ``settle_seconds``.

    :meth:`observe` is called with every listing (name -> ``os.stat_result``); a file is ready once it was
    seen unchanged for ``settle_seconds`` by ``clock`` (monotonic). With 0 every file is ready at once.
    """

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def observe(self, listing: dict[str, Any]) -> set[str]:
        """Record a listing (name -> stat result); return the names that are ready."""
        now = self._clock()
        ready = set()
        seen: dict[str, _Seen] = {}
        for name, stat in listing.items():
            previous = self._seen.get(name)
            if previous is None or (previous.size, previous.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                previous = _Seen(stat.st_size, stat.st_mtime_ns, now)
            seen[name] = previous
            if now - previous.since >= self.settle_seconds:
                ready.add(name)
        self._seen = seen  # names no longer listed are forgotten
        return ready

    def unchanged(self, name: str, stat: Any) -> bool:
        """Whether ``stat`` still matches what :meth:`observe` last saw of ``name``."""
        previous = self._seen.get(name)
        return previous is not None and (previous.size, previous.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
