"""Go's own transparency-log code verifies what our notary writes (tests/independent/go, no shared code).

The log is written with the functions the notary uses (:class:`TileLog` for the C2SP tiles,
:func:`sign_checkpoint` for the checkpoint note, a :class:`Witness` cosigning it after checking a consistency
proof, :func:`create_proof` for tlog-proof@v1 receipts, :func:`format_add_checkpoint` for the witness request
body). The Go program then opens the notes with ``golang.org/x/mod/sumdb/note`` and reads the tiles, checks
the tree hash, every entry, the receipts and the consistency proof with ``golang.org/x/mod/sumdb/tlog``
(docs/AUDIT.md, section 16). Tampering with a tile, an entry or a cosignature must make it fail.

Needs Go and the module cache ``./xchg test`` fills (``tests/independent/go/fetch.sh``): nothing is
downloaded here (``GOPROXY=off``). Skipped without Go locally, a failure under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, deployment_origin, sign_checkpoint
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer
from gateway.audit.proof import create_proof
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness, format_add_checkpoint

GO_DIR = Path(__file__).resolve().parent / "go"
OLD_SIZE = 1_000
SIZE = 70_000  # 273 full level-0 tiles and a partial one, a full level-1 tile, a level-2 partial tile
RECEIPTS = (0, 255, 256, OLD_SIZE - 1, 65_535, 65_536, SIZE - 1)


def go_env() -> dict[str, str]:
    """Go's environment for the verifier: the repository's module cache, no network, no toolchain switch."""
    cache = GO_DIR / ".cache"
    return {
        **os.environ,
        "GOMODCACHE": str(cache / "mod"),
        "GOCACHE": str(cache / "build"),
        "GOFLAGS": "-mod=readonly -modcacherw",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
    }


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go verifier, built from tests/independent/go with the pinned golang.org/x/mod."""
    go = shutil.which("go") or next((g for g in ("/usr/local/go/bin/go",) if Path(g).is_file()), None)
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed; run .ci/install-system-deps")
        pytest.skip("go is not installed (Debian golang-go, or .ci/install-system-deps)")
    binary = tmp_path_factory.mktemp("go") / "verify"
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_DIR,
        env=go_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return binary


@dataclass(frozen=True)
class LogFiles:
    log: Path
    origin: str
    vkey: Path
    cosigners: tuple[Path, ...]
    old: Path
    consistency: Path
    receipts: tuple[Path, ...]

    def arguments(self) -> list[str]:
        args = ["-log", str(self.log), "-origin", self.origin, "-vkey", str(self.vkey)]
        for cosigner in self.cosigners:
            args += ["-cosigner", str(cosigner)]
        args += ["-old", str(self.old), "-consistency", str(self.consistency)]
        for receipt in self.receipts:
            args += ["-receipt", str(receipt)]
        return args


def entry(index: int) -> bytes:
    """A synthetic leaf of varying length (the notary's leaves are JSON of digests and offsets)."""
    return f'{{"i":{index},"pad":"{"x" * (index % 97)}"}}'.encode()


