"""The ``gateway`` CLI end to end: keys new -> registry -> sign -> verify (and an independent verifier)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.contract.schemas import default_schema_root
from tests.independent.verify_ce_dsse import verify as independent_verify

REFERRAL = default_schema_root() / "case.referral" / "examples" / "1.0" / "valid-minimal.json"

PARTIES = {
    "kemlu.kbri-kuching": ('publish = ["id.trafficking.case.referral"]\nread = ["xchg.kemensos.case.v1"]\n'),
    "kemensos": 'publish = ["id.trafficking.case.shelter-admission"]\nread = ["xchg.kemlu.*.case.v1"]\n',
    "iom": 'publish = []\nread = ["xchg.kemlu.*.alert.v1"]\n',
}


@pytest.fixture
def deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A registry made the way the README says: `keys new` per party, entries pasted under each party."""
    text = 'format = "xchg-registry/1"\n'
    for party, permissions in PARTIES.items():
        assert main(["keys", "new", "--party", party, "--out", str(tmp_path / "keys" / party)]) == 0
        entries = capsys.readouterr().out
        text += f'\n[[parties]]\nid = "{party}"\nname = "{party} (synthetic)"\n{permissions}\n{entries}'
    (tmp_path / "registry.toml").write_text(text)
    return tmp_path


def _key(deployment: Path, party: str, use: str) -> str:
    (path,) = (deployment / "keys" / party).glob(f"*-{use}-*.pem")
    return str(path)


def _sign(deployment: Path, *extra: str) -> int:
    return main(
        [
            "sign",
            "--registry", str(deployment / "registry.toml"),
            "--party", "kemlu.kbri-kuching",
            "--key", _key(deployment, "kemlu.kbri-kuching", "sig"),
            "--type", "id.trafficking.case.referral",
            *extra,
            str(REFERRAL),
        ]
    )  # fmt: skip


def _verify(deployment: Path, event: Path, party: str = "kemensos") -> int:
    return main(
        [
            "verify",
            "--registry", str(deployment / "registry.toml"),
            "--party", party,
            "--seal-key", _key(deployment, party, "seal"),
            str(event),
        ]
    )  # fmt: skip


def test_keys_new_writes_private_keys_0600(deployment: Path) -> None:
    files = list((deployment / "keys").rglob("*.pem"))
    assert len(files) == 2 * len(PARTIES)
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)


def test_sign_then_verify_as_recipient(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _sign(deployment, "--recipient", "kemensos") == 0
    event = deployment / "event.json"
    event.write_text(capsys.readouterr().out)
    assert b"Dewi" not in event.read_bytes()
    assert b"Fiktif" not in event.read_bytes()

    assert _verify(deployment, event) == 0
    verdict = capsys.readouterr().out
    assert verdict.startswith("ACCEPTED ")
    assert "unsealed=yes" in verdict


def test_verify_rejects_a_tampered_event(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _sign(deployment, "--recipient", "kemensos") == 0
    document = json.loads(capsys.readouterr().out)
    document["data"]["vic_TraffickingStatus"] = "NotAVictimOfTrafficking"
    event = deployment / "tampered.json"
    event.write_text(json.dumps(document))
    assert _verify(deployment, event) == 1
    assert capsys.readouterr().out.startswith("REJECTED sig.digest-mismatch ")


def test_sign_refuses_sealed_data_without_recipients(
    deployment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _sign(deployment) == 2
    assert "seal.no-recipients" in capsys.readouterr().err


def test_sign_refuses_a_recipient_not_entitled_to_the_topic(
    deployment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _sign(deployment, "--recipient", "iom") == 2
    assert "seal.recipient-not-permitted" in capsys.readouterr().err


def test_event_from_gateway_sign_verifies_with_the_independent_verifier(
    deployment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Interoperability: a verifier written from the CloudEvents DSSE spec alone accepts our events."""
    assert _sign(deployment, "--recipient", "kemensos") == 0
    raw = capsys.readouterr().out.encode()
    registry = (deployment / "registry.toml").read_text()
    kid = json.loads(base64.b64decode(json.loads(raw)["dssematerial"]))["signatures"][0]["keyid"]
    public = registry.split(f'kid = "{kid}"')[1].split('public_key = "')[1].split('"')[0]
    keys = {kid: ("Ed25519", base64.b64decode(public))}
    assert independent_verify(raw, keys) is True
    tampered = raw.replace(b'"subject":"', b'"subject":"X', 1)
    assert independent_verify(tampered, keys) is False


def test_schemas_check_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check"]) == 0
    assert " 0 problems" in capsys.readouterr().out
    assert main(["schemas", "list"]) == 0
    listing = capsys.readouterr().out
    assert "urn:id.trafficking:schema:case.referral:1.1" in listing


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "exit 0 only if accepted" in " ".join(result.stdout.split())


def test_missing_registry_is_a_clear_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.pop("XCHG_REGISTRY", None)
    assert main(["verify", str(REFERRAL)]) == 2
    assert "config.invalid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [
        b'format = "xchg-registry/1"\nx = ' + b"[" * 5000 + b"]" * 5000 + b"\n",  # deeper than the parser
        b"\x00\xff\xfe garbage",
        b'format = "xchg-registry/1"\n[[parties]]\nid = "a"\nname = "A"\nkeys = [1, 2]\n',
        b'format = "xchg-registry/1"\nparties = 5\n',
    ],
    ids=["deep", "binary", "keys-not-tables", "parties-not-tables"],
)
def test_a_garbage_registry_is_registry_invalid_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_bytes(content)
    event = tmp_path / "event.json"
    event.write_text("{}")
    assert main(["verify", "--registry", str(registry), str(event)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: registry.invalid: ")
    assert "Traceback" not in err


def test_verify_prints_rejected_for_a_time_without_utc_form(
    deployment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway verify`` on an event whose time has no UTC form: a verdict, not a traceback."""
    event = {
        "id": "e1", "source": "kemensos", "specversion": "1.0", "type": "id.trafficking.alert.health",
        "datacontenttype": "application/json", "dataschema": "urn:id.trafficking:schema:alert.health:1.0",
        "subject": "ALR-1", "time": "0001-01-01T00:00:00+01:00", "partitionkey": "ALR-1",
        "dataclassification": "internal", "data": {},
    }  # fmt: skip
    path = deployment / "event.json"
    path.write_text(json.dumps(event))
    assert main(["verify", "--registry", str(deployment / "registry.toml"), str(path)]) == 1
    assert capsys.readouterr().out.startswith("REJECTED time.out-of-range ")
