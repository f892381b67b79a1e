"""HPKE sealed fields, key files and the party registry."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.contract.keys import ALG_ECDSA_P256, SealingKey, SigningKey, write_private_pem
from gateway.contract.registry import Registry
from gateway.contract.seal import EventBinding, Recipient, open_sealed, seal
from gateway.errors import GatewayError, Reason
from tests.world import key_entry

BINDING = EventBinding("evt-1", "kemlu.kbri-kuching", "id.trafficking.case.referral")
SECRET = {"identity": {"prs_FirstName": "Siti", "prs_SecondName": "Contoh"}}


def _recipient(party: str, key: SealingKey, kid: str | None = None) -> Recipient:
    return Recipient(party, kid or f"{party}-seal", key.public_key)


def test_seal_opens_only_for_named_recipients() -> None:
    kemensos, iom, outsider = SealingKey.generate(), SealingKey.generate(), SealingKey.generate()
    block = seal(SECRET, BINDING, [_recipient("kemensos", kemensos), _recipient("iom", iom)])
    assert b"Siti" not in base64.b64decode(block["recipients"][0]["ct"])
    assert open_sealed(block, BINDING, "kemensos", {"kemensos-seal": kemensos}) == SECRET
    assert open_sealed(block, BINDING, "iom", {"iom-seal": iom}) == SECRET
    assert open_sealed(block, BINDING, "police", {"police-seal": outsider}) is None
    with pytest.raises(GatewayError) as caught:  # our entry, but we hold the wrong private key
        open_sealed(block, BINDING, "kemensos", {"kemensos-seal": outsider})
    assert caught.value.reason == Reason.SEAL_OPEN_FAILED


@pytest.mark.parametrize("field", ["id", "source", "type"])
def test_sealed_block_is_bound_to_the_event(field: str) -> None:
    key = SealingKey.generate()
    block = seal(SECRET, BINDING, [_recipient("kemensos", key)])
    other = EventBinding(**{"id": BINDING.id, "source": BINDING.source, "type": BINDING.type, field: "other"})
    with pytest.raises(GatewayError) as caught:
        open_sealed(block, other, "kemensos", {"kemensos-seal": key})
    assert caught.value.reason == Reason.SEAL_OPEN_FAILED


def test_ciphertext_length_hides_small_differences() -> None:
    key = SealingKey.generate()
    short = seal({"identity": {"prs_FirstName": "Ani"}}, BINDING, [_recipient("kemensos", key)])
    longer = seal({"identity": {"prs_FirstName": "Anindya Kusuma"}}, BINDING, [_recipient("kemensos", key)])
    assert len(short["recipients"][0]["ct"]) == len(longer["recipients"][0]["ct"])


def test_malformed_blocks() -> None:
    key = {"k": SealingKey.generate()}
    for block in ({"alg": "RSA"}, {"alg": "HPKE-Base-X25519-SHA256-ChaCha20Poly1305"}, "x"):
        with pytest.raises(GatewayError) as caught:
            open_sealed(block, BINDING, "kemensos", key)
        assert caught.value.reason == Reason.SEAL_MALFORMED


@pytest.mark.parametrize("alg", ["Ed25519", ALG_ECDSA_P256])
def test_signing_key_file_round_trip_with_passphrase(tmp_path: Path, alg: str) -> None:
    key = SigningKey.generate(alg)
    path = tmp_path / "k.pem"
    write_private_pem(path, key.to_pem(b"correct horse"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = SigningKey.load(path, b"correct horse")
    assert loaded.public_key == key.public_key
    assert key.public_key.verify(loaded.sign(b"msg"), b"msg")
    assert not key.public_key.verify(loaded.sign(b"msg"), b"other")
    with pytest.raises(GatewayError) as caught:
        SigningKey.load(path, b"wrong")
    assert caught.value.reason == Reason.KEYFILE_INVALID
    with pytest.raises(GatewayError):
        write_private_pem(path, b"overwrite")  # never clobbers an existing key


def _doc(*parties: dict[str, Any]) -> dict[str, Any]:
    return {"format": "xchg-registry/1", "parties": list(parties)}


def _party(party_id: str, *keys: dict[str, Any]) -> dict[str, Any]:
    return {"id": party_id, "name": party_id, "publish": [], "read": [], "keys": list(keys)}


def test_registry_refuses_a_key_shared_by_two_parties() -> None:
    key = SigningKey.generate().public_key
    document = _doc(
        _party("kemensos", key_entry("kemensos-a", "sig", key)), _party("iom", key_entry("iom-b", "sig", key))
    )
    with pytest.raises(GatewayError) as caught:
        Registry.from_mapping(document)
    assert caught.value.reason == Reason.REGISTRY_DUPLICATE_KEY
    assert "exactly one party" in caught.value.detail


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(format="v0"), "format"),
        (lambda d: d["parties"][0].update(id="Bad Id"), "not a valid party id"),
        (lambda d: d["parties"].append(dict(d["parties"][0], keys=[])), "defined twice"),
        (lambda d: d["parties"][0]["keys"][0].update(alg="RSA"), "not a signature algorithm"),
        (lambda d: d["parties"][0]["keys"][0].update(public_key="AAAA"), "must be 32 bytes"),
        (lambda d: d["parties"][0]["keys"][0].update(valid_from="2026-01-01T00:00:00"), "offset"),
        (lambda d: d["parties"][0]["keys"][0].pop("kid"), "kid"),
    ],
)
def test_registry_validation_messages(mutate: Any, fragment: str) -> None:
    document = _doc(_party("kemensos", key_entry("kemensos-k1", "sig", SigningKey.generate().public_key)))
    mutate(document)
    with pytest.raises(GatewayError) as caught:
        Registry.from_mapping(document)
    assert caught.value.reason == Reason.REGISTRY_INVALID
    assert fragment in caught.value.detail
