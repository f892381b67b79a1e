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
*publication* receipt (``NNN.publication.tlog-proof``) and a ``delivery`` list: the recipients' signed
delivery receipts for that record found in the log (a receipt acknowledges the record whose digest its id is
derived from, :func:`gateway.contract.receipt.receipt_id`), each with its own inclusion receipt
(``NNN.delivery.<party>.<outcome>.tlog-proof``): a proof of receipt next to the proof of publication. For
one event, :func:`event_and_delivery_proofs` (``gateway audit prove EVENT_ID --delivery``) does the same.
Nothing in it is personal data: ids, types, times, positions, digests, verdicts.
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
from gateway.contract.receipt import OUTCOMES, RECEIPT_TYPE, receipt_id
from gateway.errors import GatewayError, Reason

__all__ = [
    "CASE_PROOFS_FORMAT",
    "CaseEvent",
    "CaseProofs",
    "DeliveryProof",
    "case_proofs",
    "event_and_delivery_proofs",
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
class DeliveryProof:
    """A recipient's signed delivery receipt for an event, found in the log, with its inclusion proof."""

    party: str
    outcome: str
    receipt_id: str
    leaf: Leaf
    proof: bytes


def event_and_delivery_proofs(
    directory: Path, event_id: str, source: str | None = None
) -> tuple[bytes, Leaf, list[DeliveryProof]] | None:
    """Proof of publication and proofs of receipt (X-Road-style non-repudiation of receipt).

    The publication proof is :func:`event_receipt`'s. A delivery receipt (``id.trafficking.delivery.receipt``
    accepted by the notary: signed by its issuer, who may publish receipts) belongs to the event when its
    CloudEvents id is :func:`gateway.contract.receipt.receipt_id` of its issuer, the event's source and id,
    its outcome and the *logged* record's digest: the issuer signed that id, so it acknowledged exactly the
    record the log holds. None when the event is not below the latest checkpoint.
    """
    note, checkpoint = latest_checkpoint(directory)
    found: tuple[int, Leaf, bytes] | None = None
    candidates: list[tuple[int, Leaf, bytes]] = []
    with TileLog.open(directory, read_only=True) as log:
        for index, entry in enumerate(log.iter_entries(0, min(checkpoint.size, log.size))):
            leaf = Leaf.decode(entry)
            if found is None and leaf.id == event_id and (source is None or leaf.source == source):
                found = (index, leaf, entry)
            elif leaf.type == RECEIPT_TYPE and leaf.verdict == "accepted" and leaf.source:
                candidates.append((index, leaf, entry))
        if found is None:
            return None
        index, event, entry = found
        publication = create_proof(log, index, note, extra=entry)
        proofs = [
            DeliveryProof(party, outcome, rid, leaf, create_proof(log, at, note, extra=raw))
            for party, outcome, rid, at, leaf, raw in _receipts_of(event, candidates)
        ]
    return publication, event, proofs


def _receipts_of(
    event: Leaf, candidates: Iterable[tuple[int, Leaf, bytes]]
) -> list[tuple[str, str, str, int, Leaf, bytes]]:
    """The receipt leaves among ``candidates`` that acknowledge ``event``'s logged record: (issuer, outcome,
    receipt id, leaf index, leaf, entry), each receipt once."""
    found: list[tuple[str, str, str, int, Leaf, bytes]] = []
    seen: set[str] = set()
    for index, leaf, entry in candidates:
        for outcome in OUTCOMES:
            issuer, origin = leaf.source or "", event.source or ""
            rid = receipt_id(issuer, origin, event.id or "", outcome, event.record_sha256)
            if leaf.id == rid and rid not in seen:
                seen.add(rid)
                found.append((issuer, outcome, rid, index, leaf, entry))
    return found


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
    delivery: tuple[DeliveryProof, ...] = ()
    """The recipients' signed delivery receipts for this record found in the log, with their proofs."""

    @property
    def receipt_file(self) -> str:
        return f"{self.number:03d}.publication.tlog-proof"

    def delivery_file(self, proof: DeliveryProof) -> str:
        return f"{self.number:03d}.delivery.{proof.party}.{proof.outcome}.tlog-proof"

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
            # each recipient's signed delivery receipt (a leaf of its own) and its inclusion receipt
            "delivery": [
                {
                    "party": d.party,
                    "outcome": d.outcome,
                    "receipt_id": d.receipt_id,
                    "finished_at": d.leaf.time,
                    "receipt": self.delivery_file(d),
                }
                for d in self.delivery
            ],
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
            for proof in event.delivery:
                (folder / event.delivery_file(proof)).write_bytes(proof.proof)
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
    receipts: list[tuple[int, Leaf, bytes]] = []  # every accepted delivery-receipt leaf (they come later)
    with TileLog.open(directory, read_only=True) as log:
        size = min(checkpoint.size, log.size)
        for index, entry in enumerate(log.iter_entries(0, size)):
            try:
                leaf = Leaf.decode(entry)
            except GatewayError:
                continue  # the audit reports malformed leaves; a receipt is only for well-formed ones
            if leaf.type == RECEIPT_TYPE and leaf.verdict == "accepted" and leaf.source:
                receipts.append((index, leaf, entry))
                continue
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
            delivery = []
            for party, outcome, rid, at, receipt_leaf, raw in _receipts_of(leaf, receipts):
                proof = create_proof(log, at, note, extra=raw)
                if verifiers:
                    verify_proof(proof, origin=checkpoint.origin, log_verifiers=verifiers, entry=raw)
                delivery.append(DeliveryProof(party, outcome, rid, receipt_leaf, proof))
            proofs.events.append(CaseEvent(number, index, leaf, receipt, matches, verified, tuple(delivery)))
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
