"""What no signature covers, and files that do not belong: ``gateway audit verify`` never says OK about them.

Each test copies a *real* notary log — the one ``gateway demo --once`` left (``tests/data/demo-notary``,
provenance in ``tests/data/README.md``: 18 entries, checkpoints at sizes 0 and 18, the partial tiles and
bundles of every batch the notary wrote) — changes one thing the way the independent check of issue 17 did,
and requires the finding with its own reason code through the command line (exit 1), and nothing else. Where
the demo log cannot show a class (a signed checkpoint whose partial tile was deleted needs a checkpoint
inside a tile, which the demo's notary did not sign), the synthetic run of ``_synthetic.py`` (same writer,
same checkpoint store) is used.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, entries_path, tile_path
from gateway.audit.leaf import Leaf
from gateway.audit.note import CosignatureV1Signer, Note, NoteSignature, verifier_from_vkey
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness
from gateway.cli.main import main
from gateway.contract.keys import SigningKey
from tests.paths import DATA
from tests.unit.audit._synthetic import build_run, write_log

DEMO = DATA / "demo-notary"
VKEY = DEMO / "notary.vkey"
SIZE = 18


@pytest.fixture
def log(tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(DEMO / "log", target)
    return target


def _verify(log_dir: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    report = log_dir.parent / "report.json"
    code = main(
        ["audit", "verify", "--log", str(log_dir), "--vkey", str(VKEY), "--json", str(report), *extra]
    )
    return code, json.loads(report.read_text())


def _reasons(document: dict[str, Any]) -> list[str]:
    return sorted(f["reason"] for f in document["findings"])


def test_the_untouched_demo_log_passes(log: Path) -> None:
    code, document = _verify(log)
    assert (code, document["findings"]) == (0, [])
    assert (document["log_size"], document["signed_size"], document["unsigned_tail"]) == (SIZE, SIZE, 0)
    # the notary's leftovers of earlier batches are there, and consistent with the tree
    leftovers = [p.name for p in (log / "tile" / "0" / "000.p").iterdir()]
    assert len(leftovers) > 1


# ---- unsigned content ------------------------------------------------------------------------------------


def test_deleted_checkpoints_leave_every_entry_unsigned(log: Path) -> None:
    """The issue's first reproduction: delete ``checkpoint`` and ``checkpoints/18`` — main said OK."""
    (log / CHECKPOINT_FILE).unlink()
    (log / CHECKPOINT_HISTORY / str(SIZE)).unlink()
    code, document = _verify(log)
    assert code == 1
    assert _reasons(document) == ["log.checkpoint-missing", "log.unsigned-tail"]
    (tail,) = [f for f in document["findings"] if f["reason"] == "log.unsigned-tail"]
    assert (tail["leaf_index"], tail["checkpoint_size"]) == (0, 0)
    assert f"[0, {SIZE})" in tail["detail"]
    assert (document["signed_size"], document["unsigned_tail"]) == (0, SIZE)


def test_missing_checkpoint_file_alone(log: Path) -> None:
    (log / CHECKPOINT_FILE).unlink()
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.checkpoint-missing"])
    assert document["findings"][0]["source"] == str(log / CHECKPOINT_FILE)


def _append_unsigned(log_dir: Path, count: int) -> None:
    """What a running notary does between checkpoints: append records' leaves, sign nothing yet."""
    with TileLog.open(log_dir, durable=False) as tiles:
        last = Leaf.decode(tiles.entry(tiles.size - 1))
        tiles.append([replace(last, offset=last.offset + 1 + i).encode() for i in range(count)])


def test_a_tail_between_checkpoints_fails_unless_allowed(log: Path) -> None:
    _append_unsigned(log, 5)
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.unsigned-tail"])
    assert f"[{SIZE}, {SIZE + 5})" in document["findings"][0]["detail"]
    code, document = _verify(log, "--allow-unsigned", "5")
    assert (code, document["findings"]) == (0, [])
    assert (document["unsigned_tail"], document["trust"]["allow_unsigned"]) == (5, 5)
    code, document = _verify(log, "--allow-unsigned", "4")  # one too many is not allowed
    assert (code, _reasons(document)) == (1, ["log.unsigned-tail"])


# ---- files under tile/ -----------------------------------------------------------------------------------


def test_garbage_tiles_beyond_the_tree(log: Path) -> None:
    (log / tile_path(0, 0, 30)).write_bytes(bytes(30 * 32))
    (log / tile_path(1, 0, 1)).parent.mkdir(parents=True)
    (log / tile_path(1, 0, 1)).write_bytes(bytes(32))  # a level the tree of 18 does not have
    (log / entries_path(3)).write_bytes(b"\x00\x01x")
    code, document = _verify(log)
    assert code == 1
    assert _reasons(document) == ["log.beyond-tree"] * 3
    assert sorted(f["source"] for f in document["findings"]) == sorted(
        [tile_path(0, 0, 30), tile_path(1, 0, 1), entries_path(3)]
    )


def test_beyond_the_tree_names_an_unfinished_batch(log: Path) -> None:
    (log / tile_path(0, 0, 20)).write_bytes(bytes(20 * 32))
    (log / "pending").write_text(tile_path(0, 0, 20) + "\n")
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.beyond-tree"])
    assert "listed in pending" in document["findings"][0]["detail"]


@pytest.mark.parametrize(
    "name",
    [
        "tile/0/000.p/011",  # a width with a leading zero
        "tile/0/0.p/18",  # an index not in 3-digit groups
        "tile/0/000.p/18.tmp",  # a temporary file
        "tile/entries/000.p/256",  # a partial of full width
        "tile/7/foo",  # anything else
        "tile/README",
    ],
)
def test_stray_or_misnamed_files(log: Path, name: str) -> None:
    (log / name).parent.mkdir(parents=True, exist_ok=True)
    (log / name).write_bytes(b"junk")
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.stray-file"])
    assert document["findings"][0]["source"] == name


