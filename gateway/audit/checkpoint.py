"""C2SP checkpoints (c2sp.org/tlog-checkpoint): the signed statement "the log has N entries with root R".

The note body is exactly ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` plus optional non-empty extension
lines, each newline-terminated. Parsing is strict (no leading zeros, canonical base64 of exactly 32 bytes, no
empty lines) so one tree head has one spelling and an auditor comparing bodies byte for byte compares trees.
The notary signs with an Ed25519 note key named after the origin (the spec's SHOULD).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.audit.merkle import HASH_SIZE
from gateway.audit.note import (
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    VerifiedNote,
    decode_base64,
    open_note,
    sign_note,
)
from gateway.errors import GatewayError, Reason

__all__ = [
    "ORIGIN_PREFIX",
    "Checkpoint",
    "SignedCheckpoint",
    "deployment_origin",
    "open_checkpoint",
    "sign_checkpoint",
]

#: Our origins: ``id.trafficking.xchg/notary/<deployment>`` (a schema-less URL; it need not resolve).
ORIGIN_PREFIX: Final = "id.trafficking.xchg/notary/"
_DEPLOYMENT: Final = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$")
_SIZE: Final = re.compile(r"^(0|[1-9][0-9]*)$")
_MAX_SIZE: Final = (1 << 64) - 1


def deployment_origin(deployment: str) -> str:
    """The checkpoint origin (= notary key name) of a deployment: ``id.trafficking.xchg/notary/<name>``."""
    if not _DEPLOYMENT.fullmatch(deployment):
        raise GatewayError(Reason.CHECKPOINT_MALFORMED, f"invalid deployment name {deployment!r}")
    return ORIGIN_PREFIX + deployment


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, size and RFC 6962 root hash, plus opaque extension lines (not recommended)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "origin must be one non-empty line")
        if not 0 <= self.size <= _MAX_SIZE:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "tree size out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "root hash must be 32 bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "extension lines must be non-empty single lines")

    def to_note_body(self) -> str:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root_hash).decode("ascii"),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a note body (the *verified* text of a checkpoint note)."""
        if not body.endswith("\n"):
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "checkpoint body must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "checkpoint needs origin, size and root lines")
        origin, size_text, root_text, *extensions = lines
        if not _SIZE.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "tree size is not a canonical decimal uint64")
        root_hash = decode_base64(root_text)
        if root_hash is None or len(root_hash) != HASH_SIZE:
            raise GatewayError(Reason.CHECKPOINT_MALFORMED, "root hash is not canonical base64 of 32 bytes")
        return cls(origin, int(size_text), root_hash, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose note verified; ``note`` is the serialised note exactly as received."""

    checkpoint: Checkpoint
    note: bytes
    verified: VerifiedNote

    @property
    def signatures(self) -> tuple[NoteSignature, ...]:
        return self.verified.verified + self.verified.unverified


def sign_checkpoint(
    checkpoint: Checkpoint, signers: Sequence[NoteSigner], *, existing: Sequence[NoteSignature] = ()
) -> bytes:
    """The checkpoint as a signed note (``existing`` signatures kept unless re-signed by the same key)."""
    return sign_note(checkpoint.to_note_body(), signers, existing=existing)


def open_checkpoint(note: bytes, *, origin: str, verifiers: Iterable[NoteVerifier]) -> SignedCheckpoint:
    """Verify ``note`` against the log's key(s) and check it is a checkpoint of ``origin``.

    ``verifiers`` are the log's own keys (more than one during a key rotation): at least one must have signed.
    Cosignatures are not checked here; see :func:`gateway.audit.witness.verify_cosigned`.
    """
    verified = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(verified.text)
    if checkpoint.origin != origin:
        raise GatewayError(
            Reason.CHECKPOINT_ORIGIN_MISMATCH, f"checkpoint origin {checkpoint.origin!r} != {origin!r}"
        )
    return SignedCheckpoint(checkpoint, note, verified)
