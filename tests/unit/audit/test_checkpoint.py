"""Checkpoint bodies (c2sp.org/tlog-checkpoint): the spec example, strict parsing, signing and opening."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, deployment_origin, open_checkpoint, sign_checkpoint
from gateway.audit.note import Ed25519Signer, Note
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from tests.paths import VECTORS

_C2SP = json.loads((VECTORS / "signed-note.json").read_text("utf-8"))["c2sp"]
_ORIGIN = deployment_origin("sandbox")
_ROOT = merkle.root([b"a", b"b", b"c"])


def test_spec_example_body() -> None:
    note = Note.parse(_C2SP["checkpoint_example"].encode())
    checkpoint = Checkpoint.parse(note.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.to_note_body() == note.text
    assert note.signatures[0].name == checkpoint.origin  # the log's key is named after the origin


def test_origin() -> None:
    assert _ORIGIN == "id.trafficking.xchg/notary/sandbox"
    for bad in ["", "Prod", "a b", "a+b", "-x", "x/y"]:
        with pytest.raises(GatewayError):
            deployment_origin(bad)


def test_round_trip_with_extensions() -> None:
    checkpoint = Checkpoint(_ORIGIN, 3, _ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(checkpoint.to_note_body()) == checkpoint


@pytest.mark.parametrize(
    "body",
    [
        "o\n3\n{root}",  # no final newline
        "o\n3\n",  # no root
        "\n3\n{root}\n",  # empty origin
        "o\n03\n{root}\n",  # leading zero
        "o\n+3\n{root}\n",
        "o\n-1\n{root}\n",
        "o\n18446744073709551616\n{root}\n",  # 2**64
        "o\n3\n{root}x\n",
        "o\n3\n{short}\n",  # 16-byte hash
        "o\n3\n{root}\n\n",  # empty extension line
        "o\n 3\n{root}\n",
    ],
)
def test_strict_parsing(body: str) -> None:
    text = body.format(root=base64.b64encode(_ROOT).decode(), short=base64.b64encode(b"x" * 16).decode())
    with pytest.raises(GatewayError) as caught:
        Checkpoint.parse(text)
    assert caught.value.reason == Reason.CHECKPOINT_MALFORMED


def test_empty_tree_and_max_size() -> None:
    assert Checkpoint.parse(f"o\n0\n{base64.b64encode(merkle.EMPTY_ROOT).decode()}\n").size == 0
    big = Checkpoint.parse(f"o\n18446744073709551615\n{base64.b64encode(_ROOT).decode()}\n")
    assert big.size == 2**64 - 1


def test_sign_and_open() -> None:
    signer = Ed25519Signer(_ORIGIN, SigningKey.generate())
    note = sign_checkpoint(Checkpoint(_ORIGIN, 3, _ROOT), [signer])
    opened = open_checkpoint(note, origin=_ORIGIN, verifiers=[signer.verifier()])
    assert (opened.checkpoint.size, opened.checkpoint.root_hash) == (3, _ROOT)
    assert opened.note == note
    with pytest.raises(GatewayError) as caught:
        open_checkpoint(note, origin=deployment_origin("prod"), verifiers=[signer.verifier()])
    assert caught.value.reason == Reason.CHECKPOINT_ORIGIN_MISMATCH
    other = Ed25519Signer(_ORIGIN, SigningKey.generate())
    with pytest.raises(GatewayError) as caught:
        open_checkpoint(note, origin=_ORIGIN, verifiers=[other.verifier()])
    assert caught.value.reason == Reason.NOTE_UNVERIFIED


def test_a_signed_note_that_is_not_a_checkpoint() -> None:
    signer = Ed25519Signer(_ORIGIN, SigningKey.generate())
    note = Note.parse(sign_checkpoint(Checkpoint(_ORIGIN, 3, _ROOT), [signer]))
    forged = Note(f"{_ORIGIN}\nthree\n", note.signatures)
    with pytest.raises(GatewayError):  # the signature no longer matches, and the body is no checkpoint
        open_checkpoint(forged.to_bytes(), origin=_ORIGIN, verifiers=[signer.verifier()])
