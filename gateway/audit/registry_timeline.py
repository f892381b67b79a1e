"""Which registry version judged each entry of the log: the auditor's replay of the registry chain.

The notary takes registry versions from ``xchg.registry.v1`` like any other record and logs them in order;
from each one it puts in force, the records after it are judged with it (:mod:`gateway.audit.notary`). So
the version in force at a leaf is a function of the log: start from the anchor, offer the registry records
of the registry leaves in log order. The auditor does exactly that (:class:`RegistryTimeline`): the scan of
the log yields :class:`RegistryEpochs` — for every (topic, partition), the offset where each *epoch* (the
stretch between two registry leaves) begins — and, given the registry records (from Kafka or a records
dump), the chain's state at the start of every epoch. A record is then re-verified against the version of
the epoch its leaf is in: an event signed by a key added in version 5 is accepted from the first leaf after
version 5's, and one timed after a revocation published in version 6 is ``key.revoked`` from there on.

:class:`FixedRegistry` is the other mode: one registry for the whole log (``--registry``), for logs without
registry leaves; a registry leaf met in that mode is recomputed as refused (``registry.anchor-mismatch``:
no anchor was given), which shows as a verdict mismatch telling the auditor to pass the anchor.

Both are *leaf evaluators*: what the record check (also in worker processes, :mod:`gateway.audit._workers`)
calls to recompute the leaf a record must have, with a fingerprint showing two processes judge alike.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.audit.leaf import Leaf, RecordLike, leaf_for_record, leaf_for_registry_record
from gateway.contract.policy import REGISTRY_TOPIC
from gateway.contract.registry_chain import Anchor, Outcome, RegistryChain
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from gateway.errors import Reason

__all__ = [
    "FixedRegistry",
    "LeafEvaluator",
    "RegistryEpochs",
    "RegistryTimeline",
    "timeline_from_json",
    "verifier_fingerprint",
]


class LeafEvaluator(Protocol):
    """Recomputes the leaf a record must have."""

    def leaf(self, record: RecordLike) -> Leaf: ...

    def fingerprint(self) -> str: ...


def verifier_fingerprint(verifier: EventVerifier | None) -> str:
    """A digest of what a verifier decides with: the registry's parties and keys (validity, revocation),
    the message schemas, the party, the sealing key ids and the limits. Workers build their own verifier
    from the same options; equal fingerprints show it decides as the auditor's does."""
    if verifier is None:
        return "none"
    described = (
        sorted(verifier.registry.parties.items()),
        [(schema.id, schema.raw, schema.wire) for schema in verifier.schemas.schemas()],
        verifier.party,
        sorted(verifier.sealing_keys),
        verifier.limits,
        verifier.max_clock_skew,
    )
    return hashlib.sha256(repr(described).encode("utf-8")).hexdigest()


_NO_ANCHOR = Outcome(
    status="refused",
    reason=Reason.REGISTRY_ANCHOR_MISMATCH,
    detail="audited with a fixed registry: give the registry anchor to judge registry versions",
)


@dataclass(frozen=True, slots=True)
class FixedRegistry:
    """One registry for every record (``gateway audit verify --registry``)."""

    verifier: EventVerifier

    def leaf(self, record: RecordLike) -> Leaf:
        if record.topic == REGISTRY_TOPIC:
            return leaf_for_registry_record(record, _NO_ANCHOR)
        return leaf_for_record(record, self.verifier)

    def fingerprint(self) -> str:
        return verifier_fingerprint(self.verifier)


