"""Cosigning: a witness cosigns consistent growth only, persists what it cosigned, and refuses forks; an
auditor checks a k-of-n quorum of cosignatures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, deployment_origin, sign_checkpoint
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer, Note, NoteSignature
from gateway.audit.witness import (
    CosignedCheckpoint,
    Witness,
    format_add_checkpoint,
    parse_add_checkpoint,
    verify_cosigned,
)
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from tests.paths import VECTORS
from tests.unit.audit._reference import ListTree

_ORIGIN = deployment_origin("sandbox")
_NOW = 1_800_000_000
_HONEST = ListTree([b"record-%d" % i for i in range(64)])
_FORKED = ListTree([*_HONEST.entries[:9], b"forged", *_HONEST.entries[10:]])
_LOG = Ed25519Signer(_ORIGIN, SigningKey.generate())


def _root(tree: ListTree, size: int) -> bytes:
    return merkle.root(tree.entries[:size])


def _checkpoint(size: int, tree: ListTree = _HONEST, signer: Ed25519Signer = _LOG) -> bytes:
    return sign_checkpoint(Checkpoint(_ORIGIN, size, _root(tree, size)), [signer])


def _proof(m: int, n: int, tree: ListTree = _HONEST) -> list[bytes]:
    return merkle.consistency_proof(m, n, tree.hash_at)


def _witness(name: str = "kemlu.example/witness", state: Path | None = None) -> Witness:
    signer = CosignatureV1Signer(name, SigningKey.generate(), clock=lambda: _NOW)
    return Witness(signer, {_ORIGIN: [_LOG.verifier()]}, state_file=state)


def _reason(excinfo: pytest.ExceptionInfo[GatewayError]) -> object:
    return excinfo.value.reason


def test_consistent_growth_is_cosigned() -> None:
    witness = _witness()
    assert witness.latest(_ORIGIN) is None
    line = witness.add_checkpoint(_checkpoint(10), old_size=0, proof=[])
    note = _checkpoint(10) + line.encode()
    cosigned = verify_cosigned(
        note, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=[witness.verifier()], quorum=1
    )
    assert cosigned.cosignatures == ((witness.name, _NOW),)
    for old, new in [(10, 10), (10, 17), (17, 32), (32, 64)]:
        witness.add_checkpoint(_checkpoint(new), old_size=old, proof=_proof(old, new))
        assert witness.latest_size(_ORIGIN) == new
    latest = witness.latest(_ORIGIN)
    assert latest is not None
    assert latest.root_hash == _root(_HONEST, 64)


def test_fork_with_the_same_size_is_refused() -> None:
    witness = _witness()
    witness.add_checkpoint(_checkpoint(20), old_size=0, proof=[])
    with pytest.raises(GatewayError) as caught:
        witness.add_checkpoint(_checkpoint(20, _FORKED), old_size=20, proof=[])
    assert _reason(caught) == Reason.COSIGN_FORK
    assert witness.latest_size(_ORIGIN) == 20


def test_inconsistent_larger_checkpoint_is_refused() -> None:
    witness = _witness()
    witness.add_checkpoint(_checkpoint(20), old_size=0, proof=[])
    for proof in (_proof(20, 40, _FORKED), _proof(20, 40), []):
        with pytest.raises(GatewayError) as caught:
            witness.add_checkpoint(_checkpoint(40, _FORKED), old_size=20, proof=proof)
        assert _reason(caught) == Reason.PROOF_CONSISTENCY_FAILED
    assert witness.latest(_ORIGIN) == Checkpoint(_ORIGIN, 20, _root(_HONEST, 20))


def test_rollback_and_stale_old_size_are_refused() -> None:
    witness = _witness()
    witness.add_checkpoint(_checkpoint(30), old_size=0, proof=[])
    with pytest.raises(GatewayError) as caught:
        witness.add_checkpoint(_checkpoint(20), old_size=30, proof=[])
    assert _reason(caught) == Reason.PROOF_OUT_OF_RANGE
    with pytest.raises(GatewayError) as caught:
        witness.add_checkpoint(_checkpoint(40), old_size=20, proof=_proof(20, 40))
    assert _reason(caught) == Reason.COSIGN_SIZE_CONFLICT
    assert "30" in caught.value.detail  # the log learns the size to prove from


def test_only_known_logs_with_valid_signatures() -> None:
    witness = _witness()
    stranger = Ed25519Signer(_ORIGIN, SigningKey.generate())
    with pytest.raises(GatewayError) as caught:
        witness.add_checkpoint(_checkpoint(5, signer=stranger), old_size=0, proof=[])
    assert _reason(caught) == Reason.NOTE_UNVERIFIED
    other_origin = deployment_origin("other")
    other = Ed25519Signer(other_origin, SigningKey.generate())
    note = sign_checkpoint(Checkpoint(other_origin, 5, _root(_HONEST, 5)), [other])
    with pytest.raises(GatewayError) as caught:
        witness.add_checkpoint(note, old_size=0, proof=[])
    assert _reason(caught) == Reason.COSIGN_UNKNOWN_ORIGIN
    with pytest.raises(GatewayError):
        witness.add_checkpoint(_checkpoint(5), old_size=0, proof=[b"\x00" * 32])  # must be empty from 0
    assert witness.latest(_ORIGIN) is None


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "witness.json"
    key = SigningKey.generate()
    signer = CosignatureV1Signer("kemlu.example/witness", key, clock=lambda: _NOW)
    first = Witness(signer, {_ORIGIN: [_LOG.verifier()]}, state_file=state)
    first.add_checkpoint(_checkpoint(20), old_size=0, proof=[])
    assert json.loads(state.read_text())["logs"][_ORIGIN]["checkpoint"].startswith(_ORIGIN + "\n20\n")
    second = Witness(signer, {_ORIGIN: [_LOG.verifier()]}, state_file=state)
    assert second.latest_size(_ORIGIN) == 20
    with pytest.raises(GatewayError):
        second.add_checkpoint(_checkpoint(20, _FORKED), old_size=20, proof=[])
    state.write_text("{not json")
    with pytest.raises(GatewayError) as caught:
        Witness(signer, {_ORIGIN: [_LOG.verifier()]}, state_file=state)
    assert _reason(caught) == Reason.TLOG_CORRUPT


def _cosigned(size: int, witnesses: list[Witness]) -> bytes:
    note = _checkpoint(size)
    lines = "".join(w.add_checkpoint(note, old_size=0, proof=[]) for w in witnesses)
    return note + lines.encode()


def test_quorum_k_of_n() -> None:
    witnesses = [_witness(f"agency{i}.example/witness") for i in range(3)]
    keys = [w.verifier() for w in witnesses]
    note = _cosigned(12, witnesses[:2])

    def check(data: bytes, quorum: int) -> CosignedCheckpoint:
        return verify_cosigned(
            data, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=keys, quorum=quorum
        )

    assert len(check(note, 2).cosignatures) == 2
    with pytest.raises(GatewayError) as caught:
        check(note, 3)
    assert _reason(caught) == Reason.COSIGN_QUORUM_NOT_MET
    # The same cosignature twice counts once.
    doubled = note + Note.parse(note).signatures[-1].line().encode()
    with pytest.raises(GatewayError):
        check(doubled, 3)
    with pytest.raises(GatewayError):
        check(note, 0)
    with pytest.raises(GatewayError):
        check(note, 4)


def test_quorum_needs_the_log_signature_and_valid_cosignatures() -> None:
    witnesses = [_witness(f"agency{i}.example/witness") for i in range(2)]
    keys = [w.verifier() for w in witnesses]
    note = _cosigned(12, witnesses)
    parsed = Note.parse(note)
    without_log = Note(parsed.text, parsed.signatures[1:]).to_bytes()
    with pytest.raises(GatewayError) as caught:
        verify_cosigned(
            without_log, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=keys, quorum=1
        )
    assert _reason(caught) == Reason.NOTE_UNVERIFIED
    bad = parsed.signatures[1]
    broken = NoteSignature(bad.name, bad.key_id, bad.signature[:8] + bytes(64))
    tampered = Note(parsed.text, (*parsed.signatures[:1], broken, *parsed.signatures[2:])).to_bytes()
    with pytest.raises(GatewayError) as caught:
        verify_cosigned(tampered, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=keys, quorum=1)
    assert _reason(caught) == Reason.COSIGN_SIGNATURE_INVALID  # one of them is valid: a bad one still fails
    # Changing the timestamp breaks the cosignature (the time is signed).
    later = NoteSignature(bad.name, bad.key_id, (_NOW + 1).to_bytes(8, "big") + bad.signature[8:])
    moved = Note(parsed.text, (*parsed.signatures[:1], later, *parsed.signatures[2:])).to_bytes()
    with pytest.raises(GatewayError):
        verify_cosigned(moved, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=keys, quorum=1)


def test_cosignatures_from_the_future() -> None:
    witnesses = [_witness(f"agency{i}.example/witness") for i in range(2)]
    note = _cosigned(12, witnesses)
    keys = [w.verifier() for w in witnesses]

    def check(now: int) -> CosignedCheckpoint:
        return verify_cosigned(
            note, origin=_ORIGIN, log_verifiers=[_LOG.verifier()], cosigners=keys, quorum=2, now=now
        )

    check(_NOW)
    with pytest.raises(GatewayError) as caught:
        check(_NOW - 3600)
    assert _reason(caught) == Reason.COSIGN_TIME_IN_FUTURE


def test_cosigner_keys_must_be_distinct() -> None:
    witness = _witness()
    note = _cosigned(3, [witness])
    with pytest.raises(GatewayError):
        verify_cosigned(
            note,
            origin=_ORIGIN,
            log_verifiers=[_LOG.verifier()],
            cosigners=[witness.verifier(), witness.verifier()],
            quorum=1,
        )


def test_add_checkpoint_wire_format() -> None:
    example = json.loads((VECTORS / "signed-note.json").read_text("utf-8"))["c2sp"]
    old, proof, note = parse_add_checkpoint(example["add_checkpoint_example"].encode())
    assert (old, len(proof)) == (20852014, 4)
    assert Note.parse(note).text.startswith("example.com/behind-the-sofa\n20852163\n")
    assert format_add_checkpoint(old, proof, note) == example["add_checkpoint_example"].encode()
    for bad in [b"old 01\n\nx", b"old x\n\nx", b"new 1\n\nx", b"old 1\nAAAA\n\nx", b"old 1\n"]:
        with pytest.raises(GatewayError):
            parse_add_checkpoint(bad)
