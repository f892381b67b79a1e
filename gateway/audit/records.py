"""Records dumps: the Kafka records of the exchange topics as a file, for an audit without a broker.

``gateway audit export-records`` writes one (read from Kafka by
:func:`gateway.audit.kafka_records.read_kafka_records`) and ``gateway audit verify --records FILE`` checks
the log against it. The format (``docs/AUDIT.md`` section 12) is JSON Lines, one record per line, as
:meth:`gateway.audit.leaf.ConsumedRecord.to_json` gives it: topic, partition, offset, timestamp and its type,
key, value and headers (base64, headers in record order). Blank lines are ignored.

A dump holds the records' data bytes — sealed ciphertext and clear fields — and is as sensitive as the
topics themselves: it is created readable by its owner only (0600).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import orjson

from gateway.audit.leaf import ConsumedRecord, RecordLike
from gateway.contract.policy import REGISTRY_TOPIC
from gateway.errors import GatewayError, Reason

__all__ = [
    "RecordsDumpWriter",
    "dump_lines",
    "parse_dump_line",
    "read_records_dump",
    "registry_records",
    "write_records_dump",
]


class RecordsDumpWriter:
    """A records dump written one record at a time (a consumer's callback: :meth:`write`); :attr:`count`
    records so far. Use it as a context manager; the file is created (or truncated) with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        # builtin open: Path.open takes no opener; closed by close() / the with block
        self._handle = open(path, "wb", opener=lambda name, flags: os.open(name, flags, 0o600))  # noqa: SIM115
        os.fchmod(self._handle.fileno(), 0o600)  # an existing file keeps its mode otherwise

    def write(self, record: RecordLike) -> None:
        self._handle.write(orjson.dumps(ConsumedRecord.of(record).to_json()) + b"\n")
        self.count += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordsDumpWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_records_dump(path: Path, records: Iterable[RecordLike]) -> int:
    """Write ``records`` as a records dump; returns how many were written."""
    with RecordsDumpWriter(path) as dump:
        for record in records:
            dump.write(record)
    return dump.count


def read_records_dump(path: Path) -> Iterable[ConsumedRecord]:
    """Stream the records of a dump file (blank lines ignored)."""
    for number, line in dump_lines(path):
        yield parse_dump_line(str(path), number, line)


def registry_records(path: Path) -> Iterator[ConsumedRecord]:
    """The records of the registry topic in a dump (the auditor needs them before the others): only the
    lines that name the topic are parsed."""
    marker = f'"{REGISTRY_TOPIC}"'.encode("ascii")
    for number, line in dump_lines(path):
        if marker in line:
            record = parse_dump_line(str(path), number, line)
            if record.topic == REGISTRY_TOPIC:
                yield record


def dump_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a dump file, numbered from 1, unparsed (worker processes parse them:
    :func:`parse_dump_line`)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line


def parse_dump_line(path: str, number: int, line: bytes) -> ConsumedRecord:
    """One dump line's record; ``GatewayError(CONFIG_INVALID)`` naming the line if it is not JSON."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"{path}:{number}: not JSON") from exc
    return ConsumedRecord.from_json(document)
