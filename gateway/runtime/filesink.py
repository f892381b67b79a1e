"""The file sink: one JSON file per verified event, written atomically into a folder, for agencies without
an API (``[[sinks]] kind = "file"``).

Each event becomes ``<directory>/<source>--<digest>.json`` where ``<digest>`` is the first 32 hex digits of
the SHA-256 of ``<source>/<id>``: the same event always lands under the same name (a redelivery replaces
the file with identical content, so the agency sees it once), and no id a peer chose can name a path (ids
may hold any printable character, ``/`` and ``..`` included). The file is the webhook sink's body document
(``{"event": {id, source, type, subject, time, dataschema, dataclassification}, "payload": ...}``,
RFC 8785 canonical JSON) and is written with :func:`gateway.runtime.dropfolder.write_atomically`: a temporary
file (mode 0600), fsync, rename, fsync of the folder, so an agency's reader sees a whole file or none.
Readers take ``*.json`` only (temporary files start with ``.``) and move or delete what they have filed.

``formulas`` as for the webhook sinks (``flag``: the JSON Pointers of formula-like values are listed under
``"formula_cells"``; ``neutralise``: those values are also prefixed with ``'``). A write that fails (disk
full, folder removed) is a retryable :class:`~gateway.bus.delivery.SinkError`, naming the exception type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.bus.delivery import SinkError
from gateway.contract.canonical import canonical_json
from gateway.contract.formulas import neutralise
from gateway.contract.verify import Accepted
from gateway.runtime.dropfolder import write_atomically
from gateway.runtime.webhook import FormulaMode, event_summary

__all__ = ["FileSink", "file_name"]

_log = structlog.get_logger(__name__)

_DIR_MODE: Final = 0o700
_SAFE: Final = re.compile(r"[^a-z0-9.-]")


def file_name(source: str, event_id: str) -> str:
    """The file an event is written to: stable per ``(source, id)``, never a path a peer could choose."""
    digest = hashlib.sha256(f"{source}/{event_id}".encode()).hexdigest()[:32]
    return f"{_SAFE.sub('_', source.lower())[:64]}--{digest}.json"


class FileSink:
    """Write each event as one JSON file in ``directory`` (created 0700 on first use if absent)."""

    def __init__(self, directory: Path, *, name: str = "file", formulas: FormulaMode = "flag") -> None:
        self.name = name
        self.directory = Path(directory)
        self.formulas = formulas

    async def deliver(self, accepted: Accepted) -> None:
        cells = accepted.formula_cells
        if cells and self.formulas == "neutralise":
            data = {k: (v if k == "sealed" else neutralise(v)) for k, v in accepted.data.items()}
            unsealed = neutralise(accepted.unsealed) if accepted.unsealed is not None else None
            accepted = dataclasses.replace(accepted, data=data, unsealed=unsealed)
        document: dict[str, Any] = {"event": event_summary(accepted), "payload": accepted.payload()}
        if cells:
            document["formula_cells"] = sorted(cells)
        target = self.directory / file_name(accepted.event.source, accepted.event.id)
        try:
            await asyncio.to_thread(self._write, target, canonical_json(document))
        except OSError as exc:
            raise SinkError(f"sink {self.name}: cannot write ({type(exc).__name__})", retryable=True) from exc
        _log.debug(
            "file_sink.written", sink=self.name, event_id=accepted.event.id, source=accepted.event.source
        )

    def _write(self, target: Path, content: bytes) -> None:
        if not self.directory.is_dir():  # created on first use, so building the sink has no side effect
            self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        write_atomically(target, content)

    async def close(self) -> None:
        return None
