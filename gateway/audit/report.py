"""The verdict of ``gateway audit verify``: the findings, the signed tree heads, and the report's format.

A :class:`Finding` is one discrepancy with a stable reason code (``docs/AUDIT.md`` section 14.2) and its
exact position: leaf index, topic/partition/offset, checkpoint size, source file. An :class:`AuditReport`
(made by :class:`gateway.audit.auditor.Auditor`) is printed as a summary (:meth:`AuditReport.summary`) and
written as JSON (:meth:`AuditReport.to_json`, format :data:`REPORT_FORMAT`, section 14.3). Details carry
codes, digests and positions only, never record contents.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.audit import merkle
from gateway.errors import Reason

__all__ = ["REPORT_FORMAT", "AuditReport", "CheckpointStatus", "Finding"]

REPORT_FORMAT: Final = "xchg-audit-report/v1"


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
    cosigners: list[str] = field(default_factory=list)
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
        }


@dataclass(slots=True, kw_only=True)
class AuditReport:
    """The verdict: what was checked, the signed and cosigned sizes, and every finding."""

    origin: str
    log_dir: str
    log_size: int = 0
    state_size: int | None = None
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: list[CheckpointStatus] = field(default_factory=list)
    quorum: int = 0
    records: dict[str, Any] | None = None
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

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "ok": self.ok,
            "origin": self.origin,
            "log": self.log_dir,
            "log_size": self.log_size,
            "state_size": self.state_size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "signed_size": self.signed_size,
            "unsigned_entries": max(0, self.log_size - self.signed_size),
            "quorum": self.quorum,
            "cosigned_size": self.cosigned_size,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "records": self.records,
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
        if self.records is None:
            lines.append("  records: not checked (give --bootstrap-servers or --records)")
        else:
            r = self.records
            lines.append(
                f"  records ({r['source']}): {r['read']} read, {r['matched']} matched their leaf, "
                f"{r['pending']} after the log's end tolerated, {r['expired']} leaves past retention"
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
            if total > 50:
                lines.append(f"  ... and {total - 50} more (see the JSON report)")
        return "\n".join(lines)
