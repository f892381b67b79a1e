"""Tests of the independent verifier (``tests/independent/verify_ce_dsse.py``).

1. The spec's own vectors: every one whose digest we can reproduce verifies end to end (steps 1-11) - case 5
   under our JCS profile, cases 1, 3, 4 (2-space spec text) and 6a, 6b, 7 (current text) under the raw-text
   data rule; under the JCS profile the JSON cases fail at step 10 exactly (signature fine, digest differs).
   Case 2 fails at step 6 (legacy payloadType), case 8 at step 8 (signedextattrs format).
2. Events signed here with ``cryptography`` alone (Ed25519, ECDSA raw and DER), tampered one field at a time:
   each change is discarded at the step the spec assigns to it.
3. Cross-checks with the gateway: same verification material for random events, and events signed with the
   gateway's DSSE and key code verify independently.
4. The CLI, and that the verifier imports nothing from ``gateway``.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.independent import verify_ce_dsse as independent
from tests.independent.verify_ce_dsse import (
    PAYLOAD_TYPE,
    Result,
    main,
    pae,
    verification_material,
    verify,
    verify_event,
)
from tests.paths import VECTORS

_VECTORS: dict[str, Any] = json.loads((VECTORS / "cloudevents-dsse.json").read_text(encoding="utf-8"))
_CASES: dict[str, dict[str, Any]] = {case["case"]: case for case in _VECTORS["cases"]}
_SPEC_KEY = bytes.fromhex(_VECTORS["key"]["public_sec1_uncompressed_hex"])
_SPEC_KEYS = {"testkey": ("ECDSA-P256-SHA256", _SPEC_KEY)}


def _with_attributes(text: str, **attributes: str) -> str:
    """Append members to the spec's event text, leaving the ``data`` text byte for byte as it is."""
    end = text.rstrip().rfind("}")
    extra = "".join(f',\n "{name}" : {json.dumps(value)}' for name, value in attributes.items())
    return text[:end].rstrip() + extra + "\n}"


def _spec_event(case: str, which: str = "event_json", material_of: str | None = None) -> str:
    spec = _CASES[case]
    attributes = {"dssematerial": _CASES[material_of or case]["dssematerial"]}
    if "signedextattrs" in spec:
        attributes["signedextattrs"] = ",".join(spec["signedextattrs"])
    return _with_attributes(spec[which], **attributes)


# ------------------------------------------------------------------------------------ 1. the spec's vectors


@pytest.mark.parametrize(
    ("case", "which", "rule"),
    [
        ("5", "event_json", "jcs"),
        ("5", "event_json", "raw"),
        ("1", "historic_event_json", "raw"),
        ("3", "historic_event_json", "raw"),
        ("4", "historic_event_json", "raw"),
        ("6a", "event_json", "raw"),
        ("6b", "event_json", "raw"),
        ("7", "event_json", "raw"),
    ],
)
def test_reproducible_spec_vectors_verify(case: str, which: str, rule: str) -> None:
    result = verify_event(_spec_event(case, which), _SPEC_KEYS, data_rule=rule)  # type: ignore[arg-type]
    assert result == Result(True, None, "verified with key(s) testkey", result.event)
    assert result.event is not None
    assert "dssematerial" not in result.event


def test_step_11_verified_event_keeps_signed_extensions_only() -> None:
    result = verify_event(_spec_event("6b"), _SPEC_KEYS, data_rule="raw")
    assert result.event is not None
    assert result.event["exta"] == "value1"
    assert "extb" not in result.event  # present in the event, but not signed
    assert result.event["data"] == {"hello": "world"}
    assert set(result.event) == {"specversion", "id", "source", "type", "datacontenttype", "data", "exta"}


@pytest.mark.parametrize("case", ["1", "3", "4", "6a", "6b", "7"])
def test_json_spec_vectors_fail_at_step_10_under_the_jcs_profile(case: str) -> None:
    """Signature and envelope are fine; only the data bytes rule differs (see docs/VECTORS.md)."""
    which = "historic_event_json" if case in ("1", "3", "4") else "event_json"
    result = verify_event(_spec_event(case, which), _SPEC_KEYS)
    assert (result.verified, result.step) == (False, 10)


