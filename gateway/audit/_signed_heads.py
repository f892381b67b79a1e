"""The signed tree heads an audit is given, verified and grouped (step 1 of ``docs/AUDIT.md`` section 14.1).

:class:`SignedHeads` takes every checkpoint note the auditor finds or is handed (the log directory's
``checkpoint`` and ``checkpoints/<size>``, ``--checkpoint`` files, the notary's Kafka topic) and

* verifies each with the notary's key(s) and the origin: a note that fails is a finding with the note's
  reason (``note.signature-invalid``, ``note.unverified``, ``checkpoint.origin-mismatch``, ...);
* groups valid ones by (size, root): two roots for one size is ``checkpoint.inconsistent``, a fork signed by
  the notary;
* checks every line of every named cosigner (``--cosigner``) *whatever the quorum*: a line that does not
  verify is ``cosign.signature-invalid`` (the signed-note rule "a trusted key's failing signature rejects
  the note", which ``check-receipt`` applies too); valid ones are recorded with their time, and with
  ``quorum > 0`` a checkpoint counts as cosigned when ``quorum`` of them signed it and none failed;
* compares the signed roots with the log's while the auditor streams it (:meth:`check_root`): a root the log
  does not reproduce is ``checkpoint.root-mismatch``, naming the leaf range where the difference lies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.audit._log_reader import Find
from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, checkpoint_size
from gateway.audit.note import Note, NoteVerifier
from gateway.audit.report import CheckpointStatus
from gateway.audit.witness import check_cosignatures
from gateway.errors import GatewayError, Reason

__all__ = ["SignedHeads"]


class SignedHeads:
    """Every distinct valid (size, root) signed by the notary, with where it was found and what the log and
    the cosigners say about it. Findings go to ``find``."""

    def __init__(
        self,
        *,
        origin: str,
        notary_keys: Sequence[NoteVerifier],
        cosigners: Sequence[NoteVerifier],
        quorum: int,
        find: Find,
    ) -> None:
        self._origin = origin
        self._keys = tuple(notary_keys)
        self._cosigners = tuple(cosigners)
        self._quorum = quorum
        self._find = find
        self._statuses: dict[tuple[int, bytes], CheckpointStatus] = {}
        self._by_size: dict[int, list[CheckpointStatus]] = {}
        """The same statuses by size, in the order they were added (constant-time look-ups in the scan)."""
        self.last_reproduced = 0
        """The largest size whose signed root the log reproduced so far (sizes are reached in order)."""

    # ---- collecting ----------------------------------------------------------------------------------
    def load_directory(self, directory: Path) -> None:
        """Every checkpoint note in a log directory (``checkpoint`` and ``checkpoints/<size>``). A missing
        ``checkpoint`` is ``log.checkpoint-missing``: it is where a tlog-tiles client reads the log's
        current signed size (c2sp.org/tlog-tiles), and the notary always writes it."""
        latest = directory / CHECKPOINT_FILE
        if latest.is_file():
            self.add(latest.read_bytes(), str(latest))
        else:
            self._find(
                Reason.LOG_CHECKPOINT_MISSING,
                "the log directory has no checkpoint file (the latest signed checkpoint a tlog-tiles client "
                "reads): it was deleted, or this is not a complete copy of the notary's log",
                source=str(latest),
            )
        history = directory / CHECKPOINT_HISTORY
        if history.is_dir():
            for path in sorted(history.iterdir(), key=lambda p: (len(p.name), p.name)):
                # only <size> files: a crash may leave a torn "<size>.tmp" that was never a checkpoint
                if path.is_file() and checkpoint_size(path.name) is not None:
                    self.add(path.read_bytes(), str(path))

    def add(self, note: bytes, source: str) -> None:
        """A signed checkpoint from ``source``: verified now, compared with the log during the scan."""
        try:
            signed = open_checkpoint(note, origin=self._origin, verifiers=self._keys)
        except GatewayError as exc:
            self._find(
                exc.reason,
                f"checkpoint rejected: {exc.detail}",
                checkpoint_size=_size_hint(note),
                source=source,
            )
            return
        checkpoint = signed.checkpoint
        key = (checkpoint.size, checkpoint.root_hash)
        status = self._statuses.get(key)
        if status is None:
            same_size = self._by_size.setdefault(checkpoint.size, [])
            for other in same_size:  # a distinct root for this size
                self._find(
                    Reason.CHECKPOINT_INCONSISTENT,
                    f"two signed checkpoints of size {other.size} with different roots (a fork signed by the "
                    f"notary; the other one is in {', '.join(other.sources)})",
                    checkpoint_size=other.size,
                    source=source,
                )
            status = CheckpointStatus(size=checkpoint.size, root=checkpoint.root_hash)
            self._statuses[key] = status
            same_size.append(status)
        if source not in status.sources:
            status.sources.append(source)
        self._check_cosignatures(Note.parse(note), status, source)

    def _check_cosignatures(self, note: Note, status: CheckpointStatus, source: str) -> None:
        if not self._cosigners:
            return
        checks = check_cosignatures(note, self._cosigners)
        failed = False
        for check in checks:
            if check.status == "invalid":
                failed = True
                self._find(
                    Reason.COSIGN_SIGNATURE_INVALID,
                    f"the cosignature of trusted cosigner {check.name}+{check.key_id:08x} on this checkpoint "
                    "does not verify (altered, or not made by that cosigner's key)",
                    checkpoint_size=status.size,
                    source=source,
                )
            elif check.status == "valid" and check.name not in status.cosigners:
                status.cosigners.append(check.name)
                status.cosignatures.append((check.name, check.timestamp or 0))
        status.cosigners.sort()
        status.cosignatures.sort()
        status.cosign_failed = status.cosign_failed or failed
        # copies of one checkpoint (the latest file, the history, Kafka) may carry different cosignatures
        # of the same signed text: together they count
        status.cosigned = (
            self._quorum > 0 and not status.cosign_failed and len(status.cosigners) >= self._quorum
        )

    # ---- the scan ------------------------------------------------------------------------------------
    def sizes(self) -> set[int]:
        return set(self._by_size)

    def __contains__(self, size: object) -> bool:
        return size in self._by_size

    def __iter__(self) -> Iterator[CheckpointStatus]:
        return iter(self._statuses.values())

    def __bool__(self) -> bool:
        return bool(self._statuses)

    def newest(self) -> int | None:
        """The largest size any valid signed checkpoint states (reproduced or not), None without any."""
        return max(self._by_size, default=None)

    def check_root(self, size: int, root: bytes) -> None:
        """Compare the signed roots of ``size`` with the log's (called once per size, in increasing order)."""
        last_good = self.last_reproduced
        for status in self._by_size.get(size, ()):
            status.matches = status.root == root
            if status.matches:
                self.last_reproduced = size
                continue
            self._find(
                Reason.CHECKPOINT_ROOT_MISMATCH,
                f"the log's root at size {size} is not the signed one: entries in [{last_good}, {size}) "
                f"differ from what was signed (the last reproduced checkpoint is at size {last_good})",
                checkpoint_size=size,
                source=", ".join(status.sources),
            )

    def beyond(self, size: int, *, complete: bool) -> None:
        """Every signed size larger than the ``size`` entries the log holds is ``checkpoint.beyond-log``."""
        for status in self._statuses.values():
            if status.size <= size:
                continue
            status.matches = None
            self._find(
                Reason.CHECKPOINT_BEYOND_LOG,
                f"signed checkpoint of size {status.size}, but the log "
                + (f"holds only {size} entries" if complete else f"is unreadable after {size} entries")
                + ": entries were deleted or truncated",
                checkpoint_size=status.size,
                source=", ".join(status.sources),
            )

    def sorted(self) -> list[CheckpointStatus]:
        return sorted(self._statuses.values(), key=lambda c: (c.size, c.root))


def _size_hint(note: bytes) -> int | None:
    """The size an unverified checkpoint claims (only to locate a finding)."""
    with contextlib.suppress(GatewayError, UnicodeDecodeError):
        return Checkpoint.parse(Note.parse(note).text).size
    return None
