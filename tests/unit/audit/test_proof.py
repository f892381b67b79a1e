"""Inclusion receipts in the c2sp.org/tlog-proof@v1 format: created from a tile log, verified offline."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, deployment_origin, sign_checkpoint
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer, Note
from gateway.audit.proof import PROOF_HEADER, TlogProof, create_proof, verify_proof
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from tests.paths import VECTORS

_ORIGIN = deployment_origin("sandbox")
_NOTARY = Ed25519Signer(_ORIGIN, SigningKey.generate())
_EXAMPLE = json.loads((VECTORS / "signed-note.json").read_text("utf-8"))["c2sp"]


def _entry(i: int) -> bytes:
    return b"record-%d" % i


@pytest.fixture
def log(tmp_path: Path) -> Iterator[TileLog]:
    with TileLog.open(tmp_path / "log", durable=False) as opened:
        opened.append([_entry(i) for i in range(1000)])
        yield opened


def _signed(log: TileLog, size: int | None = None) -> bytes:
    tree = log.size if size is None else size
    return sign_checkpoint(Checkpoint(_ORIGIN, tree, log.root_at(tree)), [_NOTARY])


def test_create_and_verify(log: TileLog) -> None:
    checkpoint = _signed(log)
    for index in (0, 1, 255, 256, 999):
        receipt = create_proof(log, index, checkpoint, extra=b"topic=xchg.kemensos.case.v1")
        text = receipt.decode()
        assert text.startswith(f"{PROOF_HEADER}\nextra ")
        assert f"\nindex {index}\n" in text
        assert receipt.endswith(checkpoint)  # the checkpoint is carried verbatim
        verified = verify_proof(
            receipt, origin=_ORIGIN, log_verifiers=[_NOTARY.verifier()], entry=_entry(index)
        )
        assert (verified.index, verified.checkpoint.size) == (index, 1000)
        assert verified.extra == b"topic=xchg.kemensos.case.v1"
        by_hash = verify_proof(
            receipt, origin=_ORIGIN, log_verifiers=[_NOTARY.verifier()], leaf=merkle.leaf_hash(_entry(index))
        )
        assert by_hash.index == index


def test_older_checkpoint_and_no_extra(log: TileLog) -> None:
    receipt = create_proof(log, 5, _signed(log, 6))
    assert b"extra" not in receipt
    parsed = TlogProof.parse(receipt)
    assert (parsed.index, len(parsed.inclusion), parsed.extra) == (5, 2, None)
    assert TlogProof.parse(parsed.to_bytes()) == parsed
    verify_proof(receipt, origin=_ORIGIN, log_verifiers=[_NOTARY.verifier()], entry=_entry(5))
    with pytest.raises(GatewayError):
        create_proof(log, 6, _signed(log, 6))  # not in that tree


def test_a_checkpoint_the_log_does_not_match_is_never_receipted(log: TileLog) -> None:
    wrong = sign_checkpoint(Checkpoint(_ORIGIN, 1000, merkle.root([b"other"])), [_NOTARY])
    with pytest.raises(GatewayError) as caught:
        create_proof(log, 3, wrong)
    assert caught.value.reason == Reason.PROOF_INCLUSION_FAILED


def test_tampering_is_detected(log: TileLog) -> None:
    receipt = create_proof(log, 300, _signed(log))
    keys = {"origin": _ORIGIN, "log_verifiers": [_NOTARY.verifier()]}
    with pytest.raises(GatewayError) as caught:
        verify_proof(receipt, entry=_entry(301), **keys)  # type: ignore[arg-type]
    assert caught.value.reason == Reason.PROOF_INCLUSION_FAILED
    moved = receipt.replace(b"index 300\n", b"index 301\n")
    with pytest.raises(GatewayError):
        verify_proof(moved, entry=_entry(300), **keys)  # type: ignore[arg-type]
    parsed = TlogProof.parse(receipt)
    flipped = bytes([parsed.inclusion[0][0] ^ 1]) + parsed.inclusion[0][1:]
    bad = TlogProof(300, (flipped, *parsed.inclusion[1:]), parsed.checkpoint).to_bytes()
    with pytest.raises(GatewayError):
        verify_proof(bad, entry=_entry(300), **keys)  # type: ignore[arg-type]
    other_tree = sign_checkpoint(Checkpoint(_ORIGIN, 1000, merkle.root([b"x"])), [_NOTARY])
    swapped = TlogProof(300, parsed.inclusion, other_tree).to_bytes()
    with pytest.raises(GatewayError):
        verify_proof(swapped, entry=_entry(300), **keys)  # type: ignore[arg-type]
    forged_note = receipt.replace(b"\n1000\n", b"\n1001\n")
    with pytest.raises(GatewayError) as caught:
        verify_proof(forged_note, entry=_entry(300), **keys)  # type: ignore[arg-type]
    assert caught.value.reason == Reason.NOTE_SIGNATURE_INVALID


def test_wrong_key_or_origin(log: TileLog) -> None:
    receipt = create_proof(log, 1, _signed(log))
    impostor = Ed25519Signer(_ORIGIN, SigningKey.generate())
    with pytest.raises(GatewayError) as caught:
        verify_proof(receipt, origin=_ORIGIN, log_verifiers=[impostor.verifier()], entry=_entry(1))
    assert caught.value.reason == Reason.NOTE_UNVERIFIED
    with pytest.raises(GatewayError) as caught:
        verify_proof(
            receipt, origin=deployment_origin("prod"), log_verifiers=[_NOTARY.verifier()], entry=_entry(1)
        )
    assert caught.value.reason == Reason.CHECKPOINT_ORIGIN_MISMATCH
    with pytest.raises(GatewayError):
        verify_proof(receipt, origin=_ORIGIN, log_verifiers=[_NOTARY.verifier()])  # neither entry nor leaf


def test_with_a_cosigner_quorum(log: TileLog) -> None:
    witnesses = [
        Witness(
            CosignatureV1Signer(
                f"agency{i}.example/witness", SigningKey.generate(), clock=lambda: 1_800_000_000
            ),
            {_ORIGIN: [_NOTARY.verifier()]},
        )
        for i in range(3)
    ]
    note = _signed(log)
    cosigned = note + "".join(w.add_checkpoint(note, old_size=0, proof=[]) for w in witnesses[:2]).encode()
    receipt = create_proof(log, 7, cosigned)
    keys = [w.verifier() for w in witnesses]
    result = verify_proof(
        receipt, origin=_ORIGIN, log_verifiers=[_NOTARY.verifier()], entry=_entry(7), cosigners=keys, quorum=2
    )
    assert [name for name, _ in result.cosignatures] == ["agency0.example/witness", "agency1.example/witness"]
    with pytest.raises(GatewayError) as caught:
        verify_proof(
            receipt,
            origin=_ORIGIN,
            log_verifiers=[_NOTARY.verifier()],
            entry=_entry(7),
            cosigners=keys,
            quorum=3,
        )
    assert caught.value.reason == Reason.COSIGN_QUORUM_NOT_MET


_HASH64 = base64.b64encode(bytes(64)).decode()


@pytest.mark.parametrize(
    "text",
    [
        # transparency-dev/merkle proof/tlog_proof_test.go TestVerifyTLogProofErrors (checkpoint "checkpoint")
        "wrong-header\nindex 0\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nextra !!notbase64!!\nindex 0\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\n\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex notanumber\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex -5\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n!!notbase64!!\n\ncheckpoint\n",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{_HASH64}\n\ncheckpoint\n",
        # ours
        "c2sp.org/tlog-proof@v1\nindex 01\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n",
        "c2sp.org/tlog-proof@v1\nindex 0\n\nnot a signed note\n",
        "c2sp.org/tlog-proof@v1\nindex 0\nextra AAAA\n\ncheckpoint\n",
        "c2sp.org/tlog-proof@v2\nindex 0\n\ncheckpoint\n",
    ],
)
def test_malformed_receipts(text: str) -> None:
    with pytest.raises(GatewayError):
        TlogProof.parse(text.encode())


def test_too_many_proof_lines(log: TileLog) -> None:
    receipt = TlogProof.parse(create_proof(log, 1, _signed(log)))
    long = TlogProof(1, tuple([receipt.inclusion[0]] * 64), receipt.checkpoint).to_bytes()
    with pytest.raises(GatewayError) as caught:
        TlogProof.parse(long)
    assert caught.value.reason == Reason.PROOF_MALFORMED


def test_spec_example() -> None:
    """The document's example parses up to its checkpoint, whose signatures are elided ('[...]')."""
    example = _EXAMPLE["tlog_proof_example"].encode()
    with pytest.raises(GatewayError) as caught:
        TlogProof.parse(example)
    assert caught.value.reason == Reason.NOTE_MALFORMED
    head, _, checkpoint_text = example.partition(b"\n\n")
    body = checkpoint_text.partition(b"\n\n")[0] + b"\n"
    stand_in = sign_checkpoint(
        Checkpoint.parse(body.decode()), [Ed25519Signer("example.com/fancylog", b"k" * 32)]
    )
    parsed = TlogProof.parse(head + b"\n\n" + stand_in)
    assert parsed.index == 73894
    assert len(parsed.inclusion) == 5
    assert parsed.extra is not None
    assert parsed.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert Checkpoint.parse(Note.parse(parsed.checkpoint).text).size == 109482