@pytest.mark.parametrize("case", ["1", "3", "4"])
def test_current_spec_text_of_cases_1_3_4_fails_at_step_10(case: str) -> None:
    result = verify_event(_spec_event(case), _SPEC_KEYS, data_rule="raw")
    assert (result.verified, result.step) == (False, 10)


def test_case_2_legacy_envelope() -> None:
    keyid = _CASES["2"]["findings"]["keyid"]
    event = _spec_event("2")
    assert verify_event(event, _SPEC_KEYS).step == 5  # its keyid is not "testkey"
    result = verify_event(event, {keyid: ("ECDSA-P256-SHA256", _SPEC_KEY)})
    assert (result.verified, result.step) == (False, 6)  # signature verifies; payloadType is not v0.1


def test_case_8_signedextattrs_with_space_fails_at_step_8() -> None:
    event = _with_attributes(
        _CASES["8"]["event_json"],
        dssematerial=_CASES["7"]["dssematerial"],
        signedextattrs=_CASES["8"]["signedextattrs_value"],
    )
    for rule in ("jcs", "raw"):
        result = verify_event(event, _SPEC_KEYS, data_rule=rule)
        assert (result.verified, result.step) == (False, 8)


def test_time_offset_does_not_matter() -> None:
    """Case 4's event carries case 3's material unchanged (same instant, other offset)."""
    assert verify(_spec_event("4", "historic_event_json", material_of="3"), _SPEC_KEYS, data_rule="raw")


# ------------------------------------------------------------------------------------ 2. events signed here

Signer = Callable[[bytes], bytes]


def _ed25519() -> tuple[Signer, tuple[str, bytes]]:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.sign, ("Ed25519", key.public_key().public_bytes_raw())


def _ecdsa(raw: bool) -> tuple[Signer, tuple[str, bytes]]:
    key = ec.generate_private_key(ec.SECP256R1())

    def sign(message: bytes) -> bytes:
        der = key.sign(message, ec.ECDSA(hashes.SHA256()))
        if not raw:
            return der
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return sign, ("ECDSA-P256-SHA256", point)


_SIGNERS: dict[str, Callable[[], tuple[Signer, tuple[str, bytes]]]] = {
    "ed25519": _ed25519,
    "ecdsa-raw": lambda: _ecdsa(True),
    "ecdsa-der": lambda: _ecdsa(False),
}


def _event() -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "6f1d6a40-1c7b-4c2e-9b1e-2f3c4d5e6f70",
        "source": "kemensos",
        "type": "id.trafficking.case.referral",
        "datacontenttype": "application/json",
        "dataschema": "urn:id.trafficking:schema:case.referral:1.0",
        "subject": "case-2026-0001",
        "time": "2026-11-28T10:15:00+07:00",
        "partitionkey": "case-2026-0001",
        "dataclassification": "restricted",
        "data": {"case_id": "case-2026-0001", "note": "Dukungan \u20ac \U0001f600", "n": [1, 2.5, None]},
    }


def _envelope_b64(
    payload: bytes,
    signatures: list[dict[str, str]],
    payload_type: str = PAYLOAD_TYPE,
    *,
    urlsafe: bool = False,
) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    envelope = {"payload": encode(payload).decode(), "payloadType": payload_type, "signatures": signatures}
    return encode(json.dumps(envelope).encode()).decode()


