"""The README's first command, through the same code path (`gateway demo --once`): adapters, simulators,
three gateways on the embedded broker — and no personal data in any log line of the whole run, nor in the
audit notary's log, whose final checkpoint `gateway audit verify` accepts."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.scenario import PARTIES, run_scenario
from adapters.simulators.iom import sample_rows
from adapters.simulators.kemensos import SAMPLE_DROPS
from adapters.simulators.kemlu import sarawak_cases
from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.leaf import Leaf
from gateway.audit.note import verifier_from_vkey
from gateway.audit.tiles import TileLog
from gateway.cli.main import main
from gateway.runtime.logs import configure_logging

PERSON_FIELDS = ("wni", "kesehatan", "anak", "pelaku")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _personal_strings() -> set[str]:
    """Names, phone numbers, health notes... the scenario's native systems hold about people."""
    found: set[str] = set()
    for case in sarawak_cases():
        for field in PERSON_FIELDS:
            found.update(_strings(case.get(field)))
    for row in sample_rows():
        found.update(str(v) for k, v in row.items() if k.startswith("prs_"))
    header, rows = SAMPLE_DROPS["penerimaan_2020-08-19.csv"]
    found.update(row[header.index("nama")] for row in rows)
    return {s for s in found if len(s) >= 5 and not s.isupper()}  # skip short codes like "L", "P", "ID"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json_output=True, level="debug", stream=stream)
    yield stream
    configure_logging(json_output=True, level="warning")
    logging.getLogger().setLevel(logging.WARNING)


async def test_demo_plays_the_scenario_and_leaks_nothing(tmp_path: Path, captured_logs: io.StringIO) -> None:
    out = io.StringIO()
    result = await run_scenario(directory=tmp_path / "demo", once=True, out=out)

    assert set(result.summary) == set(PARTIES)
    # the one rejection is the forged delivery receipt, dead-lettered at the party it pretends to answer
    assert {party: row["rejected"] for party, row in result.summary.items()} == {
        party: int(party == "kemensos") for party in PARTIES
    }
    assert result.forged_receipt == "receipt.unknown-event"
    # every event ended with a signed receipt from each running recipient, at its sender
    assert set(result.deliveries) == set(PARTIES)
    answered = [row for rows in result.deliveries.values() for row in rows.values()]
    assert answered
    assert all(row["waiting"] == 0 for row in answered)
    assert sum(row["delivered"] for row in answered) > 10
    assert "Signed delivery receipts, per sender" in out.getvalue()
    # Kemensos' case system got the embassy's referrals and plans, in its own shape, names unsealed
    kinds = {case["jenis_data"] for case in result.kemensos_cases}
    assert kinds == {"rujukan", "rencana_kepulangan"}
    assert any(case.get("nama_lengkap") for case in result.kemensos_cases)
    # the embassy's case API got the shelter admissions and the closure
    updates = {u["jenis_pembaruan"] for u in result.kemlu_updates}
    assert updates == {"PENERIMAAN_SHELTER", "PENUTUPAN_KASUS"}
    # IOM's case system got HTCDS-shaped referrals
    assert result.iom_referrals
    assert all("vic_TraffickingStatus" in r for r in result.iom_referrals)
    assert "Summary" in out.getvalue()
    # the offline audit command it prints names files that outlive the demo (the folder was given)
    command = next(line for line in out.getvalue().splitlines() if "offline: gateway audit verify" in line)
    words = command.split()
    for option in ("--log", "--vkey", "--registry-anchor"):
        assert os.path.exists(words[words.index(option) + 1]), option  # noqa: ASYNC240 - a check, not I/O in a loop
    assert "/status" in out.getvalue()
    # coordination: one referral escalated then resolved, the capacity step, the month's suppressed statistics
    steps = [(a["step_id"], a["alert_status"]) for a in result.sop_alerts]
    assert steps.count(("referral-answered", "active")) == 1
    assert steps.count(("referral-answered", "resolved")) == 1
    assert ("shelter-capacity-low", "active") in steps
    assert result.statistics is not None
    assert any("suppressed" in row for t in result.statistics["tables"] for row in t["cells"])
    assert "SOP (proposal) escalations" in out.getvalue()

    personal = _personal_strings()
    assert "Budi" in " ".join(personal)  # the native systems really hold names
    logs = captured_logs.getvalue()
    assert len(logs.splitlines()) > 100  # a full debug-level run, aiokafka included
    leaked = sorted(s for s in personal if s in logs or s in out.getvalue())
    assert leaked == [], leaked

    # the notary logged every record and its last checkpoint covers them all: the audit replayed against
    # the broker at the end of the run found nothing, and so does `gateway audit verify` on the log now
    audit = result.audit
    assert audit is not None
    assert (audit["ok"], audit["findings"]) == (True, [])
    assert audit["log_size"] == audit["records"]["read"] == audit["records"]["matched"] > 10
    assert "audit verify: OK" in out.getvalue()
    # the signed registry path end to end: version 1 published, logged, in force for every event after it
    versions = audit["registry"]["versions"]
    assert [(v["serial"], v["outcome"]) for v in versions] == [(1, "applied")]
    assert "signed by 2 of 3 maintainers" in out.getvalue()
    root = tmp_path / "demo"
    vkey = (root / "notary" / "notary.vkey").read_text().strip()
    key = verifier_from_vkey(vkey)
    signed = open_checkpoint(result.checkpoint, origin=key.name, verifiers=[key])
    assert signed.checkpoint == Checkpoint.parse(result.checkpoint.decode().split("\n\n")[0] + "\n")
    assert signed.checkpoint.size == audit["log_size"]
    assert result.notary_log is not None
    report = tmp_path / "audit.json"
    verify = ["audit", "verify", "--log", str(result.notary_log), "--vkey", vkey]
    verify += ["--registry-anchor", str(root / "registry-anchor.toml"), "--json", str(report)]
    assert main(verify) == 0
    assert json.loads(report.read_text())["signed_size"] == signed.checkpoint.size
    bundles = (result.notary_log / "tile" / "entries").rglob("*")
    entries = b"".join(p.read_bytes() for p in bundles if p.is_file())
    assert sorted(s for s in personal if s.encode() in entries) == []

    # non-repudiation of receipt: a referral KBRI Kuching published is proven published *and* received, each
    # recipient's signed delivery receipt by an inclusion proof in the same signed log
    with TileLog.open(result.notary_log, read_only=True) as log:
        leaves = [Leaf.decode(entry) for entry in log.iter_entries(0, log.size)]
    referral = next(
        leaf for leaf in leaves if leaf.type == "id.trafficking.case.referral" and leaf.verdict == "accepted"
    )
    proofs = tmp_path / "proofs"
    prove = ["audit", "prove", str(referral.id), "--log", str(result.notary_log), "--delivery"]
    assert main([*prove, "--source", str(referral.source), "--out", str(proofs)]) == 0
    delivered = sorted(p.name for p in proofs.glob("delivery.*.delivered.tlog-proof"))
    assert "delivery.kemensos.delivered.tlog-proof" in delivered
    for proof in [proofs / "publication.tlog-proof", *(proofs / name for name in delivered)]:
        assert main(["audit", "check-receipt", str(proof), "--vkey", vkey]) == 0
