"""``gateway registry ...`` and ``gateway keys rotate`` end to end, as maintainers and a joining party run
them (docs/REGISTRY.md): create version 1, BP2MI joins, rotates with a key request, a key is revoked; the
issue's trial (IOM's entries added to BP2MI) and versions below threshold or out of the chain are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.contract.registry_version import RegistryVersion
from gateway.sandbox.deployment import SAMPLE_REGISTRY


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def maintainers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[Path, Path]]:
    """Three maintainers' keys: (private key, public file) each."""
    out = tmp_path / "maintainers"
    result = []
    for name in ("kemensos", "kemlu", "independent"):
        assert _run(capsys, "registry", "keygen", "--name", name, "--out", str(out))[0] == 0
        public = next(out.glob(f"registry-{name}-*.pub.toml"))
        result.append((public.with_name(public.name.replace(".pub.toml", ".pem")), public))
    return result


def _sign(capsys: pytest.CaptureFixture[str], file: Path, *keys: Path) -> None:
    for key in keys:
        assert _run(capsys, "registry", "sign", str(file), "--key", str(key))[0] == 0


def test_the_registry_lifecycle_from_creation_to_revocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], maintainers: list[tuple[Path, Path]]
) -> None:
    (k1, p1), (k2, p2), (k3, p3) = maintainers
    v1, anchor = tmp_path / "v1.json", tmp_path / "anchor.toml"
    maintainer_options = ["--maintainer", str(p1), "--maintainer", str(p2), "--maintainer", str(p3)]
    code, _ = _run(capsys, "registry", "init", "--parties", str(SAMPLE_REGISTRY), *maintainer_options,
                   "--threshold", "2", "--out", str(v1))  # fmt: skip
    assert code == 0
    _sign(capsys, v1, k1)
    code, out = _run(capsys, "registry", "anchor", str(v1), "--out", str(anchor))
    assert (code, "threshold-not-met" in out) == (2, True)  # one signature is below the threshold
    _sign(capsys, v1, k3)
    assert _run(capsys, "registry", "anchor", str(v1), "--out", str(anchor))[0] == 0
    assert _run(capsys, "registry", "verify", str(v1), "--anchor", str(anchor))[0] == 0

    # BP2MI joins: a party, then the entries `keys new` wrote
    v2 = tmp_path / "v2.json"
    code, out = _run(capsys, "registry", "add-party", str(v1), "--party", "bp2mi", "--name", "BP2MI",
                     "--name-en", "Migrant Workers Protection Agency", "--role", "government",
                     "--publish", "id.trafficking.case.referral", "--read", "xchg.kemensos.case.v1",
                     "--out", str(v2))  # fmt: skip
    assert code == 0, out
    assert "+ party bp2mi" in out
    assert _run(capsys, "keys", "new", "--party", "bp2mi", "--out", str(tmp_path / "bp2mi"))[0] == 0
    assert _run(capsys, "keys", "new", "--party", "iom", "--out", str(tmp_path / "iom"))[0] == 0

    # the trial: IOM's entries offered for bp2mi are refused, naming the party (file and key id)
    iom_entries = tmp_path / "iom" / "iom.keys.toml"
    code, out = _run(
        capsys, "registry", "add-key", str(v2), "--party", "bp2mi", "--entries", str(iom_entries)
    )
    assert (code, "names party 'iom'" in out) == (2, True), out
    renamed = tmp_path / "pasted.toml"
    renamed.write_bytes(iom_entries.read_bytes())
    code, out = _run(capsys, "registry", "add-key", str(v2), "--party", "bp2mi", "--entries", str(renamed))
    assert code == 2
    assert "registry.key-request-invalid" in out
    assert "key 'iom-sig-" in out
    assert "names party 'iom'" in out

    code, out = _run(capsys, "registry", "add-key", str(v2), "--party", "bp2mi",
                     "--entries", str(tmp_path / "bp2mi" / "bp2mi.keys.toml"))  # fmt: skip
    assert code == 0, out
    draft = RegistryVersion.parse(v2.read_bytes())
    assert (draft.serial, draft.previous, draft.signatures) == (
        2,
        RegistryVersion.parse(v1.read_bytes()).digest,
        (),
    )
    assert [k.use for k in draft.registry.parties["bp2mi"].keys] == ["sig", "seal"]

    # signed 1 of 3: refused; 2 of 3: the chain accepts it
    _sign(capsys, v2, k2)
    code, out = _run(capsys, "registry", "verify", str(v1), str(v2), "--anchor", str(anchor))
    assert (code, "REFUSED registry.threshold-not-met" in out) == (1, True), out
    _sign(capsys, v2, k3)
    code, out = _run(capsys, "registry", "verify", str(v1), str(v2), "--anchor", str(anchor))
    assert code == 0, out
    code, out = _run(capsys, "registry", "diff", str(v1), str(v2))
    assert code == 1
    assert "+ party bp2mi" in out
    assert "+ key bp2mi-sig-" in out

    # rotation: the next pair and a request signed with the current key, added with one command
    bp2mi_sig = next((tmp_path / "bp2mi").glob("bp2mi-sig-*.pem"))
    code, out = _run(capsys, "keys", "rotate", "--party", "bp2mi", "--registry", str(v2),
                     "--current-key", str(bp2mi_sig), "--out", str(tmp_path / "bp2mi-next"))  # fmt: skip
    assert code == 0, out
    request = tmp_path / "bp2mi-next" / "bp2mi.key-request.json"
    v3 = tmp_path / "v3.json"
    code, out = _run(capsys, "registry", "add-key", str(v2), "--request", str(request), "--out", str(v3))
    assert code == 0, out
    assert "signed by bp2mi-sig-" in out
    assert len(RegistryVersion.parse(v3.read_bytes()).registry.parties["bp2mi"].keys) == 4

    # a request signed by another party's key is refused
    forged = json.loads(request.read_bytes())
    forged["signatures"][0]["keyid"] = "iom-sig-x"
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, out = _run(capsys, "registry", "add-key", str(v2), "--request", str(tmp_path / "forged.json"),
                     "--out", str(tmp_path / "nope.json"))  # fmt: skip
    assert (code, "registry.key-request-invalid" in out) == (2, True)

    # revocation on the same draft, then signatures; a skipped or replayed version is refused
    old_kid = bp2mi_sig.stem
    code, out = _run(
        capsys, "registry", "revoke-key", str(v3), "--kid", old_kid, "--at", "2026-12-01T00:00:00Z"
    )
    assert code == 0
    assert f"~ key {old_kid} revoked_at: none -> 2026-12-01T00:00:00Z" in out
    _sign(capsys, v3, k1, k2)
    assert _run(capsys, "registry", "verify", str(v1), str(v2), str(v3), "--anchor", str(anchor))[0] == 0
    code, out = _run(capsys, "registry", "verify", str(v1), str(v3), "--anchor", str(anchor))
    assert (code, "REFUSED registry.chain-broken" in out) == (1, True)
    code, out = _run(
        capsys, "registry", "verify", str(v1), str(v2), str(v3), str(v2), "--anchor", str(anchor)
    )
    assert (code, "REFUSED registry.rollback" in out) == (1, True)
    code, out = _run(capsys, "registry", "show", str(v3))
    assert code == 0
    assert "serial 3" in out
    assert f"key {old_kid} sig Ed25519" in out
    assert "revoked 2026-12-01" in out

    # a signed version is never overwritten by an edit
    code, out = _run(capsys, "registry", "set-permissions", str(v3), "--party", "bp2mi", "--read", "x")
    assert (code, "is signed" in out) == (2, True)


def test_keys_rotate_refuses_a_key_that_is_not_the_partys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], maintainers: list[tuple[Path, Path]]
) -> None:
    (k1, p1), (k2, p2), _ = maintainers
    v1 = tmp_path / "v1.json"
    assert _run(capsys, "registry", "init", "--parties", str(SAMPLE_REGISTRY), "--maintainer", str(p1),
                "--maintainer", str(p2), "--threshold", "2", "--out", str(v1))[0] == 0  # fmt: skip
    _sign(capsys, v1, k1, k2)
    code, out = _run(capsys, "keys", "rotate", "--party", "iom", "--registry", str(v1),
                     "--current-key", str(k1), "--out", str(tmp_path / "next"))  # fmt: skip
    assert (code, "not registered for iom" in out) == (2, True)
    assert not (tmp_path / "next").exists()
