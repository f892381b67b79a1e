"""C2SP signed notes (c2sp.org/signed-note), verifier keys, and the two signature types the audit log uses.

A note is UTF-8 text ending in a newline, a blank line, then one or more lines ``— <name> <base64(key id ||
signature)>``. The key id is ``SHA-256(name || 0x0A || type || public key)[:4]`` (big-endian uint32), so the
pair (name, key id) names one key *and* one signature type. Types implemented here:

* ``0x01`` Ed25519 over the note text (c2sp.org/signed-note) — the notary's checkpoint signature;
* ``0x04`` timestamped Ed25519 cosignature/v1 (c2sp.org/tlog-cosignature), the agencies' cosignatures: the
  signature bytes are ``u64be(timestamp) || Ed25519("cosignature/v1\\ntime <timestamp>\\n" || note text)``.

Both are defined here, not in :mod:`gateway.audit.witness`, because a verifier key (vkey) string of either
type must turn into a verifier without the note layer knowing about witnesses.

Parsing is strict and follows the reference implementation (golang.org/x/mod/sumdb/note) where the spec is
silent: unknown signatures are kept but ignored, a known key whose signature fails rejects the whole note, a
note without a verified signature by a trusted key is rejected, repeated lines by one known key are verified
once. Stricter than the reference: base64 must be canonical, so a signature line has exactly one spelling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from gateway.contract.keys import ALG_ED25519, PublicKey, SigningKey
from gateway.errors import GatewayError, Reason

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "MAX_NOTE_SIGNATURES",
    "MAX_NOTE_SIZE",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_ED25519",
    "CosignatureV1Signer",
    "CosignatureV1Verifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "VerifiedNote",
    "VerifierKey",
    "cosignature_v1_message",
    "cosignature_v1_timestamp",
    "decode_base64",
    "key_id",
    "open_note",
    "sign_note",
    "valid_key_name",
    "verifier_from_vkey",
]

SIG_TYPE_ED25519: Final = 0x01
SIG_TYPE_COSIGNATURE_V1: Final = 0x04
COSIGNATURE_V1_HEADER: Final = "cosignature/v1"
#: The spec requires accepting at least 16 signatures; the reference implementation stops at 100.
MAX_NOTE_SIGNATURES: Final = 100
MAX_NOTE_SIZE: Final = 1 << 20
_SIG_PREFIX: Final = "— "  # em dash U+2014, space
_ED25519_KEY: Final = 32
_ED25519_SIG: Final = 64
_MAX_TIMESTAMP: Final = (1 << 63) - 1


def valid_key_name(name: str) -> bool:
    """Key names are non-empty and contain neither Unicode spaces, '+' nor control characters."""
    return bool(name) and not any(ch.isspace() or ch == "+" or ch < " " for ch in name)


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` as a big-endian uint32 (signed-note)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def decode_base64(text: str) -> bytes | None:
    """Standard padded base64 (RFC 4648 section 4), canonical only; ``None`` when it is anything else."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def cosignature_v1_message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: ``cosignature/v1\\ntime <t>\\n`` followed by the whole note text."""
    return f"{COSIGNATURE_V1_HEADER}\ntime {timestamp}\n{text}".encode()


def cosignature_v1_timestamp(signature: bytes) -> int | None:
    """The timestamp of a cosignature/v1 signature (the bytes after the key id), ``None`` if malformed."""
    if len(signature) != 8 + _ED25519_SIG:
        return None
    timestamp = int.from_bytes(signature[:8], "big")
    return timestamp if timestamp <= _MAX_TIMESTAMP else None


class NoteVerifier(Protocol):
    """Checks signatures by one key. ``(name, key_id)`` selects the verifier for a signature line."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True when ``signature`` (without the key id) is valid for the note text. Never raises."""
        ...


class NoteSigner(Protocol):
    """Produces signature lines for one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes:
        """The signature bytes (without the key id) over the note text."""
        ...


def _check_name(name: str) -> None:
    if not valid_key_name(name):
        raise GatewayError(Reason.NOTE_KEY_INVALID, f"invalid key name {name!r}")


def _verifier_key(name: str, public_key: bytes) -> PublicKey:
    """The checked key of an Ed25519-based verifier (plain signatures and cosignatures alike)."""
    _check_name(name)
    if len(public_key) != _ED25519_KEY:
        raise GatewayError(Reason.NOTE_KEY_INVALID, "an Ed25519 public key is 32 bytes")
    try:
        return PublicKey(ALG_ED25519, public_key)
    except GatewayError as exc:
        raise GatewayError(Reason.NOTE_KEY_INVALID, exc.detail) from exc


@dataclass(frozen=True, slots=True)
class Ed25519Verifier:
    """Signature type 0x01: plain Ed25519 over the note text."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)
    _key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _verifier_key(self.name, self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, SIG_TYPE_ED25519, self.public_key))

    def verify(self, text: bytes, signature: bytes) -> bool:
        return len(signature) == _ED25519_SIG and self._key.verify(signature, text)

    def vkey(self) -> VerifierKey:
        return VerifierKey(self.name, SIG_TYPE_ED25519, self.public_key)