def write_log(root: Path) -> LogFiles:
    """A notary's log directory of SIZE entries, cosigned by two agencies at OLD_SIZE and at SIZE."""
    origin = deployment_origin("go-interop")
    notary = Ed25519Signer(origin, bytes(range(32)))
    clock = iter(range(1_767_000_000, 1_767_000_100)).__next__
    cosigners = [
        CosignatureV1Signer(f"id.trafficking.xchg/cosigner/{name}", bytes([n]) * 32, clock=clock)
        for n, name in enumerate(("kemensos", "iom"), start=1)
    ]
    witnesses = [Witness(signer, {origin: [notary.verifier()]}, durable=False) for signer in cosigners]
    directory = root / "log"

    def checkpoint_note(log: TileLog, old_size: int) -> tuple[bytes, bytes]:
        note = sign_checkpoint(Checkpoint(origin, log.size, log.root()), [notary])
        proof = log.consistency_proof(old_size, log.size) if old_size else []
        lines = [w.add_checkpoint(note, old_size=old_size, proof=proof) for w in witnesses]
        return note, note + "".join(lines).encode()

    with TileLog.open(directory, durable=False) as log:
        log.append([entry(i) for i in range(OLD_SIZE)])
        _, old_cosigned = checkpoint_note(log, 0)
        for start in range(OLD_SIZE, SIZE, 10_000):
            log.append([entry(i) for i in range(start, min(SIZE, start + 10_000))])
        signed, cosigned = checkpoint_note(log, OLD_SIZE)
        (directory / "checkpoint").write_bytes(cosigned)
        (root / "old-checkpoint").write_bytes(old_cosigned)
        (root / "add-checkpoint").write_bytes(
            format_add_checkpoint(OLD_SIZE, log.consistency_proof(OLD_SIZE, SIZE), signed)
        )
        receipts = []
        for index in RECEIPTS:
            path = root / f"receipt-{index}"
            path.write_bytes(create_proof(log, index, cosigned, extra=entry(index)))
            receipts.append(path)
    (root / "notary.vkey").write_text(str(notary.verifier().vkey()) + "\n")
    cosigner_vkeys = []
    for signer in cosigners:
        path = root / f"{signer.name.rsplit('/', 1)[-1]}.vkey"
        path.write_text(str(signer.verifier().vkey()) + "\n")
        cosigner_vkeys.append(path)
    return LogFiles(
        directory,
        origin,
        root / "notary.vkey",
        tuple(cosigner_vkeys),
        root / "old-checkpoint",
        root / "add-checkpoint",
        tuple(receipts),
    )


@pytest.fixture(scope="module")
def log_files(tmp_path_factory: pytest.TempPathFactory) -> LogFiles:
    return write_log(tmp_path_factory.mktemp("tlog"))


def run(verifier: Path, files: LogFiles) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(verifier), *files.arguments()], capture_output=True, text=True, timeout=120, check=False
    )


def test_go_sumdb_note_and_tlog_verify_our_log(verifier: Path, log_files: LogFiles) -> None:
    result = run(verifier, log_files)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["origin"] == log_files.origin
    assert report["size"] == SIZE
    assert report["entries_checked"] == SIZE
    assert report["receipts_checked"] == list(RECEIPTS)
    assert report["consistency_from"] == OLD_SIZE
    # the checkpoint is signed by the notary and cosigned by both agencies, each checked by Go
    assert report["signers"] == [
        "id.trafficking.xchg/notary/go-interop",
        "id.trafficking.xchg/cosigner/kemensos",
        "id.trafficking.xchg/cosigner/iom",
    ]
    # our consistency proof is byte for byte the one tlog.ProveTree computes from our tiles
    assert report["consistency_proof_equals_tlog_prove_tree"] is True


def _copy(files: LogFiles, root: Path) -> LogFiles:
    shutil.copytree(files.log, root / "log")
    return LogFiles(
        root / "log",
        files.origin,
        files.vkey,
        files.cosigners,
        files.old,
        files.consistency,
        files.receipts,
    )


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("what", "target", "offset", "message"),
    [
        ("a hash in a full level-0 tile", "tile/0/005", 100, ""),
        ("a hash in the level-1 tile", "tile/1/000", 40, ""),
        ("an entry in a bundle", "tile/entries/007", 10, "does not hash to its leaf"),
        ("the last cosignature", "checkpoint", -5, "note.Open"),
    ],
)
def test_go_refuses_a_tampered_log(  # noqa: PLR0917 - the parameters are the table's columns
    verifier: Path, log_files: LogFiles, tmp_path: Path, what: str, target: str, offset: int, message: str
) -> None:
    files = _copy(log_files, tmp_path)
    path = files.log / target
    assert path.is_file(), f"{what}: {target} is not in the log (layout changed?)"
    _flip(path, offset if offset >= 0 else path.stat().st_size + offset)
    result = run(verifier, files)
    assert result.returncode == 1, f"{what}: accepted"
    assert message in result.stderr
