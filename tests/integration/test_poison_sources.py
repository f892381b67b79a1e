"""Poison files and a misbehaving case API, against real gateways on the real broker (issue 18).

Each example of the campaign, as an operator configures the adapters (``[[sources]]`` tables):

* Kemensos' CSV drop gets a 1 GiB file (sparse: it costs no disk) and a file of NUL bytes ahead of a good
  admissions export: both are quarantined (``size.exceeded`` without being read, ``schema.invalid``) and the
  good file behind them reaches KBRI Kuching;
* IOM's HTCDS drop gets a workbook with truncated sheet XML and one with a DOCTYPE ahead of a good export:
  both are quarantined, the good one's records reach Kemensos;
* the Kemlu case API serves a case with ``updated_at`` ``9999-12-31T23:59:59+00:00`` and one with
  ``0001-01-01T00:00:00+01:00``: both are quarantined (``time.out-of-range``), the durable cursor never goes
  past now plus the skew, and a case changed afterwards still arrives.

In each, no supervised task restarted and ``/healthz`` and ``/readyz`` answer 200.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from adapters.kemensos import write_drop
from adapters.simulators.iom import sample_rows, write_htcds_export
from adapters.simulators.kemlu import KemluCaseApiSimulator
from gateway.bus.kafka import KafkaSettings
from gateway.runtime.intake import file_ref
from tests.integration.exchange import Node, eventually, exchange, metric_total
from tests.integration.test_adapter_kemensos import ADMISSION, ADMISSION_HEADER, ADMISSION_ROWS
from tests.unit.runtime.test_intake import _rewrite_sheet

KBRI = "kemlu.kbri-kuching"
KCH_TPPO = {"KBRI-KCH-2020-000123", "KBRI-KCH-2020-000124", "KBRI-KCH-2020-000125", "KBRI-KCH-2020-000126"}
SETTLE = 0.2  # the drop folders' settle_seconds in these tests (the default is 1 s)


async def assert_healthy(node: Node) -> None:
    """Nothing restarted, and both health endpoints say so."""
    assert metric_total(node, "xchg_task_restarts_total") == 0
    assert {s.state for s in node.gateway.supervisor.states()} <= {"running", "finished"}
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(f"http://127.0.0.1:{node.gateway.ops_port}{path}") as response:
                assert response.status == 200, (path, await response.text())


def reports(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Quarantine entries by ``file`` (a digest of the file name)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((folder / "quarantine").glob("*.rejected.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            entry = json.loads(line)
            found.setdefault(entry["file"], []).append(entry)
    return found


async def test_poison_csv_files_are_quarantined_and_the_next_file_goes_through(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    source = {"kind": "kemensos-csv", "directory": "drop", "poll_interval": 0.1, "settle_seconds": SETTLE}
    per_party = {"kemensos": {"sources": [source]}}
    async with exchange(
        tmp_path, [KBRI, "kemensos"], isolated_kafka, overrides={"sources": []}, per_party=per_party
    ) as nodes:
        kemensos, kbri = nodes["kemensos"], nodes[KBRI]
        drop = kemensos.sandbox.drop_dir
        inbox = drop / "inbox"
        await eventually(inbox.is_dir, what="the source to create its folders")
        huge = inbox / ".penerimaan_2020-01-01.csv.tmp"
        with huge.open("wb") as handle:  # 1 GiB, sparse: the gateway must not read it
            handle.truncate(1024**3)
        huge.rename(inbox / "penerimaan_2020-01-01.csv")
        nul = inbox / ".penerimaan_2020-01-02.csv.tmp"
        nul.write_bytes(b"\x00" * 300_000)
        nul.rename(inbox / "penerimaan_2020-01-02.csv")
        good = "penerimaan_2020-08-19.csv"
        write_drop(drop, good, ADMISSION_HEADER, ADMISSION_ROWS)

        def through() -> bool:
            admitted = [a for a in kbri.sink.events if a.event.type == ADMISSION]
            return len(admitted) == 2 and (drop / "done" / good).exists()

        await eventually(through, what="the good admissions file behind the poison files")
        found = reports(drop)
        [big] = found[file_ref("penerimaan_2020-01-01.csv")]
        assert (big["row"], big["reason"]) == (None, "size.exceeded")
        assert str(1024**3) in big["detail"]  # refused on its size, before any reading
        [nuls] = found[file_ref("penerimaan_2020-01-02.csv")]
        assert nuls["reason"] == "schema.invalid"
        assert not any(inbox.iterdir())
        assert metric_total(kemensos, "xchg_quarantined_total", reason="size.exceeded") == 1
        await assert_healthy(kemensos)


async def test_malformed_workbooks_are_quarantined_and_the_next_export_goes_through(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    source = {
        "kind": "iom-htcds",
        "directory": "htcds-exports",
        "poll_interval": 0.1,
        "settle_seconds": SETTLE,
    }
    per_party = {"iom": {"sources": [source]}, "kemensos": {"sources": []}}
    async with exchange(tmp_path, ["iom", "kemensos"], isolated_kafka, per_party=per_party) as nodes:
        iom, kemensos = nodes["iom"], nodes["kemensos"]
        exports = iom.sandbox.config.parent / "htcds-exports"
        inbox = exports / "inbox"
        await eventually(inbox.is_dir, what="the IOM source to create its folders")
        staging = tmp_path / "staging"
        staging.mkdir()
        truncated = write_htcds_export(staging / "a-truncated.xlsx", sample_rows())
        _rewrite_sheet(truncated, lambda xml: xml[: len(xml) // 2])
        doctype = write_htcds_export(staging / "b-doctype.xlsx", sample_rows())
        _rewrite_sheet(doctype, lambda xml: b'<!DOCTYPE x [<!ENTITY e "e">]>' + xml)
        for path in (truncated, doctype):
            os.replace(path, inbox / path.name)
        write_htcds_export(inbox / "c-good.xlsx", sample_rows())

        def through() -> bool:
            supplies = [a for a in kemensos.sink.events if a.event.type.endswith("alert.supply")]
            return len(supplies) == 1 and (exports / "done" / "c-good.xlsx").exists()

        await eventually(through, what="the good export behind the broken workbooks")
        found = reports(exports)
        assert {entry["reason"] for entry in found[file_ref("a-truncated.xlsx")]} == {"schema.invalid"}
        assert [entry["reason"] for entry in found[file_ref("b-doctype.xlsx")]] == ["schema.invalid"]
        assert not any(inbox.iterdir())
        await assert_healthy(iom)


async def test_unusable_updated_at_values_are_quarantined_and_the_embassy_feed_goes_on(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    async with KemluCaseApiSimulator() as api:
        template = next(c for c in api.cases if c["id_kasus"] == "KBRI-KCH-2020-000123")
        api.add_case(
            {**template, "id_kasus": "KBRI-KCH-2099-000001", "updated_at": "9999-12-31T23:59:59+00:00"}
        )
        api.add_case(
            {**template, "id_kasus": "KBRI-KCH-2099-000002", "updated_at": "0001-01-01T00:00:00+01:00"}
        )
        source = {"kind": "kemlu-case-api", "url": api.url, "poll_interval": 0.2, "backoff_base": 0.05,
                  "backoff_max": 0.2}  # fmt: skip
        per_party = {KBRI: {"sources": [source]}, "kemensos": {"sources": []}, "iom": {"sources": []}}
        async with exchange(tmp_path, list(per_party), isolated_kafka, per_party=per_party) as nodes:
            kbri, kemensos = nodes[KBRI], nodes["kemensos"]

            def referred() -> set[str]:
                return {a.event.subject for a in kemensos.sink.events if a.event.type.endswith("referral")}

            await eventually(lambda: referred() >= KCH_TPPO, what="the good cases at Kemensos")
            state = kbri.gateway.config.data_dir
            [cursor_file] = state.glob("kemlu-cursor-*.json")
            since = json.loads(cursor_file.read_text("utf-8"))["updated_since"]
            assert datetime.fromisoformat(since) <= datetime.now(UTC) + timedelta(minutes=5)
            assert "KBRI-KCH-2099-000001" not in referred()
            [quarantine] = state.glob("kemlu-quarantine-*.jsonl")
            entries = [json.loads(line) for line in quarantine.read_text("utf-8").splitlines()]
            assert {(e["case_id"], e["reason"]) for e in entries} == {
                ("KBRI-KCH-2099-000001", "time.out-of-range"),
                ("KBRI-KCH-2099-000002", "time.out-of-range"),
            }

            api.update_case("KBRI-KCH-2020-000125", {"pemulangan": {"status": "BERUBAH"}})

            def changed() -> bool:
                return any(
                    a.event.subject == "KBRI-KCH-2020-000125" and a.payload().get("plan_status") == "changed"
                    for a in kemensos.sink.events
                )

            await eventually(changed, what="a later change of a good case (the feed did not stop)")
            await assert_healthy(kbri)