@dataclass(frozen=True, slots=True)
class CosignatureV1Verifier:
    """Signature type 0x04: a timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature, Ed25519 v1)."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)
    _key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _verifier_key(self.name, self.public_key))
        object.__setattr__(self, "key_id", key_id(self.name, SIG_TYPE_COSIGNATURE_V1, self.public_key))

    def verify(self, text: bytes, signature: bytes) -> bool:
        timestamp = cosignature_v1_timestamp(signature)
        if timestamp is None:
            return False
        try:
            body = text.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self._key.verify(signature[8:], cosignature_v1_message(body, timestamp))

    def vkey(self) -> VerifierKey:
        return VerifierKey(self.name, SIG_TYPE_COSIGNATURE_V1, self.public_key)


def _ed25519_key(key: SigningKey | bytes) -> SigningKey:
    if isinstance(key, bytes):
        if len(key) != _ED25519_KEY:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "an Ed25519 seed is 32 bytes")
        key = SigningKey.from_ed25519_seed(key)
    signing = key
    if signing.alg != ALG_ED25519:
        raise GatewayError(Reason.NOTE_KEY_INVALID, f"note signatures need an Ed25519 key, not {signing.alg}")
    return signing


class Ed25519Signer:
    """Signs notes with signature type 0x01. ``key`` is a :class:`SigningKey` or a raw 32-byte seed."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, key: SigningKey | bytes) -> None:
        _check_name(name)
        self._key = _ed25519_key(key)
        self.name = name
        self.public_key = self._key.public_key.raw
        self.key_id = key_id(name, SIG_TYPE_ED25519, self.public_key)

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self.public_key)


