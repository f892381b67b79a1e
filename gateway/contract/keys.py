"""Key material: signing keys (Ed25519 by default, ECDSA P-256 for verification), sealing keys (X25519).

Ed25519 signing and verification run on libsodium through PyNaCl (measured faster than OpenSSL for this
workload, see docs/PERFORMANCE.md); key files are PKCS#8 PEM written with ``cryptography`` so any standard
tool can read them, optionally passphrase-encrypted, always created with mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.errors import GatewayError, Reason

__all__ = [
    "ALG_ECDSA_P256",
    "ALG_ED25519",
    "ALG_X25519",
    "SIGNATURE_ALGORITHMS",
    "PublicKey",
    "SealingKey",
    "SigningKey",
    "write_private_pem",
]

ALG_ED25519: Final = "Ed25519"
ALG_ECDSA_P256: Final = "ECDSA-P256-SHA256"
ALG_X25519: Final = "X25519"  # sealing (HPKE KEM DHKEM(X25519, HKDF-SHA256))
SIGNATURE_ALGORITHMS: Final = frozenset({ALG_ED25519, ALG_ECDSA_P256})

_RAW_LENGTH: Final = {ALG_ED25519: 32, ALG_ECDSA_P256: 65, ALG_X25519: 32}


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key as it appears in the party registry: algorithm name and raw bytes.

    Ed25519 and X25519 keys are the 32 raw bytes; ECDSA P-256 keys the 65-byte uncompressed SEC1 point.
    """

    alg: str
    raw: bytes
    _verifier: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = _RAW_LENGTH.get(self.alg)
        if expected is None:
            raise GatewayError(Reason.REGISTRY_INVALID, f"unsupported key algorithm {self.alg!r}")
        if len(self.raw) != expected:
            raise GatewayError(
                Reason.REGISTRY_INVALID,
                f"{self.alg} public key must be {expected} bytes, got {len(self.raw)}",
            )
        verifier: object
        try:
            if self.alg == ALG_ED25519:
                verifier = nacl.signing.VerifyKey(self.raw)
            elif self.alg == ALG_ECDSA_P256:
                verifier = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
            else:
                verifier = x25519.X25519PublicKey.from_public_bytes(self.raw)
        except (ValueError, nacl.exceptions.CryptoError) as exc:
            raise GatewayError(
                Reason.REGISTRY_INVALID, f"{self.alg} public key is not a valid point"
            ) from exc
        object.__setattr__(self, "_verifier", verifier)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is valid for ``message``. Never raises for a bad signature.

        ECDSA signatures are accepted as raw ``r || s`` (64 bytes, as in the CloudEvents DSSE test vectors)
        or DER; sealing keys never verify anything.
        """
        verifier = self._verifier
        if isinstance(verifier, nacl.signing.VerifyKey):
            try:
                verifier.verify(message, signature)
            except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
                return False
            return True
        if isinstance(verifier, ec.EllipticCurvePublicKey):
            candidates = [signature]
            if len(signature) == 64:  # raw r || s; tried after DER, which can also be 64 bytes long
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                candidates.append(encode_dss_signature(r, s))
            for der in candidates:
                try:
                    verifier.verify(der, message, ec.ECDSA(hashes.SHA256()))
                except (InvalidSignature, ValueError):
                    continue
                return True
            return False
        return False

    def x25519(self) -> x25519.X25519PublicKey:
        if not isinstance(self._verifier, x25519.X25519PublicKey):
            raise GatewayError(Reason.KEY_WRONG_USE, f"{self.alg} key cannot be used for sealing")
        return self._verifier


class SigningKey:
    """A private signing key. Ed25519 signs through libsodium; ECDSA P-256 through OpenSSL."""

    __slots__ = ("_ecdsa", "_nacl", "alg", "public_key")

    def __init__(
        self,
        *,
        nacl_key: nacl.signing.SigningKey | None = None,
        ecdsa_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self._nacl = nacl_key
        self._ecdsa = ecdsa_key
        if nacl_key is not None:
            self.alg = ALG_ED25519
            self.public_key = PublicKey(ALG_ED25519, bytes(nacl_key.verify_key))
        elif ecdsa_key is not None:
            self.alg = ALG_ECDSA_P256
            raw = ecdsa_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            self.public_key = PublicKey(ALG_ECDSA_P256, raw)
        else:
            raise ValueError("SigningKey needs a key")

    @classmethod
    def generate(cls, alg: str = ALG_ED25519) -> SigningKey:
        if alg == ALG_ED25519:
            return cls(nacl_key=nacl.signing.SigningKey.generate())
        if alg == ALG_ECDSA_P256:
            return cls(ecdsa_key=ec.generate_private_key(ec.SECP256R1()))
        raise GatewayError(Reason.KEYFILE_INVALID, f"unsupported signing algorithm {alg!r}")

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> SigningKey:
        return cls(nacl_key=nacl.signing.SigningKey(seed))

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SigningKey:
        key = _load_private_pem(data, passphrase)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls.from_ed25519_seed(key.private_bytes_raw())
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(ecdsa_key=key)
        raise GatewayError(Reason.KEYFILE_INVALID, "key file does not hold an Ed25519 or P-256 private key")

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> SigningKey:
        return cls.from_pem(_read_key_file(path), passphrase)

    def sign(self, message: bytes) -> bytes:
        if self._nacl is not None:
            return bytes(self._nacl.sign(message).signature)
        assert self._ecdsa is not None  # noqa: S101 - constructor guarantees exactly one key is set
        return self._ecdsa.sign(message, ec.ECDSA(hashes.SHA256()))

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
        if self._nacl is not None:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(self._nacl))
        else:
            assert self._ecdsa is not None  # noqa: S101 - constructor guarantees exactly one key is set
            key = self._ecdsa
        return _private_pem(key, passphrase)


class SealingKey:
    """A private X25519 key that opens sealed blocks addressed to its party (HPKE base mode)."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: x25519.X25519PrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(ALG_X25519, key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(x25519.X25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SealingKey:
        key = _load_private_pem(data, passphrase)
        if not isinstance(key, x25519.X25519PrivateKey):
            raise GatewayError(Reason.KEYFILE_INVALID, "key file does not hold an X25519 private key")
        return cls(key)

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> SealingKey:
        return cls.from_pem(_read_key_file(path), passphrase)

    @property
    def private(self) -> x25519.X25519PrivateKey:
        return self._key

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        return _private_pem(self._key, passphrase)


def _private_pem(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey,
    passphrase: bytes | None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _load_private_pem(data: bytes, passphrase: bytes | None) -> object:
    try:
        return serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:  # encrypted without passphrase, or passphrase for an unencrypted key
        raise GatewayError(Reason.KEYFILE_INVALID, f"key file passphrase problem: {exc}") from exc
    except ValueError as exc:
        raise GatewayError(Reason.KEYFILE_INVALID, "key file is not a readable PKCS#8 PEM key") from exc


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GatewayError(Reason.KEYFILE_INVALID, f"cannot read key file {path}: {exc.strerror}") from exc


def write_private_pem(path: Path, pem: bytes) -> None:
    """Write a private key file readable by its owner only (0600), refusing to overwrite an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise GatewayError(Reason.KEYFILE_INVALID, f"{path} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)  # the umask cannot widen it, but be explicit about the contract
