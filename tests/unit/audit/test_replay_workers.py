"""``gateway audit verify --workers N``: records re-verified by worker processes give exactly the report of
the in-process path — the same findings in the same order, the same counters and verdicts.

The log and the records carry one planted discrepancy of every record-level kind at once (a leaf deleted,
a leaf altered, a leaf without a record, a record rewritten on the broker, the same record twice in the
dump, records after the log's end, and a retroactive key revocation that changes a third of the verdicts),
and the chunk size is cut to a few records so that many chunks are in flight and settled in order.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.audit import _workers
from gateway.audit.auditor import Auditor
from gateway.audit.leaf import ConsumedRecord, Leaf
from gateway.audit.records import write_records_dump
from gateway.cli.main import main
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason
from tests.unit.audit._synthetic import KBRI, Run, build_run, rebuilt_log

DELETED, ALTERED, REWRITTEN, GONE, DUPLICATED = 120, 40, 200, 60, 75


def verifier_from_files(registry: Path, schemas: Path) -> EventVerifier:
    """The factory the workers call (module level: it pickles by name)."""
    return EventVerifier(registry=Registry.load(registry), schemas=SchemaStore.load(schemas))


@dataclass
class Tampered:
    run: Run
    log_dir: Path
    records: list[ConsumedRecord]
    dump: Path
    registry: Path

    @property
    def schemas(self) -> Path:
        return self.run.world.schemas.root

    def factory(self, registry: Path | None = None) -> functools.partial[EventVerifier]:
        return functools.partial(verifier_from_files, registry or self.registry, self.schemas)


def _forge(entry: bytes) -> bytes:
    return replace(Leaf.decode(entry), data_sha256=hashlib.sha256(b"forged").hexdigest()).encode()


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Tampered:
    root = tmp_path_factory.mktemp("workers")
    (root / "run").mkdir()
    run = build_run(root / "run")
    entries = list(run.entries[:290])  # the last ten records come after the log's end
    entries[ALTERED] = _forge(entries[ALTERED])
    del entries[DELETED]
    log_dir = rebuilt_log(run, root / "log", entries)
    records = [r for i, r in enumerate(run.records) if i != GONE]
    target = records[REWRITTEN]
    headers = tuple((k, b"2020-01-02T00:00:00Z" if k == "ce_time" else v) for k, v in target.headers)
    records[REWRITTEN] = replace(target, headers=headers)
    records.insert(DUPLICATED + 1, records[DUPLICATED])
    dump = root / "records.jsonl"
    write_records_dump(dump, records)
    lines = dump.read_bytes().splitlines(keepends=True)
    dump.write_bytes(b"".join([*lines[:10], b"\n", *lines[10:], b"  \n"]))  # blank lines are skipped

    def revoke(document: dict[str, Any]) -> None:
        run.world.party_doc(document, KBRI)["keys"][0]["revoked_at"] = datetime(2020, 6, 1, tzinfo=UTC)

    registry = root / "revoked.toml"
    registry.write_bytes(tomli_w.dumps(dict(run.world.with_document(revoke).document)).encode("utf-8"))
    return Tampered(run, log_dir, records, dump, registry)


def _report(
    tampered: Tampered,
    workers: int,
    *,
    via: str = "records",
    max_findings: int = 10_000,
    factory_registry: Path | None = None,
) -> dict[str, Any]:
    with Auditor(
        tampered.log_dir,
        notary_keys=[tampered.run.signer.verifier()],
        event_verifier=verifier_from_files(tampered.registry, tampered.schemas),
        max_findings=max_findings,
        workers=workers,
        verifier_factory=tampered.factory(factory_registry),
        clock=lambda: 1_600_000_000.0,  # the reports are compared whole
    ) as auditor:
        auditor.load_stored_checkpoints()
        auditor.scan_log()
        if via == "records":
            auditor.check_records(tampered.records)
        elif via == "dump":
            auditor.check_records_dump(tampered.dump)
        else:  # a consumer's callback, as for the broker
            with auditor.record_checks() as check:
                for record in tampered.records:
                    check(record)
        auditor.finish_records("test")
        document: dict[str, Any] = auditor.finish().to_json()
        return document


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workers, "CHUNK", 7)  # ~43 chunks, at most 2 per worker in flight


@pytest.fixture(scope="module")
def sequential(tampered: Tampered) -> dict[str, Any]:
    return _report(tampered, 1)


def test_every_planted_discrepancy_is_found_in_process(
    tampered: Tampered, sequential: dict[str, Any]
) -> None:
    reasons = Counter(f["reason"] for f in sequential["findings"])
    assert {
        "leaf.record-mismatch",  # the altered leaf and the rewritten record
        "leaf.record-missing",  # the record gone from Kafka
        "leaf.verdict-mismatch",  # the retroactive revocation
        "record.not-logged",  # the deleted leaf, and the ten records after the log's end
        "checkpoint.root-mismatch",
    } <= set(reasons)
    assert reasons["leaf.record-mismatch"] == 2
    assert reasons["record.not-logged"] == 11
    assert reasons["leaf.verdict-mismatch"] > 50
    assert sequential["records"]["read"] == len(tampered.records)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("via", ["records", "dump", "callback"])
def test_workers_give_the_in_process_report(tampered: Tampered, sequential: dict[str, Any], via: str) -> None:
    assert _report(tampered, 2, via=via) == sequential


def test_fewer_records_than_a_chunk_are_checked_in_process(
    tampered: Tampered, sequential: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pool(*args: object) -> None:
        raise AssertionError("no worker process is needed for one chunk")

    monkeypatch.setattr(_workers, "LeafPool", no_pool)
    assert len(tampered.records) < _workers.CHUNK
    assert _report(tampered, 2, via="dump") == sequential


@pytest.mark.usefixtures("small_chunks")
def test_capped_findings_are_the_same_first_ones(tampered: Tampered) -> None:
    capped = _report(tampered, 1, max_findings=25)
    assert sum(capped["suppressed_findings"].values()) > 0
    assert _report(tampered, 3, via="dump", max_findings=25) == capped


@pytest.mark.usefixtures("small_chunks")
def test_a_malformed_dump_line_stops_both_paths_alike(tampered: Tampered, tmp_path: Path) -> None:
    lines = tampered.dump.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join([*lines[:99], b"{not json\n", *lines[99:]]))
    for workers in (1, 2):
        changed = replace(tampered, dump=broken)
        with pytest.raises(GatewayError) as caught:
            _report(changed, workers, via="dump")
        assert caught.value.reason == Reason.CONFIG_INVALID
        assert f"{broken}:100: not JSON" in caught.value.detail


@pytest.mark.usefixtures("small_chunks")
def test_workers_with_another_registry_are_refused(tampered: Tampered) -> None:
    """A registry replaced while the workers start must not mix two registries into one report."""
    with pytest.raises(GatewayError) as caught:
        _report(tampered, 2, factory_registry=tampered.run.registry_file)  # not revoked
    assert caught.value.reason == Reason.CONFIG_INVALID
    assert "another registry" in caught.value.detail


def test_workers_need_a_factory_and_a_count(tampered: Tampered) -> None:
    verifier = tampered.run.verifier()
    with pytest.raises(GatewayError) as caught:
        Auditor(tampered.log_dir, notary_keys=[tampered.run.signer.verifier()], workers=0)
    assert caught.value.reason == Reason.CONFIG_INVALID
    with Auditor(
        tampered.log_dir, notary_keys=[tampered.run.signer.verifier()], event_verifier=verifier, workers=2
    ) as auditor:
        auditor.scan_log()
        with pytest.raises(GatewayError) as caught:
            auditor.check_records(tampered.records)
    assert caught.value.reason == Reason.CONFIG_INVALID
    assert "verifier factory" in caught.value.detail


# ---- the command line ------------------------------------------------------------------------------------


def _cli(tampered: Tampered, out: Path, *extra: str) -> int:
    vkey = out.parent / "notary.vkey"
    vkey.write_text(tampered.run.vkey + "\n")
    return main(
        [
            "audit", "verify", "--log", str(tampered.log_dir), "--vkey", str(vkey),
            "--registry", str(tampered.registry), "--records", str(tampered.dump), "--json", str(out),
            *extra,
        ]
    )  # fmt: skip


@pytest.mark.usefixtures("small_chunks")
def test_cli_workers_option(tampered: Tampered, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert _cli(tampered, one, "--workers", "1") == 1
    assert _cli(tampered, two, "--workers", "2") == 1
    documents = [json.loads(path.read_text()) for path in (one, two)]
    for document in documents:
        document.pop("audited_at")  # the time each ran
    assert documents[0] == documents[1]
    assert documents[0]["findings"]
    capsys.readouterr()
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exited:
            _cli(tampered, tmp_path / "bad.json", "--workers", bad)
        assert exited.value.code == 2
        assert "--workers" in capsys.readouterr().err