def _sign(
    event: dict[str, Any],
    signer: Signer,
    kid: str = "kemensos-sig-1",
    signed: tuple[str, ...] = ("partitionkey", "dataclassification"),
    *,
    payload: bytes | None = None,
    payload_type: str = PAYLOAD_TYPE,
    urlsafe: bool = False,
) -> dict[str, Any]:
    """Sign per the spec's signing protocol (steps 2-7), written here without the gateway."""
    event = dict(event)
    if signed:
        event["signedextattrs"] = ",".join(signed)  # step 3
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    material = verification_material(attributes, bytes(rfc8785.dumps(event["data"])), signed)  # steps 4-5
    body = material if payload is None else payload
    signature = signer(pae(payload_type, body))  # step 6
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    sigs = [{"keyid": kid, "sig": encode(signature).decode()}]
    event["dssematerial"] = _envelope_b64(body, sigs, payload_type, urlsafe=urlsafe)  # step 7
    return event


def _check(event: dict[str, Any] | str, keys: dict[str, tuple[str, bytes]], step: int | None) -> Result:
    raw = event if isinstance(event, str) else json.dumps(event)
    result = verify_event(raw.encode(), keys)
    assert (result.verified, result.step) == (step is None, step), result.reason
    return result


@pytest.mark.parametrize("alg", list(_SIGNERS))
def test_signed_event_verifies(alg: str) -> None:
    signer, key = _SIGNERS[alg]()
    result = _check(_sign(_event(), signer), {"kemensos-sig-1": key}, None)
    assert result.event is not None
    assert result.event["partitionkey"] == "case-2026-0001"
    assert "signedextattrs" not in result.event


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("id", "other"),
        ("source", "kemlu.kbri-kuching"),
        ("type", "id.trafficking.case.closure"),
        ("subject", "case-2026-0002"),
        ("dataschema", "urn:id.trafficking:schema:case.referral:1.1"),
        ("time", "2026-11-28T10:15:01+07:00"),
        ("partitionkey", "case-2026-0002"),
        ("dataclassification", "public"),
        ("data", {"case_id": "case-2026-0001"}),
    ],
)
def test_tampering_is_detected_at_step_10(change: str, value: object) -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    event[change] = value
    _check(event, {"kemensos-sig-1": key}, 10)


@pytest.mark.parametrize("absent", ["dataschema", "subject", "time", "datacontenttype"])
def test_removing_an_optional_attribute_is_detected(absent: str) -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    del event[absent]
    _check(event, {"kemensos-sig-1": key}, 10)


def test_representation_changes_that_keep_the_meaning_verify() -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    event["time"] = "2026-11-28t03:15:00z"  # same instant, other RFC 3339 spelling
    event["data"] = dict(reversed(list(event["data"].items())))  # member order is not signed (JCS)
    event["extb"] = "unsigned"  # unsigned extensions may change
    text = json.dumps(event, indent=3)  # whitespace is not signed
    result = _check(text, {"kemensos-sig-1": key}, None)
    assert result.event is not None
    assert "extb" not in result.event


def test_absent_or_empty_time_and_attributes_digest_as_empty() -> None:
    signer, key = _ed25519()
    event = _event()
    for name in ("dataschema", "subject", "time"):
        del event[name]
    _check(_sign(event, signer, signed=()), {"kemensos-sig-1": key}, None)


def test_steps_0_to_5() -> None:
    signer, key = _ed25519()
    keys = {"kemensos-sig-1": key}
    event = _sign(_event(), signer)
    _check('{"id": "1", "id": "2"}', keys, 0)  # duplicate member names
    _check("[1]", keys, 0)
    _check(event, {}, 1)
    _check({k: v for k, v in event.items() if k != "dssematerial"}, keys, 2)
    _check({**event, "dssematerial": ""}, keys, 2)
    _check({**event, "dssematerial": "not base64"}, keys, 3)
    _check({**event, "dssematerial": " " + event["dssematerial"]}, keys, 3)
    _check({**event, "dssematerial": event["dssematerial"].rstrip("=")}, keys, 3)
    _check({**event, "dssematerial": base64.b64encode(b"not json").decode()}, keys, 4)
    _check({**event, "dssematerial": base64.b64encode(b'{"payload": "AA=="}').decode()}, keys, 4)
    _check({**event, "dssematerial": _envelope_b64(bytes(32), [])}, keys, 4)
    _check(event, {"kemensos-sig-1": _ed25519()[1]}, 5)  # another key
    _check(event, {"other-kid": key}, 5)  # keyid not acceptable
    _check(event, {"kemensos-sig-1": ("ECDSA-P256-SHA256", _SPEC_KEY)}, 5)  # wrong algorithm for the kid


