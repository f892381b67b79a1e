"""Offline-verifiable inclusion receipts in the c2sp.org/tlog-proof@v1 text format.

A receipt is what an agency keeps to prove, later and without contacting anyone, that a record was logged::

    c2sp.org/tlog-proof@v1
    [extra <base64 opaque data>]
    index <leaf index>
    <base64 inclusion proof hash, leaf sibling first>
    ...
    <empty line>
    <the signed checkpoint note, verbatim, with any cosignatures>

Verification needs only the receipt, the entry (or its leaf hash), the log's origin and key, and optionally
cosigner keys with a quorum: the checkpoint signature(s) are checked, then the RFC 6962 inclusion proof
against the checkpoint's root. ``extra`` is not authenticated and is returned to the caller as opaque data.
Parsing is strict: canonical decimal and base64, 32-byte hashes, at most 63 proof lines (a tree of 2**63
leaves), and the checkpoint must itself be a well-formed note.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from gateway.audit.note import Note, NoteVerifier, decode_base64
from gateway.audit.witness import check_cosignatures, raise_invalid_cosignatures, verify_cosigned
from gateway.errors import GatewayError, Reason

__all__ = [
    "PROOF_HEADER",
    "InclusionSource",
    "TlogProof",
    "VerifiedProof",
    "create_proof",
    "verify_proof",
]

PROOF_HEADER: Final = "c2sp.org/tlog-proof@v1"
_MAX_PROOF_HASHES: Final = 63
_DECIMAL: Final = re.compile(r"^(0|[1-9][0-9]*)$")


class InclusionSource(Protocol):
    """A log that gives leaf hashes and inclusion proofs, e.g. :class:`gateway.audit.tiles.TileLog`."""

    def leaf_hash(self, index: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed, *unverified* receipt."""

    index: int
    inclusion: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(value).decode("ascii") for value in self.inclusion)
        return "".join(line + "\n" for line in lines).encode() + b"\n" + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        head, separator, checkpoint = data.partition(b"\n\n")
        if not separator:
            raise GatewayError(Reason.PROOF_MALFORMED, "no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise GatewayError(Reason.PROOF_MALFORMED, "proof header lines are not ASCII") from exc
        if lines[0] != PROOF_HEADER:
            raise GatewayError(Reason.PROOF_MALFORMED, f"first line is not {PROOF_HEADER}")
        position = 1
        extra: bytes | None = None
        if position < len(lines) and lines[position].startswith("extra "):
            extra = decode_base64(lines[position].removeprefix("extra "))
            if extra is None:
                raise GatewayError(Reason.PROOF_MALFORMED, "extra data is not canonical base64")
            position += 1
        if position >= len(lines) or not lines[position].startswith("index "):
            raise GatewayError(Reason.PROOF_MALFORMED, "missing 'index <n>' line")
        index_text = lines[position].removeprefix("index ")
        if not _DECIMAL.fullmatch(index_text) or int(index_text) >= 1 << 64:
            raise GatewayError(Reason.PROOF_MALFORMED, "index is not a canonical decimal uint64")
        hashes: list[bytes] = []
        for line in lines[position + 1 :]:
            value = decode_base64(line)
            if value is None or len(value) != HASH_SIZE:
                raise GatewayError(
                    Reason.PROOF_MALFORMED, "inclusion proof line is not a base64 SHA-256 hash"
                )
            hashes.append(value)
        if len(hashes) > _MAX_PROOF_HASHES:
            raise GatewayError(Reason.PROOF_MALFORMED, f"more than {_MAX_PROOF_HASHES} proof hashes")
        Note.parse(checkpoint)  # the checkpoint must be a well-formed signed note (verified later)
        return cls(int(index_text), tuple(hashes), checkpoint, extra)


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """The outcome of a successful :func:`verify_proof`."""

    index: int
    checkpoint: Checkpoint
    #: Opaque and NOT authenticated by the proof.
    extra: bytes | None
    #: (cosigner name, timestamp) of the cosignatures that counted (empty when no quorum was asked for).
    cosignatures: tuple[tuple[str, int], ...]


def create_proof(
    log: InclusionSource, index: int, signed_checkpoint: bytes, *, extra: bytes | None = None
) -> bytes:
    """A receipt for leaf ``index`` against ``signed_checkpoint`` (a note of this log, any size >= index+1).

    The checkpoint's signatures are not checked here (the caller produced or fetched it), but the proof is:
    a receipt that would not verify against the checkpoint's own root is never issued.
    """
    checkpoint = Checkpoint.parse(Note.parse(signed_checkpoint).text)
    inclusion = log.inclusion_proof(index, checkpoint.size)
    if not verify_inclusion(log.leaf_hash(index), index, checkpoint.size, inclusion, checkpoint.root_hash):
        raise GatewayError(Reason.PROOF_INCLUSION_FAILED, "the log does not reproduce the checkpoint's root")
    return TlogProof(index, tuple(inclusion), signed_checkpoint, extra).to_bytes()


def verify_proof(
    data: bytes,
    *,
    origin: str,
    log_verifiers: Iterable[NoteVerifier],
    entry: bytes | None = None,
    leaf: bytes | None = None,
    cosigners: Sequence[NoteVerifier] = (),
    quorum: int = 0,
    now: int | None = None,
) -> VerifiedProof:
    """Verify a receipt offline for ``entry`` (leaf data) or ``leaf`` (its leaf hash): exactly one of them.

    The checkpoint must be signed by one of ``log_verifiers`` and be of ``origin``; with ``quorum > 0`` it
    must also carry that many valid cosignatures from ``cosigners``; whatever the quorum, a line by one of
    the ``cosigners`` that does not verify rejects it (``COSIGN_SIGNATURE_INVALID``, as the auditor reports
    it). Raises ``GatewayError`` otherwise.
    """
    if (entry is None) == (leaf is None):
        raise GatewayError(Reason.PROOF_MALFORMED, "give exactly one of entry or leaf")
    target = leaf_hash(entry) if entry is not None else leaf
    assert target is not None  # noqa: S101 - guaranteed by the check above
    proof = TlogProof.parse(data)
    log_keys = tuple(log_verifiers)
    cosignatures: tuple[tuple[str, int], ...] = ()
    if quorum > 0:
        cosigned = verify_cosigned(
            proof.checkpoint,
            origin=origin,
            log_verifiers=log_keys,
            cosigners=cosigners,
            quorum=quorum,
            now=now,
        )
        checkpoint, cosignatures = cosigned.checkpoint, cosigned.cosignatures
    else:
        checkpoint = open_checkpoint(proof.checkpoint, origin=origin, verifiers=log_keys).checkpoint
        raise_invalid_cosignatures(check_cosignatures(proof.checkpoint, cosigners))
    if not verify_inclusion(target, proof.index, checkpoint.size, proof.inclusion, checkpoint.root_hash):
        raise GatewayError(
            Reason.PROOF_INCLUSION_FAILED,
            f"leaf {proof.index} is not proven in the tree of size {checkpoint.size}",
        )
    return VerifiedProof(proof.index, checkpoint, proof.extra, cosignatures)
