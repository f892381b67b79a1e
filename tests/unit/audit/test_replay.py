"""The tamper campaign: ``gateway audit verify`` finds and locates every alteration of the log, its
checkpoints or the Kafka records, and finds nothing in an untouched run.

The run (``_synthetic.build_run``): 300 records on several topics and partitions (signed events, junk, a
tombstone, a dead-lettered copy), their leaves in a tile log, checkpoints signed at sizes 0, 50, 100, 256
and 300, and a records dump. Each test copies it, changes exactly one thing, and checks the findings: which
reason codes, at which leaf index, topic/partition/offset and checkpoint size — and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import merkle
from gateway.audit.auditor import Auditor
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.layout import CHECKPOINT_HISTORY, entries_path, tile_path
from gateway.audit.leaf import ConsumedRecord, Leaf
from gateway.audit.notary import CheckpointStore
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer, sign_note
from gateway.audit.records import read_records_dump
from gateway.audit.report import AuditReport, Finding
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness
from gateway.cli.main import main
from gateway.contract.keys import SigningKey
from gateway.contract.registry import Registry
from gateway.contract.verify import EventVerifier
from gateway.errors import Reason
from tests.unit.audit._synthetic import KBRI, ORIGIN, Run, build_run, rebuilt_log, write_log

TOUCHED = 120  # the leaf most tests touch: after checkpoint 100, inside the first full tile (checkpoint 256)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture
def log_copy(run: Run, tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(run.log_dir, target)
    return target


def _audit(
    run: Run,
    log_dir: Path,
    *,
    records: Sequence[ConsumedRecord] | None = (),
    checkpoints: Sequence[tuple[bytes, str]] = (),
    registry: Registry | None = None,
    cosigners: Sequence[Any] = (),
    quorum: int = 0,
    tolerate_lag: bool = False,
) -> AuditReport:
    verifier = EventVerifier(registry=registry or run.world.registry, schemas=run.world.schemas)
    with Auditor(
        log_dir,
        notary_keys=[run.signer.verifier()],
        event_verifier=verifier,
        cosigners=cosigners,
        quorum=quorum,
        tolerate_lag=tolerate_lag,
    ) as auditor:
        auditor.load_stored_checkpoints()
        for note, source in checkpoints:
            auditor.add_checkpoint(note, source)
        auditor.scan_log()
        chosen = run.records if records == () else records
        if chosen is not None:
            for record in chosen:
                auditor.check_record(record)
            auditor.finish_records("test")
        return auditor.finish()


def _reasons(report: AuditReport) -> Counter[str]:
    return Counter(str(f.reason) for f in report.findings)


def _only(report: AuditReport, reason: Reason) -> list[Finding]:
    return [f for f in report.findings if f.reason == reason]


def _position(record: ConsumedRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


def _where(finding: Finding) -> tuple[str | None, int | None, int | None]:
    return (finding.topic, finding.partition, finding.offset)


def _mismatched_sizes(report: AuditReport) -> list[int | None]:
    return sorted(f.checkpoint_size or 0 for f in _only(report, Reason.CHECKPOINT_ROOT_MISMATCH))


def _forge(entry: bytes) -> bytes:
    """The same leaf claiming other data bytes: still a perfectly well-formed leaf."""
    leaf = Leaf.decode(entry)
    return replace(leaf, data_sha256=hashlib.sha256(b"forged").hexdigest()).encode()


# ---- the untouched run ---------------------------------------------------------------------------------


def test_untouched_run_has_no_findings(run: Run) -> None:
    report = _audit(run, run.log_dir)
    assert report.findings == [], report.summary()
    assert report.ok
    assert report.log_size == 300
    assert report.signed_size == 300
    assert [c.size for c in report.checkpoints] == [0, 50, 100, 256, 300]
    assert all(c.matches for c in report.checkpoints)
    assert report.records == {
        "source": "test",
        "read": 300,
        "matched": 300,
        "mismatched": 0,
        "not_logged": 0,
        "leaves_without_record": 0,
        "pending": 0,
        "expired": 0,
        "repeated": 0,
    }
    assert report.verdicts["accepted"] > 200
    assert report.verdicts["sig.digest-mismatch"] > 0
    assert "VERDICT: OK" in report.summary()


def test_untouched_run_without_records_checks_the_log_alone(run: Run) -> None:
    report = _audit(run, run.log_dir, records=None)
    assert report.ok
    assert report.records is None


# ---- the log -------------------------------------------------------------------------------------------


def test_entry_modified_in_place_is_located_by_its_tile_hash_and_its_record(run: Run, log_copy: Path) -> None:
    entries = list(run.entries[:256])
    entries[TOUCHED] = _forge(entries[TOUCHED])
    (log_copy / entries_path(0)).write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in entries))
    report = _audit(run, log_copy)
    tile = [f for f in _only(report, Reason.TLOG_CORRUPT) if f.leaf_index is not None]
    assert [f.leaf_index for f in tile] == [TOUCHED]
    assert _mismatched_sizes(report) == [256, 300]
    (mismatch,) = _only(report, Reason.LEAF_RECORD_MISMATCH)
    assert (mismatch.leaf_index, _where(mismatch)) == (TOUCHED, _position(run.records[TOUCHED]))
    assert set(_reasons(report)) == {"tlog.corrupt", "checkpoint.root-mismatch", "leaf.record-mismatch"}


def test_consistently_rewritten_log_is_located_by_checkpoints_and_records(run: Run, tmp_path: Path) -> None:
    entries = list(run.entries)
    entries[TOUCHED] = _forge(entries[TOUCHED])
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    assert _mismatched_sizes(report) == [256, 300]
    first = _only(report, Reason.CHECKPOINT_ROOT_MISMATCH)[0]
    assert "[100, 256)" in first.detail  # the divergence lies after the last reproduced checkpoint
    (mismatch,) = _only(report, Reason.LEAF_RECORD_MISMATCH)
    assert mismatch.leaf_index == TOUCHED
    assert set(_reasons(report)) == {"checkpoint.root-mismatch", "leaf.record-mismatch"}


def test_a_mismatch_names_the_differing_field_with_both_values(run: Run, tmp_path: Path) -> None:
    """The leaf's data digest forged (tiles rebuilt): the finding names ``data_sha256`` with the logged and
    the recomputed value, not two equal record digests; the record counts come from the findings."""
    entries = list(run.entries)
    entries[TOUCHED] = _forge(entries[TOUCHED])
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (mismatch,) = _only(report, Reason.LEAF_RECORD_MISMATCH)
    logged, recomputed = Leaf.decode(entries[TOUCHED]), Leaf.decode(run.entries[TOUCHED])
    assert [(d.field, d.logged, d.recomputed) for d in mismatch.differences] == [
        ("data_sha256", logged.data_sha256, recomputed.data_sha256)
    ]
    assert "data digest" in mismatch.detail
    assert report.records is not None
    assert (report.records["matched"], report.records["mismatched"]) == (299, 1)
    summary = report.summary()
    assert "299 matched their leaf, 1 differ from it" in summary
    assert f"data_sha256: logged {logged.data_sha256}, recomputed {recomputed.data_sha256}" in summary
    document = report.to_json()["findings"]
    assert [f["differences"] for f in document if f["reason"] == "leaf.record-mismatch"] == [
        [{"field": "data_sha256", "logged": logged.data_sha256, "recomputed": recomputed.data_sha256}]
    ]


def test_a_rewritten_record_names_its_record_digest(run: Run) -> None:
    target = run.records[TOUCHED]
    assert target.value is not None
    records = [
        replace(r, value=r.value + b" ") if i == TOUCHED and r.value else r for i, r in enumerate(run.records)
    ]
    report = _audit(run, run.log_dir, records=records)
    (mismatch,) = report.findings
    fields = [d.field for d in mismatch.differences]
    # the record digest first, then the data digest and the verdict the changed bytes now get
    assert fields == ["record_sha256", "data_sha256", "verdict", "reason", "kid"]
    assert "rewritten on the broker" in mismatch.detail


def test_deleted_entry(run: Run, tmp_path: Path) -> None:
    entries = [e for i, e in enumerate(run.entries) if i != TOUCHED]
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (missing,) = _only(report, Reason.RECORD_NOT_LOGGED)
    assert _where(missing) == _position(run.records[TOUCHED])
    assert "skips this record" in missing.detail
    assert _mismatched_sizes(report) == [256]
    (beyond,) = _only(report, Reason.CHECKPOINT_BEYOND_LOG)
    assert beyond.checkpoint_size == 300
    assert set(_reasons(report)) == {"record.not-logged", "checkpoint.root-mismatch", "checkpoint.beyond-log"}


def test_reordered_entries_of_one_partition(run: Run, tmp_path: Path) -> None:
    j = TOUCHED + 6  # same topic and partition as TOUCHED
    assert _position(run.records[j])[:2] == _position(run.records[TOUCHED])[:2]
    entries = list(run.entries)
    entries[TOUCHED], entries[j] = entries[j], entries[TOUCHED]
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (order,) = _only(report, Reason.LEAF_OUT_OF_ORDER)
    assert (order.leaf_index, _where(order)) == (j, _position(run.records[TOUCHED]))
    assert _mismatched_sizes(report) == [256, 300]
    assert set(_reasons(report)) == {"leaf.out-of-order", "checkpoint.root-mismatch"}


def test_reordered_entries_of_different_partitions_are_located_between_checkpoints(
    run: Run, tmp_path: Path
) -> None:
    entries = list(run.entries)
    entries[TOUCHED], entries[TOUCHED + 1] = entries[TOUCHED + 1], entries[TOUCHED]
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    assert set(_reasons(report)) == {"checkpoint.root-mismatch"}
    assert "[100, 256)" in _only(report, Reason.CHECKPOINT_ROOT_MISMATCH)[0].detail


def test_inserted_leaf_without_a_record(run: Run, tmp_path: Path) -> None:
    fabricated = replace(
        Leaf.decode(run.entries[0]), topic="xchg.iom.alert.v1", partition=3, offset=0
    ).encode()
    entries = [*run.entries[:TOUCHED], fabricated, *run.entries[TOUCHED:]]
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (orphan,) = _only(report, Reason.LEAF_RECORD_MISSING)
    assert (orphan.leaf_index, _where(orphan)) == (TOUCHED, ("xchg.iom.alert.v1", 3, 0))
    assert _mismatched_sizes(report) == [256, 300]
    # one entry more than the last signed size: nothing signed covers the last one
    assert set(_reasons(report)) == {"leaf.record-missing", "checkpoint.root-mismatch", "log.unsigned-tail"}


def test_duplicated_leaf(run: Run, tmp_path: Path) -> None:
    entries = [*run.entries[:TOUCHED], run.entries[100], *run.entries[TOUCHED:]]
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (duplicate,) = _only(report, Reason.LEAF_DUPLICATE)
    assert (duplicate.leaf_index, _where(duplicate)) == (TOUCHED, _position(run.records[100]))
    assert "leaf 100" in duplicate.detail
    assert set(_reasons(report)) == {"leaf.duplicate", "checkpoint.root-mismatch", "log.unsigned-tail"}


def test_truncated_log(run: Run, tmp_path: Path) -> None:
    report = _audit(run, rebuilt_log(run, tmp_path / "log", run.entries[:200]))
    assert sorted(f.checkpoint_size or 0 for f in _only(report, Reason.CHECKPOINT_BEYOND_LOG)) == [256, 300]
    unlogged = _only(report, Reason.RECORD_NOT_LOGGED)
    assert sorted(_where(f) for f in unlogged) == sorted(_position(r) for r in run.records[200:])  # type: ignore[type-var]
    assert report.signed_size == 100
    # rebuilt in one batch: the partial tiles checkpoints 50 and 100 need (tile/0/000.p/50, .p/100) are gone
    missing = _only(report, Reason.LOG_TILE_MISSING)
    assert [(f.checkpoint_size, f.source) for f in missing] == [(s, tile_path(0, 0, s)) for s in (50, 100)]
    assert set(_reasons(report)) == {"checkpoint.beyond-log", "record.not-logged", "log.tile-missing"}
    # a live notary lags: the tail may be tolerated, the signed-then-deleted entries never are
    lenient = _audit(run, rebuilt_log(run, tmp_path / "log2", run.entries[:200]), tolerate_lag=True)
    assert set(_reasons(lenient)) == {"checkpoint.beyond-log", "log.tile-missing"}
    assert lenient.records is not None
    assert lenient.records["pending"] == 100


def test_malformed_leaf(run: Run, tmp_path: Path) -> None:
    entries = list(run.entries)
    entries[TOUCHED] = json.dumps(
        json.loads(entries[TOUCHED]), indent=1
    ).encode()  # same content, not canonical
    report = _audit(run, rebuilt_log(run, tmp_path / "log", entries))
    (malformed,) = _only(report, Reason.LEAF_MALFORMED)
    assert malformed.leaf_index == TOUCHED
    (unlogged,) = _only(report, Reason.RECORD_NOT_LOGGED)
    assert _where(unlogged) == _position(run.records[TOUCHED])


def test_unreadable_bundle(run: Run, log_copy: Path) -> None:
    bundle = log_copy / entries_path(1, 300 - 256)
    bundle.write_bytes(bundle.read_bytes()[:-10])
    report = _audit(run, log_copy, records=None)
    (corrupt,) = _only(report, Reason.TLOG_CORRUPT)
    assert corrupt.source == entries_path(1, 44)
    assert corrupt.leaf_index is not None
    assert 256 <= corrupt.leaf_index < 300
    (beyond,) = _only(report, Reason.CHECKPOINT_BEYOND_LOG)
    assert beyond.checkpoint_size == 300
    assert "unreadable after 256" in beyond.detail


def test_corrupt_upper_tile(run: Run, log_copy: Path) -> None:
    (log_copy / tile_path(1, 0, 1)).write_bytes(b"\x00" * 32)
    report = _audit(run, log_copy, records=None)
    (corrupt,) = report.findings
    assert corrupt.reason == Reason.TLOG_CORRUPT
    assert corrupt.source == tile_path(1, 0)
    assert corrupt.leaf_index == 0


def test_state_file_root_rewritten(run: Run, log_copy: Path) -> None:
    state = log_copy / "state"
    lines = state.read_bytes().split(b"\n")
    lines[2] = base64.b64encode(b"\x01" * 32)
    state.write_bytes(b"\n".join(lines))
    report = _audit(run, log_copy, records=None)
    assert [f.source for f in report.findings] == [str(state)]


def test_state_file_rolled_back(run: Run, log_copy: Path) -> None:
    """Only ``state`` rolled back to an earlier tree (bundles, tiles left): signed sizes beyond it show."""
    with TileLog.open(run.log_dir, read_only=True) as log:
        root = log.root_at(200)
    (log_copy / "state").write_text(f"xchg-tlog-state/v1\n200\n{base64.b64encode(root).decode()}\n")
    report = _audit(run, log_copy)
    assert report.log_size == 200
    assert sorted(f.checkpoint_size or 0 for f in _only(report, Reason.CHECKPOINT_BEYOND_LOG)) == [256, 300]
    assert len(_only(report, Reason.RECORD_NOT_LOGGED)) == 100
    # the tiles and bundles of entries 200..299 are still there: beyond the tree the state describes
    beyond = sorted(f.source or "" for f in _only(report, Reason.LOG_BEYOND_TREE))
    assert entries_path(1, 44) in beyond
    assert set(_reasons(report)) == {"checkpoint.beyond-log", "record.not-logged", "log.beyond-tree"}


def test_progress_only_on_a_terminal(run: Run) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        with Auditor(run.log_dir, notary_keys=[run.signer.verifier()], progress=stream) as auditor:
            auditor.load_stored_checkpoints()
            auditor.scan_log()
            assert auditor.finish().ok
        assert ("verifying log" in stream.getvalue()) is shown


# ---- checkpoints -----------------------------------------------------------------------------------------


def test_altered_checkpoint(run: Run, log_copy: Path) -> None:
    path = log_copy / CHECKPOINT_HISTORY / "100"
    text = path.read_text()
    root = text.splitlines()[2]
    path.write_text(text.replace(root, base64.b64encode(b"\x02" * 32).decode()))
    report = _audit(run, log_copy)
    (altered,) = report.findings
    assert altered.reason == Reason.NOTE_SIGNATURE_INVALID
    assert (altered.checkpoint_size, altered.source) == (100, str(path))


def test_checkpoint_signed_by_another_key(run: Run, log_copy: Path) -> None:
    impostor = Ed25519Signer(ORIGIN, SigningKey.generate())
    note = sign_note(Checkpoint(ORIGIN, 5, b"\x03" * 32).to_note_body(), [impostor])
    report = _audit(run, log_copy, checkpoints=[(note, "impostor")])
    assert [(f.reason, f.source) for f in report.findings] == [(Reason.NOTE_UNVERIFIED, "impostor")]


def test_forked_checkpoints_signed_by_the_notary(run: Run, log_copy: Path) -> None:
    forked = list(run.entries)
    forked[30] = _forge(forked[30])
    notes = [
        (
            sign_note(Checkpoint(ORIGIN, size, merkle.root(forked[:size])).to_note_body(), [run.signer]),
            f"fork-{size}",
        )
        for size in (100, 150)
    ]
    report = _audit(run, log_copy, checkpoints=notes)
    (fork,) = _only(report, Reason.CHECKPOINT_INCONSISTENT)
    assert (fork.checkpoint_size, fork.source) == (100, "fork-100")
    mismatches = _only(report, Reason.CHECKPOINT_ROOT_MISMATCH)
    assert sorted((f.checkpoint_size, f.source) for f in mismatches) == [(100, "fork-100"), (150, "fork-150")]  # type: ignore[type-var]
    assert "[50, 100)" in mismatches[0].detail
    assert set(_reasons(report)) == {"checkpoint.inconsistent", "checkpoint.root-mismatch"}
    assert report.signed_size == 300  # the honest checkpoints still match


def test_quorum_of_cosignatures(run: Run, log_copy: Path, tmp_path: Path) -> None:
    witness = Witness(
        CosignatureV1Signer("kemensos.cosigner", SigningKey.generate()), {ORIGIN: [run.signer.verifier()]}
    )
    store = CheckpointStore(log_copy, origin=ORIGIN, verifiers=[run.signer.verifier()], durable=False)
    previous = 0
    for size in (0, 50, 100):
        note = store.get(size)
        assert note is not None
        proof = merkle.consistency_proof(previous, size, lambda lvl, idx: _hash_at(run.entries, lvl, idx))
        line = witness.add_checkpoint(note, old_size=previous, proof=proof)
        store.save(note + line.encode(), size, latest=False)
        previous = size
    report = _audit(run, log_copy, cosigners=[witness.verifier()], quorum=1)
    assert report.ok, report.summary()
    assert report.cosigned_size == 100
    assert [c.size for c in report.checkpoints if c.cosigned] == [0, 50, 100]
    unsigned = _audit(run, run.log_dir, cosigners=[witness.verifier()], quorum=1)
    assert [f.reason for f in unsigned.findings] == [Reason.COSIGN_QUORUM_NOT_MET]


def _hash_at(entries: Sequence[bytes], level: int, index: int) -> bytes:
    return merkle.root(entries[index << level : (index + 1) << level])


# ---- Kafka records ---------------------------------------------------------------------------------------


def test_record_missing_from_an_honestly_signed_log(run: Run, tmp_path: Path) -> None:
    entries = [e for i, e in enumerate(run.entries) if i != TOUCHED]
    write_log(tmp_path / "log", entries, run.signer, sizes=(0, 50, 299))
    report = _audit(run, tmp_path / "log")
    (missing,) = report.findings
    assert missing.reason == Reason.RECORD_NOT_LOGGED
    assert _where(missing) == _position(run.records[TOUCHED])


def test_leaf_whose_record_is_gone_from_kafka(run: Run) -> None:
    records = [r for i, r in enumerate(run.records) if i != TOUCHED]
    report = _audit(run, run.log_dir, records=records)
    (orphan,) = report.findings
    assert orphan.reason == Reason.LEAF_RECORD_MISSING
    assert (orphan.leaf_index, _where(orphan)) == (TOUCHED, _position(run.records[TOUCHED]))


def test_leaves_past_retention_are_not_findings(run: Run) -> None:
    verifier = EventVerifier(registry=run.world.registry, schemas=run.world.schemas)
    first = run.records[:20]
    with Auditor(run.log_dir, notary_keys=[run.signer.verifier()], event_verifier=verifier) as auditor:
        auditor.load_stored_checkpoints()
        auditor.scan_log()
        for record in run.records[20:]:
            auditor.check_record(record)
        earliest: dict[tuple[str, int], int] = {}
        for record in first:  # the broker says these partitions now start after the expired records
            key = (record.topic, record.partition)
            earliest[key] = max(earliest.get(key, 0), record.offset + 1)
        auditor.finish_records("broker", earliest)
        report = auditor.finish()
    assert report.ok, report.summary()
    assert report.records is not None
    assert report.records["expired"] == 20


def test_record_rewritten_on_the_broker(run: Run) -> None:
    target = run.records[TOUCHED]
    headers = tuple((k, b"2020-01-02T00:00:00Z" if k == "ce_time" else v) for k, v in target.headers)
    records = [replace(r, headers=headers) if i == TOUCHED else r for i, r in enumerate(run.records)]
    report = _audit(run, run.log_dir, records=records)
    (rewritten,) = report.findings
    assert rewritten.reason == Reason.LEAF_RECORD_MISMATCH
    assert (rewritten.leaf_index, _where(rewritten)) == (TOUCHED, _position(target))


def test_verdicts_re_verified_against_the_registry(run: Run) -> None:
    def revoke(document: dict[str, Any]) -> None:
        party = run.world.party_doc(document, KBRI)
        party["keys"][0]["revoked_at"] = datetime(2020, 6, 1, tzinfo=UTC)

    registry = run.world.with_document(revoke).registry
    report = _audit(run, run.log_dir, registry=registry)
    changed = _only(report, Reason.LEAF_VERDICT_MISMATCH)
    kbri = [i for i, e in enumerate(run.entries) if Leaf.decode(e).kid == f"{KBRI}-sig-test"]
    assert sorted(f.leaf_index or 0 for f in changed) == kbri
    assert "key.revoked" in changed[0].detail
    assert set(_reasons(report)) == {"leaf.verdict-mismatch"}


def test_findings_are_capped_but_counted(run: Run, tmp_path: Path) -> None:
    verifier = EventVerifier(registry=run.world.registry, schemas=run.world.schemas)
    log = rebuilt_log(run, tmp_path / "log", run.entries[:10])
    with Auditor(
        log, notary_keys=[run.signer.verifier()], event_verifier=verifier, max_findings=5
    ) as auditor:
        auditor.load_stored_checkpoints()
        auditor.scan_log()
        for record in run.records:
            auditor.check_record(record)
        auditor.finish_records("test")
        report = auditor.finish()
    assert len(report.findings) == 5
    assert sum(report.suppressed.values()) > 200
    assert not report.ok


# ---- the command line ------------------------------------------------------------------------------------


def _cli_verify(run: Run, log_dir: Path, report: Path, *extra: str) -> int:
    vkey = log_dir.parent / "notary.vkey"
    vkey.write_text(run.vkey + "\n")
    return main(
        [
            "audit",
            "verify",
            "--log",
            str(log_dir),
            "--vkey",
            str(vkey),
            "--registry",
            str(run.registry_file),
            "--records",
            str(run.records_file),
            "--json",
            str(report),
            *extra,
        ]
    )


def test_cli_verify_clean_and_tampered(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.json"
    assert _cli_verify(run, run.log_dir, clean) == 0
    assert "VERDICT: OK" in capsys.readouterr().out
    document = json.loads(clean.read_text())
    assert document["ok"] is True
    assert document["findings"] == []
    assert document["signed_size"] == 300
    assert document["records"]["matched"] == 300

    entries = [e for i, e in enumerate(run.entries) if i != TOUCHED]
    tampered = tmp_path / "tampered.json"
    assert _cli_verify(run, rebuilt_log(run, tmp_path / "log", entries), tampered) == 1
    out = capsys.readouterr().out
    assert "VERDICT: FAIL" in out
    assert "record.not-logged" in out
    document = json.loads(tampered.read_text())
    located = [f for f in document["findings"] if f["reason"] == "record.not-logged"]
    record = run.records[TOUCHED]
    assert [(f["topic"], f["partition"], f["offset"]) for f in located] == [_position(record)]
    assert {f["reason"] for f in document["findings"]} == {
        "record.not-logged",
        "checkpoint.root-mismatch",
        "checkpoint.beyond-log",
    }


def test_records_dump_round_trip(run: Run) -> None:
    assert list(read_records_dump(run.records_file)) == run.records


def test_cli_prove_and_check_receipt(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = run.records[TOUCHED]
    event_id = dict(target.headers)["ce_id"]
    assert event_id is not None
    receipt = tmp_path / "receipt"
    vkey = tmp_path / "notary.vkey"
    vkey.write_text(run.vkey)
    assert main(["audit", "prove", event_id.decode(), "--log", str(run.log_dir), "--out", str(receipt)]) == 0
    assert receipt.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\nextra ")
    data = tmp_path / "data"
    assert target.value is not None
    data.write_bytes(target.value)
    capsys.readouterr()
    assert main(["audit", "check-receipt", str(receipt), "--vkey", str(vkey), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK leaf ")  # the first leaf of this event id (copies were re-published)
    assert f"id={event_id.decode()}" in out
    # the wrong data, a tampered proof, another key: all fail
    data.write_bytes(b'{"other":1}')
    assert main(["audit", "check-receipt", str(receipt), "--vkey", str(vkey), "--data", str(data)]) == 1
    text = receipt.read_bytes().split(b"\n")
    text[3] = base64.b64encode(b"\x00" * 32)
    receipt.write_bytes(b"\n".join(text))
    assert main(["audit", "check-receipt", str(receipt), "--vkey", str(vkey)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys" / "notary.pem"
    assert main(["audit", "keygen", "--notary", "sandbox", "--out", str(out)]) == 0
    vkey = capsys.readouterr().out.strip()
    assert vkey.startswith("id.trafficking.xchg/notary/sandbox+")
    assert (tmp_path / "keys" / "notary.vkey").read_text().strip() == vkey
    assert out.stat().st_mode & 0o777 == 0o600
    assert main(["audit", "keygen", "--cosigner", "kemensos.cosigner", "--out", str(tmp_path / "c.pem")]) == 0
    assert capsys.readouterr().out.startswith("kemensos.cosigner+")