@dataclass(slots=True)
class RegistryEpochs:
    """Where the registry version in force may change along the log, built while the log is scanned.

    Epoch ``k`` is the stretch of the log after the ``k``-th registry leaf (epoch 0: before any); a
    registry leaf belongs to the epoch before it (it is judged by the chain as it was).
    """

    epoch: int = 0
    boundaries: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    """(topic, partition) -> (first offset, epoch) where the partition's leaves enter each epoch."""
    registry_leaves: list[tuple[int, int, int]] = field(default_factory=list)
    """(leaf index, partition, offset) of each registry leaf, in log order."""
    _last: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, index: int, topic: str, partition: int, offset: int) -> None:
        """The leaf at ``index`` (scanned in log order, duplicates left out)."""
        key = (topic, partition)
        if self._last.get(key) != self.epoch:
            self._last[key] = self.epoch
            self.boundaries.setdefault(key, []).append((offset, self.epoch))
        if topic == REGISTRY_TOPIC:
            self.registry_leaves.append((index, partition, offset))
            self.epoch += 1

    def epoch_of(self, topic: str, partition: int, offset: int) -> int:
        """The epoch of the leaf at (topic, partition, offset); for a position without a leaf, that of
        the nearest leaf before it (its record is a finding anyway)."""
        marks = self.boundaries.get((topic, partition))
        if not marks:
            return self.epoch
        at = bisect.bisect_right(marks, (offset, self.epoch + 1)) - 1
        return marks[max(at, 0)][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "boundaries": [[t, p, sorted(marks)] for (t, p), marks in sorted(self.boundaries.items())],
            "registry_leaves": self.registry_leaves,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RegistryEpochs:
        epochs = cls(epoch=int(value["epoch"]))
        for topic, partition, marks in value["boundaries"]:
            epochs.boundaries[(topic, int(partition))] = [(int(o), int(e)) for o, e in marks]
        epochs.registry_leaves = [(int(i), int(p), int(o)) for i, p, o in value["registry_leaves"]]
        return epochs


class RegistryTimeline:
    """The chain replayed along the log: the version in force in every epoch, and a leaf evaluator."""

    def __init__(
        self,
        anchor: Anchor,
        schemas: SchemaStore,
        epochs: RegistryEpochs,
        values: Sequence[bytes | None],
    ) -> None:
        """``values``: the registry record of each registry leaf, in log order (None: not available)."""
        self._anchor = anchor
        self._schemas = schemas
        self._epochs = epochs
        chain = RegistryChain(anchor)
        self.states: list[RegistryVersion | None] = [None]
        self.outcomes: list[Outcome | None] = []
        for value in values:
            self.outcomes.append(None if value is None else chain.update(value))
            self.states.append(chain.current)
        while len(self.states) <= epochs.epoch:  # fewer values than registry leaves: nothing changes
            self.states.append(chain.current)
        self._verifiers: dict[str, EventVerifier] = {}

    def _verifier(self, version: RegistryVersion | None) -> EventVerifier | None:
        if version is None:
            return None
        verifier = self._verifiers.get(version.digest)
        if verifier is None:
            verifier = EventVerifier(registry=version.registry, schemas=self._schemas)
            self._verifiers[version.digest] = verifier
        return verifier

    def leaf(self, record: RecordLike) -> Leaf:
        epoch = self._epochs.epoch_of(record.topic, record.partition, record.offset)
        state = self.states[min(epoch, len(self.states) - 1)]
        if record.topic == REGISTRY_TOPIC:
            outcome = RegistryChain.resume(self._anchor, state).update(record.value or b"")
            return leaf_for_registry_record(record, outcome)
        return leaf_for_record(record, self._verifier(state))

    def fingerprint(self) -> str:
        described = [
            (None if state is None else state.digest, verifier_fingerprint(self._verifier(state)))
            for state in self.states
        ]
        return hashlib.sha256(repr((self._anchor.to_json(), described)).encode("utf-8")).hexdigest()

    def versions(self) -> list[dict[str, Any]]:
        """For the report: every registry leaf, the version it carried and what the chain made of it."""
        rows = []
        for (index, _, offset), outcome in zip(self._epochs.registry_leaves, self.outcomes, strict=False):
            version = outcome.version if outcome is not None else None
            rows.append(
                {
                    "leaf_index": index,
                    "offset": offset,
                    "serial": None if version is None else version.serial,
                    "digest": None if version is None else version.digest,
                    "outcome": "no record" if outcome is None else (outcome.status if outcome.accepted
                                                                    else str(outcome.reason)),
                }
            )  # fmt: skip
        return rows


def timeline_from_json(
    anchor: Mapping[str, Any],
    schemas: Callable[[], SchemaStore],
    epochs: Mapping[str, Any],
    values: Sequence[bytes | None],
) -> RegistryTimeline:
    """A :class:`RegistryTimeline` from plain values (what a worker process receives)."""
    return RegistryTimeline(Anchor.from_json(anchor), schemas(), RegistryEpochs.from_json(epochs), values)
