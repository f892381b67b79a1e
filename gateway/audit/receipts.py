"""Receipts from a copy of the log: for one event (``gateway audit prove EVENT_ID``) and for every event of a
case (``gateway audit prove --case CASE_ID``).

A receipt is a c2sp.org/tlog-proof@v1 inclusion proof of one leaf against a signed checkpoint
(:mod:`gateway.audit.proof`), with the leaf itself in its ``extra`` line; ``gateway audit check-receipt``
verifies it offline. The log's leaves hold no case id (the record key is personal-data adjacent and never
logged, ``docs/AUDIT.md`` section 10), so a case is found through the auditor's own records — a records dump
or the broker — where the record key (the CloudEvents ``partitionkey``) *is* the case id. Every record of the
case gets the receipt of the leaf at its (topic, partition, offset), and the record is compared with the leaf
(its record digest binds key, headers and value). A record of the case without a leaf in the signed tree is
listed as such, never silently left out.

The case's proofs (:class:`CaseProofs`) are written as a folder: ``case.json`` (format
``xchg-case-proofs/v1``) lists per event its identity, position, the notary's verdict and the file of its
*publication* receipt (``NNN.publication.tlog-proof``); each event also carries a ``delivery`` list, empty
for now, where the recipients' signed delivery receipts and their own inclusion receipts go once the
delivery-receipt issue lands — a proof of receipt next to the proof of publication, same folder, same
manifest. Nothing in it is personal data: ids, types, times, positions, digests, verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, checkpoint_size
from gateway.audit.leaf import Leaf, RecordLike, record_sha256
from gateway.audit.note import Note, NoteVerifier
from gateway.audit.proof import create_proof, verify_proof
from gateway.audit.report import iso_time
from gateway.audit.tiles import TileLog
from gateway.errors import GatewayError, Reason

__all__ = [
    "CASE_PROOFS_FORMAT",
    "CaseEvent",
    "CaseProofs",
    "case_proofs",
    "event_receipt",
    "latest_checkpoint",
]

CASE_PROOFS_FORMAT: Final = "xchg-case-proofs/v1"
_MANIFEST: Final = "case.json"


def latest_checkpoint(directory: Path, verifiers: Sequence[NoteVerifier] = ()) -> tuple[bytes, Checkpoint]:
    """The largest signed checkpoint of a log directory (``checkpoint`` and ``checkpoints/<size>``); with
    ``verifiers`` only notes that verify with them (and their origin) count."""
    candidates = [directory / CHECKPOINT_FILE]
    history = directory / CHECKPOINT_HISTORY
    if history.is_dir():
        candidates += [p for p in history.iterdir() if checkpoint_size(p.name) is not None]
    best: tuple[bytes, Checkpoint] | None = None
    for path in candidates:
        try:
            note = path.read_bytes()
            if verifiers:
                checkpoint = open_checkpoint(note, origin=verifiers[0].name, verifiers=verifiers).checkpoint
            else:
                checkpoint = Checkpoint.parse(Note.parse(note).text)
        except (OSError, GatewayError, UnicodeDecodeError):
            continue
        if best is None or checkpoint.size > best[1].size:
            best = (note, checkpoint)
    if best is None:
        raise GatewayError(Reason.NOTE_UNVERIFIED, f"{directory}: no signed checkpoint")
    return best


def event_receipt(directory: Path, event_id: str, source: str | None = None) -> bytes | None:
    """The receipt for the first leaf of ``event_id`` (from ``source``) below the latest checkpoint."""
    note, checkpoint = latest_checkpoint(directory)
    with TileLog.open(directory, read_only=True) as log:
        for index, entry in enumerate(log.iter_entries(0, min(checkpoint.size, log.size))):
            leaf = Leaf.decode(entry)
            if leaf.id == event_id and (source is None or leaf.source == source):
                return create_proof(log, index, note, extra=entry)
    return None


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One record of the case and the receipt of its leaf."""

    number: int
    index: int
    leaf: Leaf
    receipt: bytes
    record_matches: bool
    """The record's digest (key, headers, value) is the leaf's: it is the record that was logged."""
    verified: bool | None
    """The receipt verified against the notary's key (None: no key was given)."""

    @property
    def receipt_file(self) -> str:
        return f"{self.number:03d}.publication.tlog-proof"

    def to_json(self) -> dict[str, Any]:
        leaf = self.leaf
        return {
            "n": self.number,
            "event": {
                "id": leaf.id,
                "source": leaf.source,
                "type": leaf.type,
                "time": leaf.time,
                "dataschema": leaf.dataschema,
            },
            "record": {
                "topic": leaf.topic,
                "partition": leaf.partition,
                "offset": leaf.offset,
                "timestamp": iso_time(leaf.timestamp),
                "matches_leaf": self.record_matches,
                "data_sha256": leaf.data_sha256,
            },
            "leaf_index": self.index,
            "notary_verdict": "accepted" if leaf.verdict == "accepted" else f"rejected {leaf.reason}",
            "dead_letter": leaf.dead_letter,
            "publication": {"receipt": self.receipt_file, "verified": self.verified},
            # issue 13 (delivery receipts): each recipient's signed receipt and its own inclusion receipt
            "delivery": [],
        }


