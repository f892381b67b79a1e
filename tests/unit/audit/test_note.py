"""Signed notes: the reference implementation's vectors, the C2SP examples, round trips and rejections.

Vectors: ``vectors/signed-note.json`` (golang.org/x/mod/sumdb/note tests and the C2SP documents' examples;
provenance in the file and in docs/AUDIT.md).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.audit.note import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    CosignatureV1Signer,
    CosignatureV1Verifier,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteSignature,
    VerifierKey,
    cosignature_v1_message,
    cosignature_v1_timestamp,
    key_id,
    open_note,
    sign_note,
    verifier_from_vkey,
)
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from tests.paths import VECTORS

_DOC: dict[str, Any] = json.loads((VECTORS / "signed-note.json").read_text("utf-8"))
_GO: dict[str, Any] = _DOC["go"]
_C2SP: dict[str, Any] = _DOC["c2sp"]
_TEXT: str = _GO["text"]


def _peter_seed() -> bytes:
    """The Go skey is PRIVATE+KEY+<name>+<hash>+base64(0x01 || seed); base64 may itself contain '+'."""
    raw = base64.b64decode(_GO["skey"].split("+", 4)[4])
    assert raw[0] == SIG_TYPE_ED25519
    return raw[1:]


def _peter() -> Ed25519Verifier:
    verifier = VerifierKey.parse(_GO["peter_vkey"]).verifier()
    assert isinstance(verifier, Ed25519Verifier)
    return verifier


def _enoch() -> Ed25519Verifier:
    verifier = VerifierKey.parse(_GO["enoch_vkey"]).verifier()
    assert isinstance(verifier, Ed25519Verifier)
    return verifier


def _reason(excinfo: pytest.ExceptionInfo[GatewayError]) -> Reason:
    return excinfo.value.reason


# -- the reference implementation's vectors ---------------------------------------------------------------


def test_go_signer_reproduces_the_signature_byte_for_byte() -> None:
    signer = Ed25519Signer("PeterNeumann", _peter_seed())
    assert signer.key_id == 0xC74F20A3
    assert str(signer.verifier().vkey()) == _GO["peter_vkey"]
    assert sign_note(_TEXT, [signer]) == (_TEXT + "\n" + _GO["peter_signature_line"]).encode()


def test_go_signer_from_a_gateway_signing_key() -> None:
    signer = Ed25519Signer("PeterNeumann", SigningKey.from_ed25519_seed(_peter_seed()))
    assert sign_note(_TEXT, [signer]) == (_TEXT + "\n" + _GO["peter_signature_line"]).encode()


def test_go_vkeys_parse_and_round_trip() -> None:
    for text, ident in [(_GO["peter_vkey"], 0xC74F20A3), (_GO["enoch_vkey"], 0xAF0CFE78)]:
        vkey = VerifierKey.parse(text)
        assert (vkey.sig_type, vkey.key_id, str(vkey)) == (SIG_TYPE_ED25519, ident, text)
        assert verifier_from_vkey(text).key_id == ident


def test_go_open_one_known_one_unknown() -> None:
    message = (_TEXT + "\n" + _GO["peter_signature_line"] + _GO["enoch_signature_line"]).encode()
    opened = open_note(message, [_peter()])
    assert opened.text == _TEXT
    assert [(s.name, s.key_id) for s in opened.verified] == [("PeterNeumann", 0xC74F20A3)]
    assert [(s.name, s.key_id) for s in opened.unverified] == [("EnochRoot", 0xAF0CFE78)]
    both = open_note(message, [_peter(), _enoch()])
    assert [s.name for s in both.verified] == ["PeterNeumann", "EnochRoot"]
    assert not both.unverified
    assert both.signed_by(_enoch()) is not None


def test_go_open_without_known_keys_is_unverified() -> None:
    message = (_TEXT + "\n" + _GO["peter_signature_line"] + _GO["enoch_signature_line"]).encode()
    with pytest.raises(GatewayError) as caught:
        open_note(message, [])
    assert _reason(caught) == Reason.NOTE_UNVERIFIED
    assert len(Note.parse(message).signatures) == 2


def test_go_invalid_signature_by_a_known_key_rejects_the_note() -> None:
    with pytest.raises(GatewayError) as caught:
        open_note((_TEXT + "\n" + _GO["invalid_signature_line"]).encode(), [_peter()])
    assert _reason(caught) == Reason.NOTE_SIGNATURE_INVALID


def test_go_repeated_lines_count_once() -> None:
    peter, enoch = _GO["peter_signature_line"], _GO["enoch_signature_line"]
    message = (_TEXT + "\n" + peter + peter + enoch + enoch).encode()
    opened = open_note(message, [_peter()])
    assert len(opened.verified) == 1
    assert len(opened.unverified) == 1


@pytest.mark.parametrize("index", range(6))
def test_go_malformed_messages(index: int) -> None:
    with pytest.raises(GatewayError) as caught:
        open_note(_GO["bad_messages"][index].encode(), [_peter()])
    assert _reason(caught) == Reason.NOTE_MALFORMED


def test_go_invalid_utf8_is_malformed() -> None:
    message = b"\xff" + (_TEXT + "\n" + _GO["peter_signature_line"]).encode()
    with pytest.raises(GatewayError) as caught:
        open_note(message, [_peter()])
    assert _reason(caught) == Reason.NOTE_MALFORMED


def test_go_too_many_signatures() -> None:
    message = (_TEXT + "\n" + _GO["peter_signature_line"] * 101).encode()
    with pytest.raises(GatewayError) as caught:
        open_note(message, [_peter()])
    assert _reason(caught) == Reason.NOTE_MALFORMED


@pytest.mark.parametrize("name", list(_GO["bad_vkeys"]))
def test_go_bad_vkeys(name: str) -> None:
    with pytest.raises(GatewayError) as caught:
        VerifierKey.parse(_GO["bad_vkeys"][name])
    assert _reason(caught) == Reason.NOTE_KEY_INVALID


def test_go_vkey_manglings_are_rejected() -> None:
    """As TestNewVerifier: every proper substring and every single-character increment is rejected."""
    vkey = _GO["peter_vkey"]
    for i in range(len(vkey)):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(GatewayError):
                    VerifierKey.parse(vkey[i:j])
    for i in range(len(vkey)):
        mangled = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(GatewayError):
            VerifierKey.parse(mangled)


def test_ambiguous_verifiers_are_a_configuration_error() -> None:
    message = (_TEXT + "\n" + _GO["peter_signature_line"]).encode()
    with pytest.raises(GatewayError) as caught:
        open_note(message, [_peter(), _peter()])
    assert _reason(caught) == Reason.NOTE_KEY_INVALID


# -- C2SP document examples (syntax only: their keys are not published) ------------------------------------


def test_c2sp_signed_note_example_parses() -> None:
    note = Note.parse(_C2SP["signed_note_example"].encode())
    assert note.text == _C2SP["signed_note_example_text"]  # the text may contain blank lines
    assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]
    assert note.to_bytes() == _C2SP["signed_note_example"].encode()


def test_c2sp_cosignature_example() -> None:
    note = Note.parse(_C2SP["cosigned_checkpoint_example"].encode())
    witness = note.signatures[1]
    assert witness.name == "witness.example.com/w1"
    assert len(witness.signature) == 8 + 64
    assert cosignature_v1_timestamp(witness.signature) == _C2SP["cosignature_example_timestamp"]
    message = cosignature_v1_message(note.text, _C2SP["cosignature_example_timestamp"])
    assert message == _C2SP["cosignature_example_message"].encode()


# -- round trips and rejections with our own keys ---------------------------------------------------------


def test_round_trip_with_both_signature_types() -> None:
    log = Ed25519Signer("example.org/log", SigningKey.generate())
    witness = CosignatureV1Signer("example.org/witness", SigningKey.generate(), clock=lambda: 1_700_000_000)
    signed = sign_note("hello\n\nworld\n", [log, witness])
    opened = open_note(signed, [log.verifier(), witness.verifier()])
    assert opened.text == "hello\n\nworld\n"
    assert cosignature_v1_timestamp(opened.verified[1].signature) == 1_700_000_000
    # A cosignature is not a plain Ed25519 signature over the text and vice versa (domain separation).
    cross = CosignatureV1Verifier("example.org/log", log.public_key)
    assert cross.key_id != log.key_id
    assert not cross.verify(b"hello\n\nworld\n", Note.parse(signed).signatures[0].signature)


def test_vkeys_of_both_types() -> None:
    key = SigningKey.generate()
    for vkey, sig_type in [
        (Ed25519Signer("a.example/n", key).verifier().vkey(), SIG_TYPE_ED25519),
        (CosignatureV1Signer("a.example/n", key).verifier().vkey(), SIG_TYPE_COSIGNATURE_V1),
    ]:
        parsed = VerifierKey.parse(str(vkey))
        assert parsed == vkey
        assert parsed.sig_type == sig_type
        assert parsed.key_id == key_id("a.example/n", sig_type, key.public_key.raw)
    assert str(VerifierKey.parse(_GO["peter_vkey"]).verifier().vkey()) == _GO["peter_vkey"]
    with pytest.raises(GatewayError):
        VerifierKey.parse(_GO["peter_vkey"].replace("c74f20a3", "C74F20A3"))  # canonical lowercase only


def test_tampered_body_fails() -> None:
    signer = Ed25519Signer("example.org/log", SigningKey.generate())
    signed = sign_note("size 10\n", [signer])
    with pytest.raises(GatewayError) as caught:
        open_note(signed.replace(b"size 10", b"size 11"), [signer.verifier()])
    assert _reason(caught) == Reason.NOTE_SIGNATURE_INVALID


def test_wrong_key_with_the_same_name_is_unknown() -> None:
    signer = Ed25519Signer("example.org/log", SigningKey.generate())
    other = Ed25519Signer("example.org/log", SigningKey.generate()).verifier()
    with pytest.raises(GatewayError) as caught:
        open_note(sign_note("x\n", [signer]), [other])
    assert _reason(caught) == Reason.NOTE_UNVERIFIED


def test_forged_key_id_collision_still_fails() -> None:
    """A signature line carrying the trusted name and key id but made by another key is invalid."""
    trusted = Ed25519Signer("example.org/log", SigningKey.generate())
    forger = SigningKey.generate()
    forged = NoteSignature("example.org/log", trusted.key_id, forger.sign(b"x\n"))
    with pytest.raises(GatewayError) as caught:
        open_note(Note("x\n", (forged,)).to_bytes(), [trusted.verifier()])
    assert _reason(caught) == Reason.NOTE_SIGNATURE_INVALID


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"text\n",
        b"text\n\n",
        b"text\n\n\xe2\x80\x94 name AAAAAA==\n",  # 4 bytes: a key id and no signature
        b"text\n\n- name AAAAAAAAAAAAAA==\n",  # hyphen instead of em dash
        b"text\n\n\xe2\x80\x94 name  AAAAAAAAAAAAAA==\n",  # two spaces
        b"text\n\n\xe2\x80\x94 na+me AAAAAAAAAAAAAA==\n",  # '+' in the name
        b"text\n\n\xe2\x80\x94 name AAAAAAAAAAAAAA=\n",  # not base64
        b"text\n\n\xe2\x80\x94 name AAAAAAAAAAAAAB==\n",  # non-canonical base64 (padding bits set)
        b"text\n\n\xe2\x80\x94 name AAAAAAAAAAAAAA==",  # no final newline
        b"te\rxt\n\n\xe2\x80\x94 name AAAAAAAAAAAAAA==\n",  # control character
        b"text\n\n\xe2\x80\x94 name AAAAAAAAAAAAAA==\n\n",  # trailing empty line
    ],
)
def test_malformed_notes(message: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        Note.parse(message)
    assert _reason(caught) == Reason.NOTE_MALFORMED


def test_signing_rules() -> None:
    signer = Ed25519Signer("example.org/log", SigningKey.generate())
    for text in ["no newline", "bell\a\n"]:
        with pytest.raises(GatewayError):
            sign_note(text, [signer])
    with pytest.raises(GatewayError):
        sign_note("x\n", [])
    with pytest.raises(GatewayError):
        Ed25519Signer("bad name", SigningKey.generate())
    with pytest.raises(GatewayError):
        Ed25519Signer("example.org/log", SigningKey.generate("ECDSA-P256-SHA256"))
    with pytest.raises(GatewayError):
        Ed25519Signer("example.org/log", b"short seed")
    # Re-signing replaces the signer's previous line instead of adding a second one.
    first = Note.parse(sign_note("x\n", [signer]))
    again = Note.parse(sign_note("x\n", [signer], existing=first.signatures))
    assert len(again.signatures) == 1


def test_size_limit() -> None:
    with pytest.raises(GatewayError) as caught:
        Note.parse(b"x" * (1 << 20) + b"\n\n")
    assert _reason(caught) == Reason.SIZE_EXCEEDED