def test_step_5_needs_one_valid_signature_by_an_acceptable_key() -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    envelope = json.loads(base64.b64decode(event["dssematerial"]))
    good = envelope["signatures"][0]
    bad = {"keyid": "kemensos-sig-1", "sig": base64.b64encode(bytes(64)).decode()}
    unnamed = {"sig": good["sig"]}
    for signatures, step in (([bad, good], None), ([good, bad], None), ([bad], 5), ([unnamed], 5)):
        payload = base64.b64decode(envelope["payload"])
        _check({**event, "dssematerial": _envelope_b64(payload, signatures)}, {"kemensos-sig-1": key}, step)


def test_steps_6_and_7_after_a_valid_signature() -> None:
    signer, key = _ed25519()
    keys = {"kemensos-sig-1": key}
    _check(_sign(_event(), signer, payload_type="application/vnd.in-toto+json"), keys, 6)
    _check(_sign(_event(), signer, payload=bytes(31)), keys, 7)
    _check(_sign(_event(), signer, payload=bytes(33)), keys, 7)


@pytest.mark.parametrize(
    "value",
    [
        "partitionkey,partitionkey",
        "partitionkey, dataclassification",
        "partitionkey,",
        ",partitionkey",
        "partitionkey,id",
        "time",
        "dssematerial",
        "signedextattrs",
        "data",
        "PartitionKey",
        "data_base64",
    ],
)
def test_step_8_signedextattrs_constraints(value: str) -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    event["signedextattrs"] = value
    _check(event, {"kemensos-sig-1": key}, 8)


def test_step_9_signed_extension_must_be_present() -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer)
    del event["dataclassification"]
    _check(event, {"kemensos-sig-1": key}, 9)


def test_empty_signedextattrs_means_none_signed() -> None:
    signer, key = _ed25519()
    event = _sign(_event(), signer, signed=())
    _check(event, {"kemensos-sig-1": key}, None)
    _check({**event, "signedextattrs": ""}, {"kemensos-sig-1": key}, None)
    _check({**event, "partitionkey": "changed"}, {"kemensos-sig-1": key}, None)  # not signed


def test_url_safe_base64_is_accepted() -> None:
    """DSSE: verifiers MUST accept standard and URL-safe base64."""
    signer, key = _ed25519()
    exercised = 0
    for _ in range(20):
        event = _event()
        event["id"] = base64.b64encode(os.urandom(12)).decode()
        signed = _sign(event, signer, urlsafe=True)
        _check(signed, {"kemensos-sig-1": key}, None)
        envelope = base64.urlsafe_b64decode(signed["dssematerial"])
        exercised += any(c in signed["dssematerial"] + envelope.decode() for c in "-_")
    assert exercised  # at least one run really used the URL-safe alphabet


def test_ecdsa_signature_not_der_nor_64_bytes_is_rejected() -> None:
    signer, key = _ecdsa(True)
    _check(_sign(_event(), lambda m: signer(m)[:63]), {"kemensos-sig-1": key}, 5)
    _check(_sign(_event(), lambda m: signer(m) + b"\x00"), {"kemensos-sig-1": key}, 5)


# ------------------------------------------------------------------------------------ 3. cross-checks


_NAME = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True).filter(
    lambda n: n not in (*independent.CORE_ATTRIBUTES, "data", "dssematerial", "signedextattrs")
)
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_TIME = st.builds(
    lambda dt, offset, fraction: dt.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset,
    st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2999, 12, 30)),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+07:00", "-09:30", "+14:00"]),
    st.sampled_from(["", ".0", ".123", ".000000001"]),
)


