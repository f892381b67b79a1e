"""Cosigning checkpoints (c2sp.org/tlog-cosignature) and checking a quorum of cosignatures.

Why: a notary that shows one history to one agency and another to a second (a *split view*) cannot be caught
by either alone. Each other agency runs a :class:`Witness` (a witness in C2SP terms) that remembers, per log
origin, the last checkpoint it cosigned and cosigns a new one only with a valid consistency proof from that
one. An auditor who requires k of n agencies' cosignatures (:func:`verify_cosigned`) then knows that at least
k independent parties saw that checkpoint extend everything they had seen before: to fork, the notary would
need k colluding cosigners.

The :class:`Witness` follows the add-checkpoint semantics of c2sp.org/tlog-witness (same checks, same order;
:func:`parse_add_checkpoint` reads that request body), so an HTTP front end can be added without changing it.
Cosignatures are Ed25519 cosignature/v1 (signature type 0x04, see :mod:`gateway.audit.note`).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from gateway.audit import _fs
from gateway.audit.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from gateway.audit.merkle import HASH_SIZE, verify_consistency
from gateway.audit.note import (
    CosignatureV1Signer,
    Note,
    NoteSignature,
    NoteVerifier,
    cosignature_v1_timestamp,
    decode_base64,
    open_note,
)
from gateway.errors import GatewayError, Reason

__all__ = [
    "MAX_CONSISTENCY_PROOF",
    "CosignatureCheck",
    "CosignedCheckpoint",
    "Witness",
    "check_cosignatures",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "raise_invalid_cosignatures",
    "verify_cosigned",
]

#: tlog-witness: a client MUST NOT send more than 63 consistency proof lines.
MAX_CONSISTENCY_PROOF: Final = 63
_STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class _Cosigned:
    size: int
    root_hash: bytes
    body: str  # the checkpoint note body we cosigned, kept as evidence


class Witness:
    """A witness for one or more logs: cosigns only checkpoints consistent with what it cosigned before.

    ``logs`` maps each trusted origin to the verifiers of that log's key(s). ``state_file`` (JSON) makes the
    memory survive restarts; it is replaced atomically and durably *before* a cosignature is returned, as
    tlog-witness requires. Checking and recording happen under one lock, so concurrent requests cannot roll
    the recorded size back.
    """

    def __init__(
        self,
        signer: CosignatureV1Signer,
        logs: Mapping[str, Sequence[NoteVerifier]],
        *,
        state_file: Path | None = None,
        durable: bool = True,
    ) -> None:
        if not logs or any(not verifiers for verifiers in logs.values()):
            raise GatewayError(Reason.NOTE_KEY_INVALID, "a cosigner needs at least one key per trusted log")
        self._signer = signer
        self._logs = {origin: tuple(verifiers) for origin, verifiers in logs.items()}
        self._state_file = state_file
        self._durable = durable
        self._lock = threading.Lock()
        self._latest: dict[str, _Cosigned] = self._load() if state_file is not None else {}

    @property
    def name(self) -> str:
        return self._signer.name

    def verifier(self) -> NoteVerifier:
        """The verifier auditors configure for this cosigner (its vkey is ``str(verifier.vkey())``)."""
        return self._signer.verifier()

    def latest(self, origin: str) -> Checkpoint | None:
        """The last checkpoint cosigned for ``origin`` (``None`` before the first)."""
        with self._lock:
            record = self._latest.get(origin)
        return Checkpoint.parse(record.body) if record else None

    def latest_size(self, origin: str) -> int:
        with self._lock:
            record = self._latest.get(origin)
        return record.size if record else 0

    def add_checkpoint(self, note: bytes, *, old_size: int, proof: Sequence[bytes]) -> str:
        """Cosign ``note`` if it extends the last cosigned checkpoint; returns the cosignature line.

        Checks, in tlog-witness order: known origin (``COSIGN_UNKNOWN_LOG``), the log's signature
        (``NOTE_UNVERIFIED`` / ``NOTE_SIGNATURE_INVALID``), ``old_size <= size`` (``PROOF_RANGE``),
        ``old_size`` equals the last cosigned size (``COSIGN_SIZE_CONFLICT``; the detail names that size),
        same size means same root (``COSIGN_FORK``), and the consistency proof (``PROOF_CONSISTENCY``).
        """
        signed = self._open(note)
        checkpoint = signed.checkpoint
        if not 0 <= old_size <= checkpoint.size:
            raise GatewayError(
                Reason.PROOF_OUT_OF_RANGE, f"old size {old_size} > checkpoint size {checkpoint.size}"
            )
        if len(proof) > MAX_CONSISTENCY_PROOF:
            raise GatewayError(Reason.PROOF_MALFORMED, f"more than {MAX_CONSISTENCY_PROOF} proof hashes")
        with self._lock:
            latest = self._latest.get(checkpoint.origin)
            latest_size = latest.size if latest else 0
            if old_size != latest_size:
                raise GatewayError(
                    Reason.COSIGN_SIZE_CONFLICT, f"old size {old_size} != last cosigned size {latest_size}"
                )
            if latest is None:
                if proof:
                    raise GatewayError(Reason.PROOF_MALFORMED, "the proof from size 0 must be empty")
            elif latest.size == checkpoint.size and latest.root_hash != checkpoint.root_hash:
                raise GatewayError(
                    Reason.COSIGN_FORK, f"a different root for size {checkpoint.size} was cosigned before"
                )
            elif not verify_consistency(
                latest.size, checkpoint.size, latest.root_hash, checkpoint.root_hash, proof
            ):
                raise GatewayError(
                    Reason.PROOF_CONSISTENCY_FAILED,
                    f"size {checkpoint.size} is not proven consistent with cosigned size {latest.size}",
                )
            record = _Cosigned(checkpoint.size, checkpoint.root_hash, signed.verified.text)
            updated = {**self._latest, checkpoint.origin: record}
            if self._state_file is not None:
                self._save(updated)  # durable before the cosignature leaves this process
            self._latest = updated
            text = signed.verified.text
            signature = NoteSignature(
                self._signer.name, self._signer.key_id, self._signer.sign(text.encode())
            )
        return signature.line()

    def _open(self, note: bytes) -> SignedCheckpoint:
        # The origin decides which log keys apply, so read it before verifying (it is not trusted until then).
        body = Checkpoint.parse(Note.parse(note).text)
        verifiers = self._logs.get(body.origin)
        if verifiers is None:
            raise GatewayError(Reason.COSIGN_UNKNOWN_ORIGIN, f"unknown log origin {body.origin!r}")
        return open_checkpoint(note, origin=body.origin, verifiers=verifiers)

    def _load(self) -> dict[str, _Cosigned]:
        assert self._state_file is not None  # noqa: S101 - only called when a state file is configured
        try:
            raw = self._state_file.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise GatewayError(
                Reason.TLOG_IO_FAILED, f"cannot read {self._state_file}: {exc.strerror}"
            ) from exc
        try:
            document = json.loads(raw)
            if document["version"] != _STATE_VERSION:
                raise ValueError("version")
            latest: dict[str, _Cosigned] = {}
            for origin, item in document["logs"].items():
                checkpoint = Checkpoint.parse(item["checkpoint"])
                if checkpoint.origin != origin:
                    raise ValueError("origin")
                latest[origin] = _Cosigned(checkpoint.size, checkpoint.root_hash, item["checkpoint"])
        except (ValueError, KeyError, TypeError, AttributeError, GatewayError) as exc:
            raise GatewayError(Reason.TLOG_CORRUPT, f"{self._state_file} is malformed") from exc
        return latest

    def _save(self, latest: Mapping[str, _Cosigned]) -> None:
        document = {
            "version": _STATE_VERSION,
            "logs": {origin: {"checkpoint": record.body} for origin, record in sorted(latest.items())},
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        assert self._state_file is not None  # noqa: S101 - only called when a state file is configured
        _fs.replace_files({self._state_file: data}, durable=self._durable, mode=0o600)


@dataclass(frozen=True, slots=True)
class CosignedCheckpoint:
    """A checkpoint signed by the log and cosigned by at least a quorum of trusted cosigners."""

    checkpoint: Checkpoint
    note: bytes
    #: (cosigner name, cosignature timestamp) of every trusted cosignature that counted, in cosigner order.
    cosignatures: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CosignatureCheck:
    """What one named cosigner's line on a note says: ``valid`` (verified; ``timestamp`` is its time),
    ``invalid`` (the line is there and does not verify) or ``absent`` (no line by that key)."""

    name: str
    key_id: int
    status: Literal["valid", "invalid", "absent"]
    timestamp: int | None = None


def check_cosignatures(note: bytes | Note, cosigners: Sequence[NoteVerifier]) -> list[CosignatureCheck]:
    """Each cosigner's first line on ``note`` checked, in ``cosigners`` order (repeated lines by one key are
    ignored, as :meth:`gateway.audit.note.Note.verify` does). Never raises for a bad line: an auditor reports
    every invalid one (``cosign.signature-invalid``) whatever the quorum; :func:`verify_cosigned` refuses."""
    parsed = note if isinstance(note, Note) else Note.parse(note)
    text = parsed.text.encode("utf-8")
    checks: list[CosignatureCheck] = []
    for cosigner in cosigners:
        line = next(
            (s for s in parsed.signatures if (s.name, s.key_id) == (cosigner.name, cosigner.key_id)), None
        )
        if line is None:
            checks.append(CosignatureCheck(cosigner.name, cosigner.key_id, "absent"))
        elif not cosigner.verify(text, line.signature):
            checks.append(CosignatureCheck(cosigner.name, cosigner.key_id, "invalid"))
        else:
            timestamp = cosignature_v1_timestamp(line.signature)
            # a trusted key of another signature type: it verified, but carries no time
            checks.append(CosignatureCheck(cosigner.name, cosigner.key_id, "valid", timestamp or 0))
    return checks


def raise_invalid_cosignatures(checks: Iterable[CosignatureCheck]) -> None:
    """``GatewayError(COSIGN_SIGNATURE_INVALID)`` naming the first named cosigner whose line fails."""
    for check in checks:
        if check.status == "invalid":
            raise GatewayError(
                Reason.COSIGN_SIGNATURE_INVALID,
                f"invalid cosignature by trusted cosigner {check.name}+{check.key_id:08x}",
            )


def verify_cosigned(
    note: bytes,
    *,
    origin: str,
    log_verifiers: Iterable[NoteVerifier],
    cosigners: Sequence[NoteVerifier],
    quorum: int,
    now: int | None = None,
    max_skew: int = 300,
) -> CosignedCheckpoint:
    """Verify a checkpoint note: signed by the log, and cosigned by ``quorum`` of the ``cosigners`` (k of n).

    Unknown signatures are ignored; a failing signature by the log's key rejects the note
    (``NOTE_SIGNATURE_INVALID``), and so does one by any of the ``cosigners`` (``COSIGN_SIGNATURE_INVALID``),
    counted or not. With ``now`` (POSIX seconds), cosignatures dated more than ``max_skew`` seconds in the
    future do not count (the spec allows rejecting them) and, if that leaves the quorum unmet, the error is
    ``COSIGN_TIME``.
    """
    log_keys = tuple(log_verifiers)
    if not 1 <= quorum <= len(cosigners):
        raise GatewayError(Reason.NOTE_KEY_INVALID, f"quorum {quorum} of {len(cosigners)} cosigners")
    identities = {(v.name, v.key_id) for v in cosigners}
    if len(identities) != len(cosigners) or identities & {(v.name, v.key_id) for v in log_keys}:
        raise GatewayError(
            Reason.NOTE_KEY_INVALID, "cosigner keys must be distinct from each other and the log"
        )
    verified = open_note(note, log_keys)
    checkpoint = Checkpoint.parse(verified.text)
    if checkpoint.origin != origin:
        raise GatewayError(
            Reason.CHECKPOINT_ORIGIN_MISMATCH, f"checkpoint origin {checkpoint.origin!r} != {origin!r}"
        )
    checks = check_cosignatures(note, cosigners)
    raise_invalid_cosignatures(checks)
    counted: list[tuple[str, int]] = []
    future = 0
    for check in checks:
        if check.status != "valid":
            continue
        timestamp = check.timestamp or 0
        if now is not None and timestamp > now + max_skew:
            future += 1
            continue
        counted.append((check.name, timestamp))
    if len(counted) < quorum:
        reason = (
            Reason.COSIGN_TIME_IN_FUTURE
            if future and len(counted) + future >= quorum
            else Reason.COSIGN_QUORUM_NOT_MET
        )
        raise GatewayError(reason, f"{len(counted)} of the required {quorum} cosignatures")
    return CosignedCheckpoint(checkpoint, note, tuple(counted))


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """A tlog-witness add-checkpoint request body: ``old <size>``, proof lines, blank line, checkpoint."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return "".join(line + "\n" for line in lines).encode() + b"\n" + note


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Strictly parse a tlog-witness add-checkpoint body into ``(old_size, proof, checkpoint note)``."""
    head, separator, note = body.partition(b"\n\n")
    if not separator:
        raise GatewayError(Reason.PROOF_MALFORMED, "add-checkpoint body has no blank line")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        raise GatewayError(Reason.PROOF_MALFORMED, "add-checkpoint header is not ASCII") from exc
    first, *hash_lines = lines
    size_text = first.removeprefix("old ")
    if size_text == first or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise GatewayError(Reason.PROOF_MALFORMED, "first line must be 'old <size>'")
    if len(hash_lines) > MAX_CONSISTENCY_PROOF:
        raise GatewayError(Reason.PROOF_MALFORMED, f"more than {MAX_CONSISTENCY_PROOF} proof lines")
    proof: list[bytes] = []
    for line in hash_lines:
        value = decode_base64(line)
        if value is None or len(value) != HASH_SIZE:
            raise GatewayError(Reason.PROOF_MALFORMED, "proof line is not a base64 SHA-256 hash")
        proof.append(value)
    return int(size_text), proof, note
