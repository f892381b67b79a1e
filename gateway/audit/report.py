"""The verdict of ``gateway audit verify``: the findings, the signed tree heads, and the report's format.

A :class:`Finding` is one discrepancy with a stable reason code (``docs/AUDIT.md`` section 14.2) and its
exact position: leaf index, topic/partition/offset, checkpoint size, source file — and, when a record and
its leaf disagree, every field that differs with both values (:class:`Difference`). An
:class:`AuditReport` (made by :class:`gateway.audit.auditor.Auditor`) is printed as a summary
(:meth:`AuditReport.summary`) and written as JSON (:meth:`AuditReport.to_json`, format
:data:`REPORT_FORMAT`, section 14.3); :mod:`gateway.audit.html_report` renders that JSON for people.

Honest counts: the records' matched / mismatched / not-logged numbers are derived from the findings
(:meth:`AuditReport.records`), so a summary never says "matched" about a record a finding reports. Details
carry codes, digests and positions only, never record contents; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gateway.audit import merkle
from gateway.contract.policy import parse_topic
from gateway.errors import GatewayError, Reason

__all__ = [
    "FINDING_REASONS",
    "REPORT_FORMAT",
    "AuditReport",
    "CheckpointStatus",
    "Difference",
    "Finding",
    "PartyCounts",
    "iso_time",
    "party_of",
]

REPORT_FORMAT: Final = "xchg-audit-report/v2"

#: Every reason an audit can report (the catalogue of :mod:`gateway.audit.html_report` explains each).
FINDING_REASONS: Final = (
    Reason.LOG_UNSIGNED_TAIL,
    Reason.LOG_CHECKPOINT_MISSING,
    Reason.LOG_STRAY_FILE,
    Reason.LOG_BEYOND_TREE,
    Reason.LOG_LEFTOVER_MISMATCH,
    Reason.LOG_TILE_MISSING,
    Reason.TLOG_CORRUPT,
    Reason.LEAF_MALFORMED,
    Reason.LEAF_DUPLICATE,
    Reason.LEAF_OUT_OF_ORDER,
    Reason.LEAF_RECORD_MISSING,
    Reason.LEAF_RECORD_MISMATCH,
    Reason.LEAF_VERDICT_MISMATCH,
    Reason.RECORD_NOT_LOGGED,
    Reason.CHECKPOINT_ROOT_MISMATCH,
    Reason.CHECKPOINT_BEYOND_LOG,
    Reason.CHECKPOINT_INCONSISTENT,
    Reason.CHECKPOINT_MALFORMED,
    Reason.CHECKPOINT_ORIGIN_MISMATCH,
    Reason.NOTE_MALFORMED,
    Reason.NOTE_SIGNATURE_INVALID,
    Reason.NOTE_UNVERIFIED,
    Reason.NOTE_KEY_INVALID,
    Reason.SIZE_EXCEEDED,
    Reason.COSIGN_SIGNATURE_INVALID,
    Reason.COSIGN_QUORUM_NOT_MET,
)

_MISMATCHES: Final = (Reason.LEAF_RECORD_MISMATCH, Reason.LEAF_VERDICT_MISMATCH)


def iso_time(milliseconds: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC with its zone (``2020-08-26T02:00:00.000Z``)."""
    if milliseconds is None:
        return None
    moment = datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Difference:
    """One leaf member that differs between the logged leaf and the one recomputed from the record."""

    field: str
    logged: str | None
    recomputed: str | None

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "logged": self.logged, "recomputed": self.recomputed}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One discrepancy, located as precisely as the evidence allows."""

    reason: Reason
    detail: str
    leaf_index: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    checkpoint_size: int | None = None
    source: str | None = None
    differences: tuple[Difference, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": str(self.reason),
            "detail": self.detail,
            "leaf_index": self.leaf_index,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "checkpoint_size": self.checkpoint_size,
            "source": self.source,
            "differences": [d.to_json() for d in self.differences],
        }

    def where(self) -> str:
        parts = []
        if self.leaf_index is not None:
            parts.append(f"leaf {self.leaf_index}")
        if self.topic is not None:
            parts.append(f"{self.topic}:{self.partition}:{self.offset}")
        if self.checkpoint_size is not None:
            parts.append(f"checkpoint size {self.checkpoint_size}")
        if self.source is not None:
            parts.append(self.source)
        return ", ".join(parts) or "log"


@dataclass(slots=True, kw_only=True)
class CheckpointStatus:
    """One distinct signed tree head (size, root) and what the replay found about it."""

    size: int
    root: bytes
    sources: list[str] = field(default_factory=list)
    cosigned: bool = False
    """The quorum of trusted cosigners validly cosigned it (and none of their lines failed)."""
    cosigners: list[str] = field(default_factory=list)
    """Trusted cosigners whose cosignature on it verified (whatever the quorum)."""
    cosignatures: list[tuple[str, int]] = field(default_factory=list)
    """(cosigner, cosignature time in POSIX seconds) of those cosignatures."""
    cosign_failed: bool = False
    """A trusted cosigner's line on it does not verify (``cosign.signature-invalid``)."""
    matches: bool | None = None
    """True: the log reproduces it; False: it does not; None: the log is shorter than its size."""

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "sources": self.sources,
            "matches_log": self.matches,
            "cosigned": self.cosigned,
            "cosigners": self.cosigners,
            "cosignatures": [
                {"cosigner": name, "time": iso_time(seconds * 1000)} for name, seconds in self.cosignatures
            ],
        }