@settings(max_examples=200, deadline=None)
@given(
    core=st.fixed_dictionaries(
        {"id": _TEXT, "source": _TEXT, "specversion": st.just("1.0"), "type": _TEXT},
        optional={"datacontenttype": _TEXT, "dataschema": _TEXT, "subject": _TEXT, "time": _TIME},
    ),
    extensions=st.dictionaries(_NAME, _TEXT, max_size=3),
    data=st.binary(max_size=40),
)
def test_same_material_as_the_gateway(core: dict[str, str], extensions: dict[str, str], data: bytes) -> None:
    gateway_dsse = pytest.importorskip("gateway.contract.dsse")
    attributes = {**core, **extensions}
    signed = list(extensions)
    ours = verification_material(attributes, data, signed)
    assert ours == gateway_dsse.verification_material(attributes, data, signed)
    if "time" in core:
        assert independent._normalize_time(core["time"]) == gateway_dsse.normalize_time(core["time"])


@pytest.mark.parametrize("alg", ["Ed25519", "ECDSA-P256-SHA256"])
def test_event_signed_with_gateway_dsse_and_keys_verifies(alg: str) -> None:
    """Sign with the gateway's material/envelope/key code, verify with the independent code."""
    dsse = pytest.importorskip("gateway.contract.dsse")
    keys = pytest.importorskip("gateway.contract.keys")
    canonical = pytest.importorskip("gateway.contract.canonical")
    signing_key = keys.SigningKey.generate(alg)
    event = _event()
    event["signedextattrs"] = "partitionkey,dataclassification"
    attributes = {k: v for k, v in event.items() if k != "data"}
    material = dsse.verification_material(
        attributes, canonical.canonical_json(event["data"]), ("partitionkey", "dataclassification")
    )
    unsigned = dsse.DsseEnvelope(dsse.PAYLOAD_TYPE, material, ())
    signature = dsse.DsseSignature("kemensos-sig-1", signing_key.sign(unsigned.signed_message()))
    event["dssematerial"] = dsse.DsseEnvelope(dsse.PAYLOAD_TYPE, material, (signature,)).to_b64()
    public = {"kemensos-sig-1": (alg, signing_key.public_key.raw)}
    _check(event, public, None)
    _check({**event, "subject": "x"}, public, 10)


# ------------------------------------------------------------------------------------ 4. CLI, independence


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer, (alg, public) = _ed25519()
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(_sign(_event(), signer)), encoding="utf-8")
    b64 = base64.b64encode(public).decode()

    assert main([str(event_file), "--key", "kemensos-sig-1", alg, b64, "--print-event"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VERIFIED")
    assert '"partitionkey": "case-2026-0001"' in out

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"kemensos-sig-1": {"alg": alg, "public_key": "hex:" + public.hex()}}))
    assert main([str(event_file), "--keys", str(keys_file)]) == 0
    capsys.readouterr()

    assert main([str(event_file), "--key", "other", alg, b64]) == 1
    assert capsys.readouterr().out.startswith("REJECTED at step 5")

    assert main([str(event_file), "--key", "kemensos-sig-1", "RSA", b64]) == 2
    assert main([str(tmp_path / "missing.json"), "--key", "kemensos-sig-1", alg, b64]) == 2


def test_cli_spec_vector_with_raw_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event_file = tmp_path / "case7.json"
    event_file.write_text(_spec_event("7"), encoding="utf-8")
    key = "hex:" + _SPEC_KEY.hex()
    assert main([str(event_file), "--key", "testkey", "ECDSA-P256-SHA256", key, "--data-rule", "raw"]) == 0
    assert main([str(event_file), "--key", "testkey", "ECDSA-P256-SHA256", key]) == 1
    assert "REJECTED at step 10" in capsys.readouterr().out


def test_verifier_imports_nothing_from_the_gateway() -> None:
    tree = ast.parse(Path(independent.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {"__future__", "cryptography", "rfc8785"} | set(sys.stdlib_module_names)
    assert imported <= allowed, imported - allowed
    assert "gateway" not in imported
