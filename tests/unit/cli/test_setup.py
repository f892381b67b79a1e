"""``gateway --version``, ``completion``, ``init`` and ``config check`` (offline, one line per problem)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tomli_w

from gateway import __version__
from gateway.cli.main import main
from gateway.cli.setup import check_config
from gateway.contract.registry import utc_text_of
from gateway.contract.registry_chain import Anchor
from gateway.sandbox.deployment import ANCHOR_FILE, REGISTRY_FILE, load_maintainers, sandbox_registry
from gateway.sandbox.maintainers import signed_version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"gateway (xchg-gateway) {__version__}"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_knows_the_commands(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("config", "init", "audit", "verify", "--version", "export-records"):
        assert word in script, word
    if shell == "bash":
        bash = shutil.which("bash") or "/bin/bash"
        checked = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr


@pytest.fixture
def scaffold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--party", "kemensos", "--dir", str(tmp_path / "trial")]) == 0
    out = capsys.readouterr().out
    config = tmp_path / "trial" / "kemensos" / "gateway.toml"
    assert f"gateway run --config {config}" in out
    return config


def test_init_writes_a_configuration_that_checks(scaffold: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(scaffold) == []
    assert main(["config", "check", str(scaffold)]) == 0
    assert capsys.readouterr().out.startswith(f"{scaffold}: ok (party kemensos, 2 source(s), 1 sink(s)")
    assert (scaffold.parent / "keys" / "kemensos-sig-sandbox.pem").stat().st_mode & 0o777 == 0o600
    # never overwrites
    assert main(["init", "--party", "kemensos", "--dir", str(scaffold.parent.parent)]) == 2


def test_init_refuses_an_unknown_party(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--party", "nobody", "--dir", str(tmp_path / "t")]) == 2
    assert "config.invalid: --party" in capsys.readouterr().err


def _edit(config: Path, change: dict[str, object]) -> None:
    document = tomllib.loads(config.read_text("utf-8"))
    config.write_text(tomli_w.dumps({**document, **change}), "utf-8")


def test_every_problem_gets_its_own_line(scaffold: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = scaffold.parent / "keys"
    (keys / "kemensos-seal-sandbox.pem").write_text("not a key")
    _edit(scaffold, {
        "sources": [{"kind": "http", "host": "192.0.2.10"}, {"kind": "file-drop", "directory": "drop"}],
        "sinks": [
            # the case: options the built-in webhook sink used to ignore silently
            {"kind": "webhook", "url": "https://case.example/api", "ca_file": "missing.pem"},
            {"kind": "kemensos-case-system", "url": "https://case.example/api",
             "token_file": "no-such-token"},
            {"kind": "file", "directory": "received"},
        ],
    })  # fmt: skip
    problems = check_config(scaffold)
    assert problems == [
        problems[0],
        "config.invalid: sources[0].host: not a loopback address: a token_file or client_ca_file (mutual TLS)"
        " is required",
        "config.invalid: sinks[0].ca_file: cannot load CA certificates from "
        f"{str(scaffold.parent / 'missing.pem')!r}",
        problems[3],
    ]
    assert problems[0].startswith("keyfile.invalid: ")
    assert problems[3].startswith("config.invalid: sinks[1].token_file: ")
    assert main(["config", "check", str(scaffold)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == problems
    assert "4 problem(s)" in err
    assert not (scaffold.parent / "received").exists()  # checking builds sinks, it writes nothing


def test_an_unknown_key_is_named(scaffold: Path) -> None:
    _edit(scaffold, {"sinks": [{"kind": "webhook", "url": "https://case.example/api", "headers": "x"}]})
    (problem,) = check_config(scaffold)
    assert problem.startswith("config.invalid: sinks[0].headers: unknown setting; expected one of ")
    _edit(scaffold, {"opss": {}})
    assert check_config(scaffold)[0].startswith("config.invalid: opss")


def test_a_key_that_expires_soon_and_a_foreign_key(scaffold: Path) -> None:
    root = scaffold.parent.parent  # the trial's version 1, re-made by its maintainers with a nearer expiry
    registry = sandbox_registry(root).document()
    kemensos = next(p for p in registry["parties"] if p["id"] == "kemensos")
    for key in kemensos["keys"]:
        if key["use"] == "sig":
            key["valid_until"] = utc_text_of(
                datetime.now(UTC).replace(microsecond=0) + timedelta(days=10, hours=1)
            )
    version = signed_version(registry, load_maintainers(root)[:2])
    (root / REGISTRY_FILE).write_bytes(version.to_bytes())
    (root / ANCHOR_FILE).write_text(Anchor.of(version).to_toml(), "utf-8")
    (problem,) = check_config(scaffold)  # ops.key_expiry_days defaults to 14
    assert problem == (
        "keyfile.invalid: keys.signing_key: key kemensos-sig-sandbox expires in 10 day(s); "
        "/readyz fails below ops.key_expiry_days = 14"
    )
    _edit(scaffold, {"ops": {"key_expiry_days": 7}})
    assert check_config(scaffold) == []
    _edit(scaffold, {"party": "iom"})
    assert check_config(scaffold) == [
        "keyfile.invalid: keys.signing_key: its public key is not a sig key of iom in the registry",
        "keyfile.invalid: keys.sealing_keys[0]: its public key is not a seal key of iom in the registry",
    ]
