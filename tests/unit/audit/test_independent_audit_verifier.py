"""The minimal independent verifier (``docs/independent_audit_verifier.py``): written from docs/AUDIT.md
without the gateway's code, it accepts the notary's log and checkpoint and rejects tampered ones."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.layout import entries_path
from gateway.audit.note import Ed25519Signer, sign_note
from gateway.contract.keys import SigningKey
from tests.unit.audit._synthetic import ORIGIN, Run, build_run

SCRIPT = Path(__file__).resolve().parents[3] / "docs" / "independent_audit_verifier.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return build_run(tmp_path_factory.mktemp("run"))


def _verify(log_dir: Path, vkey: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(log_dir), "--vkey", vkey, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout


def test_accepts_the_notary_log(run: Run) -> None:
    code, out = _verify(run.log_dir, run.vkey)
    assert code == 0, out
    assert out.startswith(f"OK {ORIGIN} size 300 root ")
    # every historical checkpoint too, and the vkey from a file
    vkey_file = run.log_dir.parent / "notary.vkey"
    vkey_file.write_text(run.vkey + "\n")
    for size in (0, 50, 256):
        code, out = _verify(
            run.log_dir, str(vkey_file), "--checkpoint", str(run.log_dir / "checkpoints" / str(size))
        )
        assert (code, out.split()[:4]) == (0, ["OK", ORIGIN, "size", str(size)])


def test_rejects_a_modified_entry(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(run.log_dir, log)
    bundle = log / entries_path(1, 44)
    data = bytearray(bundle.read_bytes())
    data[-3] ^= 0x01
    bundle.write_bytes(bytes(data))
    code, out = _verify(log, run.vkey)
    assert (code, out.strip()) == (1, "FAIL: the log's first 300 entries do not reproduce the signed root")


def test_rejects_a_truncated_log(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(run.log_dir, log)
    (log / entries_path(1, 44)).unlink()
    code, out = _verify(log, run.vkey)
    assert code == 1
    assert "missing entry bundle" in out


def test_rejects_bad_signatures_and_foreign_keys(run: Run, tmp_path: Path) -> None:
    text = (run.log_dir / "checkpoint").read_text()
    altered = tmp_path / "altered"
    altered.write_text(text.replace("\n300\n", "\n299\n"))
    code, out = _verify(run.log_dir, run.vkey, "--checkpoint", str(altered))
    assert (code, out.strip()) == (1, "FAIL: the notary's signature does not verify")
    other = Ed25519Signer(ORIGIN, SigningKey.generate())
    code, out = _verify(run.log_dir, str(other.verifier().vkey()))
    assert (code, out.strip()) == (1, "FAIL: the note carries no signature by the notary's key")
    forged = tmp_path / "forged"
    forged.write_bytes(sign_note(Checkpoint(ORIGIN, 300, b"\x00" * 32).to_note_body(), [run.signer]))
    code, out = _verify(run.log_dir, run.vkey, "--checkpoint", str(forged))
    assert code == 1
    assert "do not reproduce the signed root" in out
    bad = run.vkey[:-4] + ("AAAA" if not run.vkey.endswith("AAAA") else "BBBB")
    code, out = _verify(run.log_dir, bad)
    assert code == 1


def test_imports_nothing_from_the_gateway() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules <= {
        "__future__",
        "argparse",
        "base64",
        "binascii",
        "hashlib",
        "sys",
        "collections",
        "pathlib",
        "cryptography",
    }, modules
