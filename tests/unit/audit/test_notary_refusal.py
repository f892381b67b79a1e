"""The notary never signs two inconsistent checkpoints: it refuses to start on a log that no longer
reproduces its last signed checkpoint, and stops signing (503 on /healthz) if the log changes under it.
No broker is needed: the checks run before the notary connects, and a dead address is configured."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
import tomli_w

from gateway.audit.layout import CHECKPOINT_FILE
from gateway.audit.notary import Notary, NotaryConfig
from gateway.audit.note import Ed25519Signer
from gateway.audit.tiles import TileLog
from gateway.contract.keys import write_private_pem
from gateway.contract.registry_chain import Anchor
from gateway.errors import GatewayError, Reason
from tests.unit.audit._synthetic import ORIGIN, Run, build_run, copy_checkpoints, write_log


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return build_run(tmp_path_factory.mktemp("run"), count=60)


def _config(run: Run, root: Path, log_dir: Path) -> NotaryConfig:
    key_file = root / "notary.pem"
    write_private_pem(key_file, run.key.to_pem())  # the run's notary key
    document = {
        "deployment": ORIGIN.rsplit("/", 1)[1],
        "registry_anchor": "registry-anchor.toml",
        "log_dir": str(log_dir),
        "key_file": "notary.pem",
        "kafka": {"bootstrap_servers": ["127.0.0.1:9"]},
        "http": {"port": 0},
        "durable": False,
    }
    # the anchor is read at start; no registry version is needed before the notary connects
    anchor = Anchor(digest="sha256:" + hashlib.sha256(run.registry_file.read_bytes()).hexdigest())
    (root / "registry-anchor.toml").write_text(anchor.to_toml(), "utf-8")
    (root / "notary.toml").write_bytes(tomli_w.dumps(document).encode())
    return NotaryConfig.load(root / "notary.toml")


def _log(target: Path, entries: list[bytes], signer: Ed25519Signer, sizes: tuple[int, ...]) -> Path:
    write_log(target, entries, signer, sizes)
    return target


async def test_a_consistent_log_starts_and_resumes_from_it(run: Run, tmp_path: Path) -> None:
    log_dir = _log(tmp_path / "log", run.entries, run.signer, (0, 30, 50))
    notary = Notary(_config(run, tmp_path, log_dir))
    await notary.start()
    try:
        assert (notary.size, notary.signed_size) == (60, 50)
        assert notary._next == {key: last + 1 for key, last in _last_offsets(run).items()}
    finally:
        await notary.stop(timeout=0.5)
    assert notary.signed_size == 60  # signed what was unsigned at stop, consistently with 50


def _last_offsets(run: Run) -> dict[tuple[str, int], int]:
    last: dict[tuple[str, int], int] = {}
    for record in run.records:
        last[(record.topic, record.partition)] = record.offset
    return last


@pytest.mark.parametrize("change", ["rewritten", "truncated"])
async def test_refuses_to_start_on_a_log_that_contradicts_its_checkpoint(
    run: Run, tmp_path: Path, change: str
) -> None:
    signed = _log(tmp_path / "signed", run.entries, run.signer, (0, 50))
    entries = list(run.entries)
    if change == "rewritten":
        entries[10] = entries[11]
    else:
        entries = entries[:40]
    log_dir = tmp_path / "log"
    with TileLog.open(log_dir, durable=False) as log:
        log.append(entries)
    copy_checkpoints(signed, log_dir)
    with pytest.raises(GatewayError) as excinfo:
        await Notary(_config(run, tmp_path, log_dir)).start()
    assert excinfo.value.reason == Reason.CHECKPOINT_INCONSISTENT
    # nothing was signed and the log is not left locked
    assert b"\n50\n" in (log_dir / CHECKPOINT_FILE).read_bytes()
    TileLog.open(log_dir).close()


async def test_refuses_a_checkpoint_file_it_did_not_sign(run: Run, tmp_path: Path) -> None:
    log_dir = _log(tmp_path / "log", run.entries, run.signer, (0, 50))
    text = (log_dir / CHECKPOINT_FILE).read_text()
    (log_dir / CHECKPOINT_FILE).write_text(text.replace("\n50\n", "\n51\n"))
    with pytest.raises(GatewayError) as excinfo:
        await Notary(_config(run, tmp_path, log_dir)).start()
    assert excinfo.value.reason == Reason.NOTE_SIGNATURE_INVALID


async def test_stops_signing_when_the_log_changes_under_it(run: Run, tmp_path: Path) -> None:
    log_dir = _log(tmp_path / "log", run.entries[:50], run.signer, (0, 50))
    notary = Notary(_config(run, tmp_path, log_dir))
    await notary.start()
    try:
        # someone replaces the log behind the notary's back with another history that is longer
        other = tmp_path / "other"
        with TileLog.open(other, durable=False) as log:
            log.append([*run.entries[1:51], *run.entries[51:]])
        original, notary._log = notary._log, TileLog.open(other, read_only=True)
        with pytest.raises(GatewayError) as excinfo:
            await notary._sign()
        assert excinfo.value.reason == Reason.CHECKPOINT_INCONSISTENT
        assert notary.signed_size == 50
        url = f"http://127.0.0.1:{notary.http_port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 503
            body = await response.json()
        assert (body["status"], body["reason"]) == ("refusing", "checkpoint.inconsistent")
        notary._log.close()
        notary._log = original
    finally:
        await notary.stop(timeout=0.5)
    assert notary.signed_size == 50  # still nothing signed at shutdown


async def test_a_failed_append_that_committed_is_not_repeated(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TileLog.append can fail after its commit point (the batch is then on disk): the notary must derive
    its positions from the disk again, or it would log the batch a second time."""
    log_dir = _log(tmp_path / "log", run.entries[:40], run.signer, (0, 40))
    notary = Notary(_config(run, tmp_path, log_dir))
    await notary.start()
    try:
        original = TileLog._write_state

        def commit_then_fail(self: TileLog, size: int, root: bytes) -> None:
            original(self, size, root)
            raise OSError(5, "I/O error after the commit point")

        monkeypatch.setattr(TileLog, "_write_state", commit_then_fail)
        with pytest.raises(GatewayError):
            await notary._append(run.records[40:60])
        monkeypatch.undo()
        assert notary.size == 60  # the batch is committed ...
        expected = {(r.topic, r.partition): r.offset + 1 for r in run.records[:60]}
        assert notary._next == expected  # ... and the positions say so: a re-delivery is dropped
    finally:
        await notary.stop(timeout=0.5)