@dataclass(slots=True)
class PartyCounts:
    """What the log holds per party (the ``<party>`` of its topics ``xchg.<party>.<kind>.v<N>``): records
    it published, the notary's verdict on them, and records its gateway dead-lettered."""

    published: int = 0
    accepted: int = 0
    rejected: int = 0
    dead_lettered: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "published": self.published,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
        }


@dataclass(slots=True, kw_only=True)
class AuditReport:
    """The verdict: what was checked against which keys, the signed and cosigned sizes, every finding."""

    origin: str
    log_dir: str
    audited_at: int = 0
    """When the audit ran, milliseconds since the epoch."""
    notary_keys: list[str] = field(default_factory=list)
    """The notary's verifier keys the audit trusted (vkey strings)."""
    cosigner_keys: list[str] = field(default_factory=list)
    registry: dict[str, Any] | None = None
    """The registry the records were re-verified with (``{"file", "sha256"}``), when records were checked."""
    log_size: int = 0
    state_size: int | None = None
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: list[CheckpointStatus] = field(default_factory=list)
    quorum: int = 0
    allow_unsigned: int = 0
    """Entries after the newest signed checkpoint tolerated without a finding (``--allow-unsigned``)."""
    unsigned_tail: int = 0
    """Entries after the newest valid signed checkpoint (reproduced or not): what no signature speaks of."""
    first_record: int | None = None
    last_record: int | None = None
    """The earliest and latest Kafka record timestamps of the logged leaves (milliseconds)."""
    parties: dict[str, PartyCounts] = field(default_factory=dict)
    record_counts: Counter[str] | None = None
    """Raw counters of the record check (None: no records were checked); see :attr:`records`."""
    record_source: str | None = None
    verdicts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    """Findings beyond the cap, counted per reason."""

    @property
    def ok(self) -> bool:
        return not self.findings and not self.suppressed

    @property
    def signed_size(self) -> int:
        """The largest signed checkpoint size the log reproduces (0 if none)."""
        return max((c.size for c in self.checkpoints if c.matches), default=0)

    @property
    def cosigned_size(self) -> int | None:
        """The largest size reproduced *and* cosigned by the quorum (None when no quorum was asked)."""
        if self.quorum <= 0:
            return None
        return max((c.size for c in self.checkpoints if c.matches and c.cosigned), default=0)

    def count(self, reason: Reason) -> int:
        return sum(1 for f in self.findings if f.reason == reason) + self.suppressed.get(str(reason), 0)

    @property
    def records(self) -> dict[str, Any] | None:
        """What the record check found, derived from the findings: ``matched`` counts only records whose
        leaf is exactly the recomputed one (``with_leaf`` minus the mismatch findings)."""
        raw = self.record_counts
        if raw is None:
            return None
        mismatched = sum(self.count(reason) for reason in _MISMATCHES)
        return {
            "source": self.record_source,
            "read": raw["read"],
            "matched": raw["with_leaf"] - mismatched,
            "mismatched": mismatched,
            "not_logged": self.count(Reason.RECORD_NOT_LOGGED),
            "leaves_without_record": self.count(Reason.LEAF_RECORD_MISSING),
            "pending": raw["pending"],
            "expired": raw["expired"],
            "repeated": raw["repeated"],
        }

    def party_findings(self) -> dict[str, int]:
        """Listed findings per party of their topic (suppressed findings carry no position)."""
        counts: Counter[str] = Counter()
        for finding in self.findings:
            party = party_of(finding.topic)
            if party is not None:
                counts[party] += 1
        return dict(counts)

    def to_json(self) -> dict[str, Any]:
        per_party = self.party_findings()
        return {
            "format": REPORT_FORMAT,
            "ok": self.ok,
            "audited_at": iso_time(self.audited_at),
            "origin": self.origin,
            "log": self.log_dir,
            "trust": {
                "notary_keys": self.notary_keys,
                "cosigners": self.cosigner_keys,
                "quorum": self.quorum,
                "allow_unsigned": self.allow_unsigned,
            },
            "registry": self.registry,
            "log_size": self.log_size,
            "state_size": self.state_size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "signed_size": self.signed_size,
            "unsigned_entries": max(0, self.log_size - self.signed_size),
            "unsigned_tail": self.unsigned_tail,
            "quorum": self.quorum,
            "cosigned_size": self.cosigned_size,
            "period": {
                "first_record": iso_time(self.first_record),
                "last_record": iso_time(self.last_record),
            },
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "records": self.records,
            "parties": {
                party: {**counts.to_json(), "findings": per_party.get(party, 0)}
                for party, counts in sorted(self.parties.items())
            },
            "verdicts": dict(sorted(self.verdicts.items())),
            "findings": [f.to_json() for f in self.findings],
            "suppressed_findings": self.suppressed,
        }

    def summary(self) -> str:
        lines = [f"audit of {self.log_dir} ({self.origin})"]
        lines.append(
            f"  log: {self.log_size} entries; {len(self.checkpoints)} signed checkpoint(s), "
            f"the log reproduces them up to size {self.signed_size}"
            + (f"; cosigned by {self.quorum}+ up to size {self.cosigned_size}" if self.quorum else "")
        )
        if self.unsigned_tail:
            allowed = self.unsigned_tail <= self.allow_unsigned
            lines.append(
                f"  unsigned: the last {self.unsigned_tail} entries are covered by no signed checkpoint"
                + (f" (allowed: up to {self.allow_unsigned})" if allowed else "")
            )
        records = self.records
        if records is None:
            lines.append("  records: not checked (give --bootstrap-servers or --records)")
        else:
            lines.append(
                f"  records ({records['source']}): {records['read']} read; {records['matched']} matched "
                f"their leaf, {records['mismatched']} differ from it, {records['not_logged']} not logged; "
                f"{records['leaves_without_record']} leaves without a record; {records['pending']} after the "
                f"log's end tolerated, {records['expired']} leaves past retention"
            )
        accepted = self.verdicts.get("accepted", 0)
        rejected = sum(n for k, n in self.verdicts.items() if k != "accepted")
        lines.append(f"  verdicts: {accepted} accepted, {rejected} rejected")
        if self.ok:
            lines.append("VERDICT: OK - no discrepancy")
        else:
            total = len(self.findings) + sum(self.suppressed.values())
            lines.append(f"VERDICT: FAIL - {total} discrepancy(ies)")
            for finding in self.findings[:50]:
                lines.append(f"  {finding.reason}: {finding.where()}: {finding.detail}")
                lines.extend(
                    f"      {d.field}: logged {d.logged}, recomputed {d.recomputed}"
                    for d in finding.differences
                )
            if total > 50:
                lines.append(f"  ... and {total - 50} more (see the JSON report)")
        return "\n".join(lines)


def party_of(topic: str | None) -> str | None:
    """The ``<party>`` of an exchange or dead-letter topic ``xchg.<party>.<case|alert|dlq>.v<N>``."""
    if topic is None:
        return None
    try:
        return parse_topic(topic).party
    except GatewayError:  # any other topic name has no party
        return None
