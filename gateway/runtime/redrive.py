"""How ``gateway dlq redrive`` hands dead letters to the running gateway: request files in ``data_dir``.

A re-driven record must go through the gateway's own verify -> dedup -> deliver path (its inbox decides what
was already delivered; its sinks, breakers and receipts apply), and only one process may open a
``data_dir``'s databases (:mod:`gateway.runtime.lock`). So the command does not deliver anything itself: it
reads the dead-letter topic, selects the records, and — with ``--apply`` — writes a *request* into
``<data_dir>/redrive/`` (``<id>.request.json``: the dead letters' positions, nothing else; written to a
temporary name and renamed, mode 0600, so the gateway never reads half a file). The running gateway's
``redrive`` task (:class:`RedriveService`, supervised like every task) looks for requests every
``[dlq] redrive_poll_seconds``, reads those positions from its dead-letter topic, hands each original
record to the subscriber's loop (:meth:`gateway.bus.subscriber.Subscriber.redrive`, between two fetches)
and writes ``<id>.result.json``: per position ``delivered``, ``duplicate`` (already delivered: nothing is
sent twice), ``rejected`` (still fails verification: the reason code), ``failed`` (a sink refused it or is
still down) or ``gone`` (no such dead letter, or a bounded copy whose original has left its topic). The
command waits for that file and prints it.

When the gateway is not running, the request waits in the folder and runs once it starts: nothing else
ever opens its databases. The protocol's safety rests on ``data_dir`` being the gateway user's alone (0700):
whoever can write there can run the gateway anyway. Requests and results hold positions, codes and ids
only, never a record's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from gateway.bus.dlq import Selection, read_dead_letters, read_record
from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.subscriber import Subscriber
from gateway.errors import GatewayError, Reason

__all__ = ["REDRIVE_DIR", "RedriveService", "read_result", "submit_request"]

_log = structlog.get_logger(__name__)

REDRIVE_DIR: Final = "redrive"
_REQUEST: Final = ".request.json"
_RESULT: Final = ".result.json"
_MAX_POSITIONS: Final = 100_000
_CHUNK: Final = 500


def submit_request(data_dir: Path, positions: Sequence[tuple[int, int]]) -> str:
    """Queue a re-drive of the dead letters at ``positions`` (partition, offset); returns its id."""
    if not positions:
        raise GatewayError(Reason.CONFIG_INVALID, "nothing to re-drive")
    if len(positions) > _MAX_POSITIONS:
        raise GatewayError(Reason.CONFIG_INVALID, f"at most {_MAX_POSITIONS} dead letters per request")
    folder = data_dir / REDRIVE_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    request_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    document = {"id": request_id, "positions": [[p, o] for p, o in positions], "requested_at": time.time()}
    temporary = folder / f".{request_id}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(document))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(folder / f"{request_id}{_REQUEST}")
    return request_id


def read_result(data_dir: Path, request_id: str, *, remove: bool = True) -> dict[str, Any] | None:
    """The result of request ``request_id`` once the gateway has written it (None before)."""
    path = data_dir / REDRIVE_DIR / f"{request_id}{_RESULT}"
    try:
        document: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if remove:
        with contextlib.suppress(OSError):
            path.unlink()
    return document


class RedriveService:
    """The gateway's ``redrive`` task: runs the request files of :func:`submit_request` (module docstring)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        kafka: KafkaSettings,
        dlq_topic: str,
        subscriber: Subscriber,
        metrics: GatewayMetrics,
        poll_seconds: float = 1.0,
    ) -> None:
        self.folder = data_dir / REDRIVE_DIR
        self._kafka = kafka
        self._topic = dlq_topic
        self._subscriber = subscriber
        self._metrics = metrics
        self._poll = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: every poll, run the waiting requests in the order they were made."""
        while not stop.is_set():
            if self._subscriber.running:
                for request in await asyncio.to_thread(self._requests):
                    if stop.is_set():
                        break
                    await self._run_request(request)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll)

    def _requests(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{_REQUEST}"))

    async def _run_request(self, path: Path) -> None:
        try:
            document = orjson.loads(await asyncio.to_thread(path.read_bytes))
            request_id = str(document["id"])
            positions = {(int(p), int(o)) for p, o in document["positions"]}
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            _log.error("redrive request unreadable; set aside", file=path.name)
            await asyncio.to_thread(path.rename, path.with_suffix(".unreadable"))
            return
        _log.info("redrive request", request=request_id, dead_letters=len(positions))
        letters = await read_dead_letters(
            self._kafka, self._topic, select=Selection(positions=frozenset(positions))
        )
        found = {(letter.partition, letter.offset): letter for letter in letters}
        ordered = sorted(positions)
        outcomes: list[tuple[str, str]] = []
        # handed to the loop a chunk at a time, in dead-letter order: it takes a whole chunk between two
        # fetches (one at a time would cost a fetch wait each)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            outcomes += await asyncio.gather(*(self._redrive(found.get(position)) for position in chunk))
        results = []
        for position, outcome in zip(ordered, outcomes, strict=True):
            self._metrics.redriven.labels(result=outcome[0]).inc()
            results.append({"position": f"{position[0]}:{position[1]}", "result": outcome[0],
                            "detail": outcome[1]})  # fmt: skip
        result = {"id": request_id, "finished_at": time.time(), "results": results}
        await asyncio.to_thread(self._answer, path, request_id, orjson.dumps(result))
        counts: dict[str, int] = {}
        for row in results:
            counts[row["result"]] = counts.get(row["result"], 0) + 1
        _log.info("redrive request done", request=request_id, **counts)

    def _answer(self, request: Path, request_id: str, result: bytes) -> None:
        """Write the result (a temporary name, then renamed) and remove the request."""
        temporary = self.folder / f".{request_id}.result.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(result)
        temporary.rename(self.folder / f"{request_id}{_RESULT}")
        request.unlink()

    async def _redrive(self, letter: Any) -> tuple[str, str]:
        if letter is None:
            return "gone", "no dead letter at this position (purged, or past the retention)"
        try:
            record: Any = letter.original()
        except GatewayError:
            origin = letter.origin
            if origin is None:
                return "gone", "the dead letter has no origin headers"
            record = await read_record(self._kafka, *origin)  # a bounded copy: the original, if still there
            if record is None:
                return "gone", "a bounded copy whose original is no longer on its topic"
        result, detail = await self._subscriber.redrive(record)
        return result, detail
