"""RFC 8032 section 7.1 Ed25519 test vectors against the gateway's signer and verifier.

Vectors: ``tests/data/vectors/rfc8032-ed25519.json`` (TEST 1, TEST 2, TEST 3, TEST 1024, TEST SHA(abc)); how
they were obtained and cross-checked is recorded in the file's ``provenance`` and in ``docs/VECTORS.md``.
Ed25519 is deterministic, so the gateway's signer must reproduce every signature byte for byte; its verifier
must accept them and reject any one-bit change of signature, message or public key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.contract.keys import PublicKey, SigningKey
from gateway.errors import GatewayError
from tests.paths import VECTORS

_DOC: dict[str, Any] = json.loads((VECTORS / "rfc8032-ed25519.json").read_text(encoding="utf-8"))
_VECTORS = {vector["name"]: vector for vector in _DOC["vectors"]}
_NAMES = list(_VECTORS)


def _bytes(name: str, field: str) -> bytes:
    return bytes.fromhex(_VECTORS[name][field])


def _flip(data: bytes, bit: int) -> bytes:
    mutable = bytearray(data)
    mutable[bit // 8] ^= 1 << (bit % 8)
    return bytes(mutable)


def test_all_section_7_1_vectors_present() -> None:
    assert _NAMES == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    for vector in _DOC["vectors"]:
        assert len(bytes.fromhex(vector["message"])) == vector["message_length"]
    assert _bytes("TEST SHA(abc)", "message") == hashlib.sha512(b"abc").digest()
    assert len(_bytes("TEST 1024", "message")) == 1023


@pytest.mark.parametrize("name", _NAMES)
def test_public_key_from_secret(name: str) -> None:
    key = SigningKey.from_ed25519_seed(_bytes(name, "secret_key"))
    assert key.alg == "Ed25519"
    assert key.public_key == PublicKey("Ed25519", _bytes(name, "public_key"))


@pytest.mark.parametrize("name", _NAMES)
def test_signer_reproduces_the_signature(name: str) -> None:
    key = SigningKey.from_ed25519_seed(_bytes(name, "secret_key"))
    assert key.sign(_bytes(name, "message")) == _bytes(name, "signature")


@pytest.mark.parametrize("name", _NAMES)
def test_verifier_accepts_the_signature(name: str) -> None:
    public = PublicKey("Ed25519", _bytes(name, "public_key"))
    assert public.verify(_bytes(name, "signature"), _bytes(name, "message"))


@pytest.mark.parametrize("name", _NAMES)
def test_verifier_rejects_modified_signatures(name: str) -> None:
    public = PublicKey("Ed25519", _bytes(name, "public_key"))
    signature = _bytes(name, "signature")
    message = _bytes(name, "message")
    for bit in range(0, 512, 7):  # R and S halves, every byte touched at least once
        assert not public.verify(_flip(signature, bit), message), f"signature bit {bit}"
    assert not public.verify(signature[:-1], message)
    assert not public.verify(signature + b"\x00", message)
    assert not public.verify(b"", message)


@pytest.mark.parametrize("name", _NAMES)
def test_verifier_rejects_modified_messages(name: str) -> None:
    public = PublicKey("Ed25519", _bytes(name, "public_key"))
    signature = _bytes(name, "signature")
    message = _bytes(name, "message")
    assert not public.verify(signature, message + b"\x00")
    if message:
        for bit in {0, len(message) * 4, len(message) * 8 - 1}:
            assert not public.verify(signature, _flip(message, bit)), f"message bit {bit}"
        assert not public.verify(signature, message[:-1])


@pytest.mark.parametrize("name", _NAMES)
def test_verifier_rejects_other_keys(name: str) -> None:
    signature = _bytes(name, "signature")
    message = _bytes(name, "message")
    for other in _NAMES:
        if other != name:
            assert not PublicKey("Ed25519", _bytes(other, "public_key")).verify(signature, message)
    for bit in (0, 100, 254):  # bit 255 is the sign of x; flipping it may still decode
        try:
            flipped = PublicKey("Ed25519", _flip(_bytes(name, "public_key"), bit))
        except GatewayError:
            continue  # not a valid point: refused when the key is loaded
        assert not flipped.verify(signature, message), f"public key bit {bit}"


@pytest.mark.parametrize("name", _NAMES)
def test_openssl_agrees(name: str) -> None:
    """A second implementation (pyca/cryptography, OpenSSL) gives the same bytes: the file is consistent."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(_bytes(name, "secret_key"))
    assert private.public_key().public_bytes_raw() == _bytes(name, "public_key")
    assert private.sign(_bytes(name, "message")) == _bytes(name, "signature")


def test_signer_round_trip_on_fresh_key() -> None:
    key = SigningKey.generate()
    message = b"DSSEv1 46 https://cloudevents.io/verifiability/dsse/v0.1 32 " + bytes(32)
    signature = key.sign(message)
    assert len(signature) == 64
    assert key.public_key.verify(signature, message)
    assert not key.public_key.verify(signature, message[:-1] + b"\x01")
