"""The notary's signed checkpoints on disk: ``checkpoint`` (the latest) and ``checkpoints/<size>`` (all).

Written durably before a checkpoint is published anywhere, so that the notary never signs two inconsistent
tree heads across a crash (``docs/AUDIT.md`` section 11.3 and 11.4). File names: :mod:`gateway.audit.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway.audit import _fs
from gateway.audit.checkpoint import SignedCheckpoint, open_checkpoint
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, checkpoint_path, checkpoint_size
from gateway.audit.note import NoteVerifier

__all__ = ["CheckpointStore"]


class CheckpointStore:
    """The notary's signed checkpoints: ``checkpoint`` (latest) and ``checkpoints/<size>`` (all of them).

    Why both: ``checkpoint`` is where tlog-tiles clients look; the history lets an auditor check the log
    against every tree head the notary ever signed, and lets the notary find its last one even if a crash
    left ``checkpoint`` one step behind (both are written by one durable batch, history first). Files are
    replaced atomically and durably, so a reader sees an old or a new note, never a torn one.
    """

    def __init__(
        self, directory: Path, *, origin: str, verifiers: Sequence[NoteVerifier], durable: bool = True
    ):
        self._dir = directory
        self._origin = origin
        self._verifiers = tuple(verifiers)
        self._durable = durable

    def path(self, size: int) -> Path:
        return self._dir / checkpoint_path(size)

    def sizes(self) -> list[int]:
        folder = self._dir / CHECKPOINT_HISTORY
        if not folder.is_dir():
            return []
        return sorted(size for p in folder.iterdir() if (size := checkpoint_size(p.name)) is not None)

    def get(self, size: int) -> bytes | None:
        try:
            return self.path(size).read_bytes()
        except FileNotFoundError:
            return None

    def latest(self) -> SignedCheckpoint | None:
        """The largest checkpoint this notary signed (verified with its key), from the history or
        ``checkpoint``; ``None`` before the first. A note that does not verify raises: it is not ours."""
        candidates = [self._dir / CHECKPOINT_FILE]
        sizes = self.sizes()
        if sizes:
            candidates.append(self.path(sizes[-1]))
        best: SignedCheckpoint | None = None
        for candidate in candidates:
            try:
                note = candidate.read_bytes()
            except FileNotFoundError:
                continue
            signed = open_checkpoint(note, origin=self._origin, verifiers=self._verifiers)
            if best is None or signed.checkpoint.size > best.checkpoint.size:
                best = signed
        return best

    def save(self, note: bytes, size: int, *, latest: bool = True) -> None:
        """Durably write ``note`` as ``checkpoints/<size>`` (and ``checkpoint`` when it is the latest)."""
        files = {self.path(size): note}
        if latest:
            files[self._dir / CHECKPOINT_FILE] = note
        _fs.replace_files(files, durable=self._durable, mode=0o644)