class CosignatureV1Signer:
    """Signs notes with signature type 0x04 (cosignature/v1) at the time ``clock()`` returns (POSIX seconds).

    The Ed25519 v1 message does not commit to the cosigner name, so the spec requires one key per cosigner.
    """

    __slots__ = ("_clock", "_key", "key_id", "name", "public_key")

    def __init__(self, name: str, key: SigningKey | bytes, *, clock: Callable[[], float] = time.time) -> None:
        _check_name(name)
        self._key = _ed25519_key(key)
        self._clock = clock
        self.name = name
        self.public_key = self._key.public_key.raw
        self.key_id = key_id(name, SIG_TYPE_COSIGNATURE_V1, self.public_key)

    def sign(self, text: bytes) -> bytes:
        timestamp = int(self._clock())
        if not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise GatewayError(Reason.COSIGN_TIME_IN_FUTURE, f"timestamp {timestamp} out of range")
        message = cosignature_v1_message(text.decode("utf-8"), timestamp)
        return timestamp.to_bytes(8, "big") + self._key.sign(message)

    def verifier(self) -> CosignatureV1Verifier:
        return CosignatureV1Verifier(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A verifier key ("vkey"): ``<name>+<key id, 8 lowercase hex>+<base64(type || public key)>``.

    The format is that of golang.org/x/mod/sumdb/note (which c2sp.org/signed-note was extracted from) and is
    how tlog-cosignature says cosigner keys are shared. Types 0x01 and 0x04 with 32-byte Ed25519 keys.
    """

    name: str
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sig_type not in (SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1):
            raise GatewayError(Reason.NOTE_KEY_INVALID, f"unsupported signature type 0x{self.sig_type:02x}")
        if len(self.public_key) != _ED25519_KEY:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.sig_type, self.public_key)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "a vkey is <name>+<key id>+<base64 key>")
        name, hex_id, encoded = parts
        if len(hex_id) != 8 or any(ch not in "0123456789abcdef" for ch in hex_id):
            raise GatewayError(Reason.NOTE_KEY_INVALID, "the vkey key id is 8 lowercase hex digits")
        raw = decode_base64(encoded)
        if not raw:
            raise GatewayError(Reason.NOTE_KEY_INVALID, "the vkey key is not canonical base64")
        vkey = cls(name, raw[0], raw[1:])
        if vkey.key_id != int(hex_id, 16):
            raise GatewayError(Reason.NOTE_KEY_INVALID, f"vkey key id {hex_id} does not match its key")
        return vkey

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verifier(self) -> Ed25519Verifier | CosignatureV1Verifier:
        if self.sig_type == SIG_TYPE_ED25519:
            return Ed25519Verifier(self.name, self.public_key)
        return CosignatureV1Verifier(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, key id, and the signature bytes that follow the key id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """``— <name> <base64(key id || signature)>`` and the final newline."""
        encoded = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode("ascii")
        return f"{_SIG_PREFIX}{self.name} {encoded}\n"


def _check_text(text: str, what: str) -> None:
    if any(ch < " " and ch != "\n" for ch in text):
        raise GatewayError(Reason.NOTE_MALFORMED, f"{what} contains a control character")


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed, *unverified* note. Its text must not be used before :meth:`verify` succeeds."""

    text: str
    signatures: tuple[NoteSignature, ...]

    @classmethod
    def parse(cls, data: bytes) -> Note:
        """Strict parse of a signed note; every deviation raises ``NOTE_MALFORMED``."""
        if len(data) > MAX_NOTE_SIZE:
            raise GatewayError(Reason.SIZE_EXCEEDED, f"note larger than {MAX_NOTE_SIZE} bytes")
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GatewayError(Reason.NOTE_MALFORMED, "note is not valid UTF-8") from exc
        _check_text(message, "note")
        split = message.rfind("\n\n")
        if split < 0:
            raise GatewayError(Reason.NOTE_MALFORMED, "no blank line before the signatures")
        text, block = message[: split + 1], message[split + 2 :]
        if not block.endswith("\n"):
            raise GatewayError(Reason.NOTE_MALFORMED, "signature block missing or not newline-terminated")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_NOTE_SIGNATURES:
            raise GatewayError(Reason.NOTE_MALFORMED, f"more than {MAX_NOTE_SIGNATURES} signatures")
        signatures: list[NoteSignature] = []
        for line in lines:
            if not line.startswith(_SIG_PREFIX):
                raise GatewayError(Reason.NOTE_MALFORMED, "signature line does not start with '— '")
            name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
            raw = decode_base64(encoded) if space else None
            if raw is None or len(raw) < 5 or not valid_key_name(name):
                raise GatewayError(Reason.NOTE_MALFORMED, "malformed signature line")
            signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
        return cls(text, tuple(signatures))

    def to_bytes(self) -> bytes:
        if not self.text.endswith("\n"):
            raise GatewayError(Reason.NOTE_MALFORMED, "note text must end with a newline")
        _check_text(self.text, "note text")
        if not self.signatures:
            raise GatewayError(Reason.NOTE_MALFORMED, "a signed note needs at least one signature")
        for signature in self.signatures:
            if not valid_key_name(signature.name) or not signature.signature:
                raise GatewayError(Reason.NOTE_MALFORMED, "malformed signature")
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")

    def verify(self, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
        """Check every signature by a known key; see the module docstring for the rules."""
        known: dict[tuple[str, int], NoteVerifier] = {}
        for verifier in verifiers:
            ident = (verifier.name, verifier.key_id)
            if ident in known and known[ident] is not verifier:
                raise GatewayError(Reason.NOTE_KEY_INVALID, f"ambiguous key {ident[0]}+{ident[1]:08x}")
            known[ident] = verifier
        text = self.text.encode("utf-8")
        verified: list[NoteSignature] = []
        unverified: list[NoteSignature] = []
        for signature in self.signatures:
            match = known.get((signature.name, signature.key_id))
            if match is None:
                if signature not in unverified:
                    unverified.append(signature)
                continue
            if any((s.name, s.key_id) == (signature.name, signature.key_id) for s in verified):
                continue  # a key's first line counts; repeats are ignored (as the reference implementation)
            if not match.verify(text, signature.signature):
                raise GatewayError(
                    Reason.NOTE_SIGNATURE_INVALID,
                    f"invalid signature for key {signature.name}+{signature.key_id:08x}",
                )
            verified.append(signature)
        if not verified:
            raise GatewayError(Reason.NOTE_UNVERIFIED, "note has no signature by a trusted key")
        return VerifiedNote(self.text, tuple(verified), tuple(unverified))


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note with at least one verified signature; ``verified`` lists them in note order."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    def signed_by(self, verifier: NoteVerifier) -> NoteSignature | None:
        for signature in self.verified:
            if (signature.name, signature.key_id) == (verifier.name, verifier.key_id):
                return signature
        return None


def verifier_from_vkey(vkey: str) -> Ed25519Verifier | CosignatureV1Verifier:
    """The verifier for a vkey string (type 0x01 note signer or type 0x04 cosigner)."""
    return VerifierKey.parse(vkey).verifier()


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Parse ``data`` and verify it against the trusted ``verifiers`` (raises unless one of them signed)."""
    return Note.parse(data).verify(verifiers)


def sign_note(text: str, signers: Sequence[NoteSigner], *, existing: Sequence[NoteSignature] = ()) -> bytes:
    """Serialise ``text`` with ``existing`` signatures followed by new ones from ``signers``.

    An existing signature by the same (name, key id) as a new signer is replaced, so re-signing is idempotent.
    """
    if not signers and not existing:
        raise GatewayError(Reason.NOTE_MALFORMED, "a signed note needs at least one signature")
    if not text.endswith("\n"):
        raise GatewayError(Reason.NOTE_MALFORMED, "note text must end with a newline")
    _check_text(text, "note text")
    raw = text.encode("utf-8")
    fresh = [NoteSignature(s.name, s.key_id, s.sign(raw)) for s in signers]
    replaced = {(s.name, s.key_id) for s in fresh}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    return Note(text, (*kept, *fresh)).to_bytes()