@dataclass(slots=True)
class CaseProofs:
    """Every record of one case the auditor's records hold, with receipts, against one checkpoint."""

    case_id: str
    origin: str
    checkpoint_size: int
    events: list[CaseEvent] = field(default_factory=list)
    not_in_log: list[dict[str, Any]] = field(default_factory=list)
    """Records of the case without a leaf in the signed tree (position and why)."""

    @property
    def complete(self) -> bool:
        """Every record has a verified-or-unchecked receipt and is the logged one."""
        return (
            bool(self.events)
            and not self.not_in_log
            and all(e.record_matches and e.verified is not False for e in self.events)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CASE_PROOFS_FORMAT,
            "case_id": self.case_id,
            "origin": self.origin,
            "checkpoint_size": self.checkpoint_size,
            "events": [event.to_json() for event in self.events],
            "not_in_log": self.not_in_log,
        }

    def write(self, folder: Path) -> Path:
        """``folder/case.json`` and one receipt file per event; returns the manifest's path."""
        folder.mkdir(parents=True, exist_ok=True)
        for event in self.events:
            (folder / event.receipt_file).write_bytes(event.receipt)
        manifest = folder / _MANIFEST
        manifest.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        return manifest


def case_proofs(
    directory: Path,
    records: Iterable[RecordLike],
    case_id: str,
    *,
    verifiers: Sequence[NoteVerifier] = (),
) -> CaseProofs:
    """Receipts for every record of ``records`` whose key is ``case_id``, against the log's latest signed
    checkpoint (verified with ``verifiers`` when given: then each receipt is verified too)."""
    key = case_id.encode("utf-8")
    wanted = {
        (r.topic, r.partition, r.offset): record_sha256(r)
        for r in records
        if r.key is not None and bytes(r.key) == key
    }
    note, checkpoint = latest_checkpoint(directory, verifiers)
    proofs = CaseProofs(case_id, checkpoint.origin, checkpoint.size)
    found: dict[tuple[str, int, int], tuple[int, bytes, Leaf]] = {}
    with TileLog.open(directory, read_only=True) as log:
        size = min(checkpoint.size, log.size)
        for index, entry in enumerate(log.iter_entries(0, size)):
            if len(found) == len(wanted):
                break
            try:
                leaf = Leaf.decode(entry)
            except GatewayError:
                continue  # the audit reports malformed leaves; a receipt is only for well-formed ones
            position = (leaf.topic, leaf.partition, leaf.offset)
            if position in wanted and position not in found:
                found[position] = (index, entry, leaf)
        ordered = sorted(found.items(), key=lambda item: item[1][0])
        for number, (position, (index, entry, leaf)) in enumerate(ordered, 1):
            receipt = create_proof(log, index, note, extra=entry)
            verified = None
            if verifiers:
                verify_proof(receipt, origin=checkpoint.origin, log_verifiers=verifiers, entry=entry)
                verified = True
            matches = leaf.record_sha256 == wanted[position]
            proofs.events.append(CaseEvent(number, index, leaf, receipt, matches, verified))
    for position in sorted(set(wanted) - set(found)):
        topic, partition, offset = position
        proofs.not_in_log.append(
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "why": f"no leaf for this record in the signed tree of size {checkpoint.size}",
            }
        )
    return proofs