@pytest.mark.parametrize("leftover", [tile_path(0, 0, 11), entries_path(0, 12), tile_path(0, 0, 17)])
def test_altered_leftover_of_an_earlier_batch(log: Path, leftover: str) -> None:
    """A leftover partial tile or bundle is what a tlog-tiles client reads to check an earlier checkpoint:
    it must be a prefix of the tree, byte for byte."""
    path = log / leftover
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01
    path.write_bytes(bytes(data))
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.leftover-mismatch"])
    assert document["findings"][0]["source"] == leftover


def test_truncated_leftover_bundle(log: Path) -> None:
    path = log / entries_path(0, 14)
    path.write_bytes(path.read_bytes()[:-3])
    code, document = _verify(log)
    assert (code, _reasons(document)) == (1, ["log.leftover-mismatch"])


def test_deleted_tile_a_signed_checkpoint_needs(tmp_path: Path) -> None:
    """A checkpoint signed inside a tile (size 50 of 120) is checked by a tlog-tiles client with the partial
    tile of width 50; deleting it leaves that signed checkpoint uncheckable from the log's files."""
    (tmp_path / "run").mkdir()
    run = build_run(tmp_path / "run", count=120)
    log = tmp_path / "log"
    write_log(log, run.entries, run.signer, sizes=(0, 50, 120))
    (log / tile_path(0, 0, 50)).unlink()
    vkey = tmp_path / "notary.vkey"
    vkey.write_text(run.vkey)
    report = tmp_path / "report.json"
    assert main(["audit", "verify", "--log", str(log), "--vkey", str(vkey), "--json", str(report)]) == 1
    document = json.loads(report.read_text())
    assert _reasons(document) == ["log.tile-missing"]
    assert (document["findings"][0]["checkpoint_size"], document["findings"][0]["source"]) == (
        50,
        tile_path(0, 0, 50),
    )
    # the bundle of width 50 is not needed to check the checkpoint: deleting it is no finding
    (log / tile_path(0, 0, 50)).write_bytes((log / tile_path(0, 0, 120)).read_bytes()[: 50 * 32])
    (log / entries_path(0, 50)).unlink()
    assert main(["audit", "verify", "--log", str(log), "--vkey", str(vkey)]) == 0


# ---- cosignatures ----------------------------------------------------------------------------------------


def _cosign(log_dir: Path, name: str) -> tuple[Witness, bytes]:
    """A cosigner's line on the demo's latest checkpoint (a witness that saw it grow from 0)."""
    notary = verifier_from_vkey(VKEY.read_text().strip())
    witness = Witness(CosignatureV1Signer(name, SigningKey.generate()), {notary.name: [notary]})
    note = (log_dir / CHECKPOINT_FILE).read_bytes()
    return witness, witness.add_checkpoint(note, old_size=0, proof=[]).encode()


def _cosigner_file(tmp_path: Path, witness: Witness) -> str:
    path = tmp_path / f"{witness.verifier().name}.vkey"
    path.write_text(str(witness.verifier().vkey()))
    return str(path)


def test_invalid_cosignature_is_a_finding_whatever_the_quorum(log: Path, tmp_path: Path) -> None:
    witness, line = _cosign(log, "kemensos.cosigner")
    note = (log / CHECKPOINT_FILE).read_bytes()
    parsed = Note.parse(note + line)
    good = parsed.signatures[-1]
    bad = NoteSignature(good.name, good.key_id, good.signature[:8] + bytes(64))
    (log / CHECKPOINT_FILE).write_bytes(Note(parsed.text, (*parsed.signatures[:-1], bad)).to_bytes())
    cosigner = _cosigner_file(tmp_path, witness)
    for quorum in ("0", "1"):
        code, document = _verify(log, "--cosigner", cosigner, "--quorum", quorum)
        expected = (["cosign.quorum-not-met"] if quorum == "1" else []) + ["cosign.signature-invalid"]
        assert (code, _reasons(document)) == (1, expected)
        finding = next(f for f in document["findings"] if f["reason"] == "cosign.signature-invalid")
        assert (finding["checkpoint_size"], finding["source"]) == (SIZE, str(log / CHECKPOINT_FILE))
        assert "kemensos.cosigner" in finding["detail"]
    # check-receipt says the same about a receipt carrying that checkpoint, at quorum 0 too
    receipt = tmp_path / "receipt"
    first_id = Leaf.decode(TileLog.open(log, read_only=True).entry(0)).id
    assert first_id is not None
    assert main(["audit", "prove", first_id, "--log", str(log), "--out", str(receipt)]) == 0
    check = ["audit", "check-receipt", str(receipt), "--vkey", str(VKEY), "--cosigner", cosigner]
    assert main(check) == 1
    assert main(["audit", "check-receipt", str(receipt), "--vkey", str(VKEY)]) == 0  # cosigner not named


def test_valid_cosignature_is_reported_with_its_time(log: Path, tmp_path: Path) -> None:
    witness, line = _cosign(log, "iom.cosigner")
    (log / CHECKPOINT_FILE).write_bytes((log / CHECKPOINT_FILE).read_bytes() + line)
    code, document = _verify(log, "--cosigner", _cosigner_file(tmp_path, witness), "--quorum", "1")
    assert (code, document["findings"]) == (0, [])
    (latest,) = [c for c in document["checkpoints"] if c["size"] == SIZE]
    assert latest["cosigned"] is True
    assert [c["cosigner"] for c in latest["cosignatures"]] == ["iom.cosigner"]
    assert latest["cosignatures"][0]["time"].endswith("Z")
    assert document["cosigned_size"] == SIZE
