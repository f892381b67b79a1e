"""``gateway audit prove --case CASE_ID``: an auditor starts from a case number, not an event id.

The log holds no case id (docs/AUDIT.md section 10); the auditor's records do (the record key). Every record
of the case gets the receipt of its leaf, each verifiable with ``check-receipt``, listed in ``case.json``
with a ``delivery`` list per event: the recipients' signed receipts for it in the log, each with its own
inclusion proof. A record of the
case that the signed log lacks, or that differs from its leaf, makes the command fail and is named.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.leaf import ConsumedRecord, Leaf, leaf_for_record, record_sha256
from gateway.audit.records import write_records_dump
from gateway.cli.main import main
from gateway.contract.receipt import RECEIPT_TYPE, receipt_data, receipt_id
from tests.unit.audit._synthetic import KBRI, Run, build_run, write_log

CASE = "KBRI-KCH-2020-000123"
COUNT = 40


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    root = tmp_path_factory.mktemp("case")
    run = build_run(root, count=COUNT)
    log = root / "signed-log"
    write_log(log, run.entries, run.signer, sizes=(0, COUNT))
    (root / "notary.vkey").write_text(run.vkey)
    return run, log


def _prove(
    run: Run, log: Path, out: Path, case: str = CASE, records: Sequence[ConsumedRecord] | None = None
) -> tuple[int, dict[str, Any]]:
    dump = run.records_file
    if records is not None:
        dump = out.parent / "records.jsonl"
        write_records_dump(dump, records)
    vkey = log.parent / "notary.vkey"
    code = main(
        ["audit", "prove", "--case", case, "--log", str(log), "--records", str(dump), "--out", str(out),
         "--vkey", str(vkey)]
    )  # fmt: skip
    manifest = out / "case.json"
    return code, json.loads(manifest.read_text()) if manifest.exists() else {}


def test_every_event_of_the_case_gets_a_verifiable_receipt(
    small: tuple[Run, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, log = small
    code, manifest = _prove(run, log, tmp_path / "proofs")
    assert code == 0
    assert (manifest["format"], manifest["case_id"], manifest["checkpoint_size"]) == (
        "xchg-case-proofs/v1",
        CASE,
        COUNT,
    )
    of_case = [r for r in run.records if r.key == CASE.encode()]
    assert len(of_case) > 10
    events = manifest["events"]
    assert sorted(
        (e["record"]["topic"], e["record"]["partition"], e["record"]["offset"]) for e in events
    ) == sorted((r.topic, r.partition, r.offset) for r in of_case)
    assert manifest["not_in_log"] == []
    for event in events:
        assert event["publication"]["verified"] is True
        assert event["record"]["matches_leaf"] is True
        assert event["delivery"] == []  # no receipt leaves in this log
        assert event["record"]["timestamp"].endswith("Z")
    capsys.readouterr()
    vkey = str(log.parent / "notary.vkey")
    for event in events[:3]:
        receipt = tmp_path / "proofs" / event["publication"]["receipt"]
        assert main(["audit", "check-receipt", str(receipt), "--vkey", vkey]) == 0
        assert f"id={event['event']['id']}" in capsys.readouterr().out
    # nothing of another case, and no data or case payload in the manifest
    assert "ALR-IOM" not in json.dumps(manifest)


def test_a_case_the_records_do_not_hold(small: tuple[Run, Path], tmp_path: Path) -> None:
    run, log = small
    code, manifest = _prove(run, log, tmp_path / "proofs", case="KBRI-KCH-1999-000001")
    assert code == 1
    assert (manifest["events"], manifest["not_in_log"]) == ([], [])


def test_records_the_signed_log_lacks_or_that_differ(small: tuple[Run, Path], tmp_path: Path) -> None:
    run, log = small
    of_case = [i for i, r in enumerate(run.records) if r.key == CASE.encode() and r.value]
    changed, extra = of_case[0], run.records[of_case[1]]
    late = replace(extra, offset=extra.offset + 1000)  # a record after what the notary logged
    records = [replace(r, value=b'{"x":1}') if i == changed else r for i, r in enumerate(run.records)]
    code, manifest = _prove(run, log, tmp_path / "proofs", records=[*records, late])
    assert code == 1
    assert [(m["topic"], m["partition"], m["offset"]) for m in manifest["not_in_log"]] == [
        (late.topic, late.partition, late.offset)
    ]
    differing = [e for e in manifest["events"] if not e["record"]["matches_leaf"]]
    assert [e["record"]["offset"] for e in differing] == [run.records[changed].offset]


def test_event_id_and_case_are_exclusive(small: tuple[Run, Path], tmp_path: Path) -> None:
    _, log = small
    assert main(["audit", "prove", "x", "--case", CASE, "--log", str(log), "--out", str(tmp_path)]) == 2
    assert (
        main(["audit", "prove", "--case", CASE, "--log", str(log), "--out", str(tmp_path)]) == 2
    )  # no records


def test_a_recipients_signed_receipt_is_proven_next_to_the_publication(
    small: tuple[Run, Path], tmp_path: Path
) -> None:
    """Kemensos's signed delivery receipt for the case's referral is a leaf of the log: every logged copy of
    that record gets it in its ``delivery`` list with an inclusion proof that ``check-receipt`` verifies; a
    receipt naming another digest proves nothing."""
    run, _ = small
    referral = next(
        r for r in run.records if r.key == CASE.encode() and r.topic == "xchg.kemlu.kbri-kuching.case.v1"
    )
    leaf = Leaf.decode(leaf_for_record(referral, run.verifier()).encode())
    assert leaf.verdict == "accepted"

    def receipt_record(offset: int, digest: str) -> ConsumedRecord:
        data = receipt_data(
            event_id=str(leaf.id), event_source=KBRI, event_type=leaf.type, digest=digest,
            read_from=(referral.topic, referral.partition, referral.offset), outcome="delivered", reason=None,
            finished_at="2026-12-01T08:00:00Z",
        )  # fmt: skip
        rid = receipt_id("kemensos", KBRI, str(leaf.id), "delivered", digest)
        wire = run.world.event(RECEIPT_TYPE, data, by="kemensos", event_id=rid).to_kafka()
        return ConsumedRecord(
            topic="xchg.kemensos.delivery.v1", partition=0, offset=offset, timestamp=int(time.time() * 1000),
            key=wire.key, value=wire.value, headers=tuple(wire.headers),
        )  # fmt: skip

    genuine = receipt_record(0, record_sha256(referral))
    other = receipt_record(1, "0" * 64)  # signed, but for a record that was never logged
    entries = [*run.entries, *(leaf_for_record(r, run.verifier()).encode() for r in (genuine, other))]
    log = tmp_path / "signed-log"
    write_log(log, entries, run.signer, sizes=(0, len(entries)))
    (tmp_path / "notary.vkey").write_text(run.vkey)
    code, manifest = _prove(run, log, tmp_path / "proofs")
    assert code == 0
    same = {
        (r.topic, r.partition, r.offset) for r in run.records if record_sha256(r) == record_sha256(referral)
    }
    copies = [  # the very record the receipt names, wherever it was logged (other records: no receipt)
        e for e in manifest["events"]
        if (e["record"]["topic"], e["record"]["partition"], e["record"]["offset"]) in same
    ]  # fmt: skip
    assert copies
    for event in manifest["events"]:
        if event in copies:
            [delivery] = event["delivery"]
            assert (delivery["party"], delivery["outcome"]) == ("kemensos", "delivered")
            proof = tmp_path / "proofs" / delivery["receipt"]
            assert main(["audit", "check-receipt", str(proof), "--vkey", run.vkey]) == 0
        else:
            assert event["delivery"] == []
