"""The built-in JSON Lines drop: ``*.jsonl`` files of ready-made events, one per line, for any agency system.

The folder mechanism (no half-written files, deterministic ids, quarantine, ``done/``, intake bounds) is
:class:`gateway.runtime.dropfolder.DropFolderSource`, shared with the agency adapters' drops (Kemensos CSV,
IOM HTCDS spreadsheets); this module only says how one file becomes numbered records: each line is
``{"type", "data", "recipients"?, "dataschema"?}``, read strictly, and line ``n`` of a file whose SHA-256 is
``h`` gets the event id ``uuid5(EVENT_ID_NAMESPACE, f"{h}:{n}")`` -- the same file dropped again, or read
again after a crash, publishes the same ids, which the outbox and every consumer deduplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import DropEvent, DropFile, DropFolderSource, DropRecord, DropRejection
from gateway.runtime.intake import IntakeBounds, read_bounded
from gateway.runtime.sources import PublishFn, QuarantineFn

__all__ = ["DROP_SUFFIX", "EVENT_ID_NAMESPACE", "FileDropSource", "drop_event_id"]

#: Namespace of deterministic file-drop event ids, derived as
#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:gateway:file-drop")``. Written out as a literal because
#: changing it would change every id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("65e84f46-c50c-579c-85e3-f33fb744a1fc")
#: Files in ``inbox/`` with this suffix (and not starting with ``.``) are ready to be processed.
DROP_SUFFIX: Final = ".jsonl"
_LINE_MEMBERS: Final = frozenset({"type", "data", "recipients", "dataschema"})


def drop_event_id(file_sha256: str, line_number: int) -> str:
    """The event id of line ``line_number`` (1-based) of a drop file whose SHA-256 hex digest is given."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{file_sha256}:{line_number}"))


class FileDropSource(DropFolderSource):
    """Publish every line of ``*.jsonl`` files dropped into ``directory/inbox/`` (see the module docstring).

    The drop folder is :class:`DropFolderSource`'s; quarantine reports hold one ``{"file", "line", "reason",
    "detail"}`` object per rejected line.

    Each line is ``{"type": ..., "data": {...}, "recipients": [...], "dataschema": ...}`` (``recipients``
    and ``dataschema`` optional, nothing else allowed). Blank lines are skipped but still counted, so line
    numbers match what an editor shows.
    """

    suffixes = (DROP_SUFFIX,)
    log_prefix = "file_drop"
    record_word = "line"

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "file-drop",
        poll_interval: float = 0.5,
        on_quarantine: QuarantineFn | None = None,
        max_line_bytes: int = 256 * 1024,
        bounds: IntakeBounds | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            directory, name=name, poll_interval=poll_interval, on_quarantine=on_quarantine, bounds=bounds,
            clock=clock,
        )  # fmt: skip
        if max_line_bytes <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes

    async def process_pending(self, publish: PublishFn, stop: asyncio.Event | None = None) -> int:
        """Process every file ready in ``inbox/`` once; return how many were completed (moved to ``done/``).

        Useful on its own for a one-shot import. Expects :meth:`ensure_directories` to have run.
        """
        return sum(result.done for result in await self._process_ready(publish, stop))

    async def process_file(self, path: Path, publish: PublishFn, stop: asyncio.Event | None = None) -> bool:
        """Publish or quarantine every line of ``path``, then move it to ``done/``; False if it must wait.

        See :meth:`DropFolderSource._process_path` for when a file is left where it is.
        """
        return (await self._process_path(path, publish, stop)).done

    def read_file(self, path: Path) -> DropFile:
        content = read_bounded(path, self.bounds.max_file_bytes)
        digest = hashlib.sha256(content).hexdigest()
        return DropFile(self._lines(content, digest), {"sha256": digest})

    def quarantine_record(self, file: str, number: int | None, rejection: DropRejection) -> dict[str, Any]:
        return {"file": file, "line": number, "reason": rejection.reason, "detail": rejection.detail}

    def _lines(self, content: bytes, digest: str) -> Iterator[DropRecord]:
        for number, raw in enumerate(_split_lines(content), start=1):
            if not raw.strip():
                continue
            event_id = drop_event_id(digest, number)
            record: DropEvent | DropRejection
            try:
                record = _parse_line(raw, self.max_line_bytes, event_id)
            except GatewayError as exc:
                record = DropRejection(str(exc.reason), exc.detail, event_id=event_id)
            yield number, record


def _parse_line(raw: bytes, max_line_bytes: int, event_id: str) -> DropEvent:
    """Parse one JSONL line strictly; ``GatewayError`` names what is wrong, never a value or unknown key."""
    if len(raw) > max_line_bytes:
        raise GatewayError(Reason.SIZE_EXCEEDED, f"line of {len(raw)} bytes exceeds {max_line_bytes}")
    record = parse_json(raw)
    if not isinstance(record, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "line is not a JSON object")
    unknown = set(record) - _LINE_MEMBERS
    if unknown:  # a typo such as "recipient" must not silently drop the recipients; names are not echoed
        raise GatewayError(
            Reason.SCHEMA_INVALID,
            f"line has {len(unknown)} unknown member(s); allowed: {', '.join(sorted(_LINE_MEMBERS))}",
        )
    event_type = record.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise GatewayError(Reason.SCHEMA_INVALID, "line has no 'type' string")
    data = record.get("data")
    if not isinstance(data, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "line has no 'data' object")
    recipients = record.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) and r for r in recipients):
        raise GatewayError(Reason.SCHEMA_INVALID, "'recipients' is not a list of party ids")
    dataschema = record.get("dataschema")
    if dataschema is not None and (not isinstance(dataschema, str) or not dataschema):
        raise GatewayError(Reason.SCHEMA_INVALID, "'dataschema' is not a string")
    return DropEvent(event_type, data, event_id, tuple(recipients), dataschema)


def _split_lines(content: bytes) -> Iterator[bytes]:
    """JSON Lines: ``\\n``-separated, a trailing ``\\r`` tolerated, a final newline optional; lazily (no
    list of every line: memory stays one line above the file)."""
    start, end = 0, len(content)
    while start < end:
        stop = content.find(b"\n", start)
        if stop < 0:
            stop = end
        yield content[start:stop].removesuffix(b"\r")
        start = stop + 1
