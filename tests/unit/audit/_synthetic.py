"""A small synthetic notary run without a broker: signed events as Kafka records, their leaves in a tile log,
signed checkpoints in the notary's layout, and a records dump — the raw material of the tamper campaign.

Everything is computed with the same functions the notary uses (``leaf_for_record``, ``TileLog``,
``CheckpointStore``), so the untouched run must verify with zero findings and every tampering is a
deliberate change to exactly one thing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from gateway.audit.checkpoint import Checkpoint, deployment_origin
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY
from gateway.audit.leaf import ConsumedRecord, leaf_for_record
from gateway.audit.notary import CheckpointStore
from gateway.audit.note import Ed25519Signer, sign_note
from gateway.audit.records import write_records_dump
from gateway.audit.tiles import TileLog
from gateway.contract.keys import SigningKey
from gateway.contract.policy import event_topic
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from tests.world import World, example

KBRI = "kemlu.kbri-kuching"
ORIGIN = deployment_origin("unit")
SIZES = (0, 50, 100, 256, 300)
"""Checkpoint sizes: the empty tree, a few inside the first tile, a full tile, and a partial second one."""


@dataclass
class Run:
    world: World
    registry_file: Path
    records: list[ConsumedRecord]
    entries: list[bytes]
    signer: Ed25519Signer
    log_dir: Path
    records_file: Path
    key: SigningKey

    @property
    def vkey(self) -> str:
        return str(self.signer.verifier().vkey())

    def verifier(self) -> EventVerifier:
        return EventVerifier(registry=self.world.registry, schemas=self.world.schemas)


def _events(world: World) -> list[tuple[str, bytes, bytes, tuple[tuple[str, bytes | None], ...]]]:
    """(topic, key, value, headers) of a handful of signed events by three parties."""
    schemas: SchemaStore = world.schemas
    made = [
        world.event(
            "id.trafficking.case.referral",
            example("case.referral", "1.0")[0][1],
            by=KBRI,
            recipients=["kemensos"],
        ),
        world.event(
            "id.trafficking.case.shelter-admission",
            example("case.shelter-admission", "1.0")[0][1],
            by="kemensos",
            recipients=[KBRI],
        ),
        world.event("id.trafficking.alert.supply", example("alert.supply", "1.0")[0][1], by="iom"),
    ]
    result = []
    for event in made:
        record = event.to_kafka()
        topic = event_topic(event.source, schemas.get(event.dataschema))
        result.append((topic, record.key, record.value, tuple(record.headers)))
    return result


def make_records(world: World, count: int = 300) -> list[ConsumedRecord]:
    """``count`` records on a few topics and two partitions each: signed events (re-published copies),
    junk a gateway would reject, a tombstone, and a dead-lettered copy with the DLQ headers."""
    events = _events(world)
    now = int(time.time() * 1000)
    offsets: dict[tuple[str, int], int] = {}
    records: list[ConsumedRecord] = []
    for i in range(count):
        topic, key, value, headers = events[i % len(events)]
        value_: bytes | None = value
        if i % 17 == 5:
            value_ = b'{"not":"signed"}'
        elif i % 53 == 7:
            value_ = None
        elif i % 41 == 11:
            origin = (topic, 0, offsets.get((topic, 0), 0))
            headers = (
                *headers,
                ("xchg-reason", b"seal.open-failed"),
                ("xchg-detail", b"free text"),
                ("xchg-origin-topic", origin[0].encode()),
                ("xchg-origin-partition", b"0"),
                ("xchg-origin-offset", str(origin[2]).encode()),
                ("xchg-dead-lettered-by", b"kemensos"),
                ("xchg-dead-lettered-at", b"2026-01-01T00:00:00Z"),
            )
            topic = "xchg.kemensos.dlq.v1"
        partition = i % 2
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        records.append(
            ConsumedRecord(
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp=now + i,
                key=key,
                value=value_,
                headers=headers,
            )
        )
    return records


def write_log(
    directory: Path, entries: Sequence[bytes], signer: Ed25519Signer, sizes: Sequence[int] = SIZES
) -> None:
    """A tile log of ``entries`` and a checkpoint signed at every size in ``sizes`` (notary layout)."""
    store = CheckpointStore(directory, origin=ORIGIN, verifiers=[signer.verifier()], durable=False)
    with TileLog.open(directory, durable=False) as log:
        for size in sorted(sizes):
            if size > log.size:
                log.append(entries[log.size : size])
            note = sign_note(Checkpoint(ORIGIN, size, log.root_at(size)).to_note_body(), [signer])
            store.save(note, size)
        if log.size < len(entries):
            log.append(entries[log.size :])


def build_run(root: Path, count: int = 300) -> Run:
    world = World.build()
    registry_file = root / "registry.toml"
    registry_file.write_bytes(tomli_w.dumps(dict(world.document)).encode("utf-8"))
    records = make_records(world, count)
    verifier = EventVerifier(registry=world.registry, schemas=world.schemas)
    entries = [leaf_for_record(record, verifier).encode() for record in records]
    key = SigningKey.generate()
    signer = Ed25519Signer(ORIGIN, key)
    log_dir = root / "log"
    write_log(log_dir, entries, signer, [size for size in SIZES if size <= count])
    records_file = root / "records.jsonl"
    write_records_dump(records_file, records)
    return Run(world, registry_file, records, entries, signer, log_dir, records_file, key)


def copy_checkpoints(source: Path, target: Path) -> None:
    """Give a rebuilt log the original's signed checkpoints (what a log rewriter cannot re-sign... or can)."""
    shutil.copytree(source / CHECKPOINT_HISTORY, target / CHECKPOINT_HISTORY, dirs_exist_ok=True)
    shutil.copy2(source / CHECKPOINT_FILE, target / CHECKPOINT_FILE)


def rebuilt_log(run: Run, target: Path, entries: Sequence[bytes]) -> Path:
    """A consistent tile log (tiles, state) holding ``entries``, with the ORIGINAL signed checkpoints: the
    log as a capable attacker with disk access but without the notary's key would leave it."""
    with TileLog.open(target, durable=False) as log:
        if entries:
            log.append(entries)
    copy_checkpoints(run.log_dir, target)
    return target
