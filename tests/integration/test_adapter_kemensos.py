"""The Kemensos adapter on a real broker: KBRI Kuching and Kemensos gateways, each as an operator runs it.

* KBRI Kuching refers a worker and plans her return; Kemensos' gateway delivers both, unsealed for Kemensos,
  into the case-system SIMULATOR in Kemensos' own field names, exactly once, although the case system
  answers 503 to the first two requests.
* RPTC Pontianak drops an admissions CSV with one malformed row; KBRI Kuching receives the good admissions
  (health unsealed for it), and the quarantine report holds exactly the bad row, by column, without values.

Kemensos' adapter plug-ins are configured only in Kemensos' ``gateway.toml`` (``[[sources]]``/``[[sinks]]``,
as an operator writes them: ``exchange(per_party=...)``), not through ``overrides``, which go to every
gateway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.kemensos import csv_event_id, write_drop
from adapters.simulators.kemensos import KemensosCaseSystemSimulator
from gateway.bus.kafka import KafkaSettings
from gateway.runtime.catalogue import Catalogue
from gateway.runtime.intake import file_ref
from tests.integration.exchange import Node, eventually, exchange, metric_total
from tests.world import example

KBRI = "kemlu.kbri-kuching"
ADMISSION = "id.trafficking.case.shelter-admission"


def kemensos_exchange(
    root: Path, settings: KafkaSettings, kemensos: Mapping[str, Any]
) -> contextlib.AbstractAsyncContextManager[dict[str, Node]]:
    """KBRI Kuching and Kemensos gateways; ``kemensos`` is merged into Kemensos' configuration only."""
    return exchange(
        root, [KBRI, "kemensos"], settings, per_party={"kemensos": kemensos},
        overrides={
            "retry": {"attempts": 5, "base_delay": 0.05, "max_delay": 0.5},
            "sources": [],  # no generic file drop: only what a test gives Kemensos
        },
    )  # fmt: skip


async def test_referral_and_plan_reach_the_case_system_in_its_own_shape_once(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    referral = example("case.referral", "1.0")[0][1]  # Siti Contoh, KBRI-KCH-2020-000123
    plan = next(p for _, p in example("case.repatriation-plan", "1.0") if p["case_id"] == referral["case_id"])
    async with KemensosCaseSystemSimulator() as simulator:
        simulator.fail_next(2)  # the case system is down for the first two requests
        sink = {"kind": "kemensos-case-system", "url": simulator.url, "timeout": 5.0}
        async with kemensos_exchange(tmp_path, isolated_kafka, {"sinks": [sink]}) as nodes:
            kbri = nodes[KBRI].gateway.publisher
            sent_referral = await kbri.publish(
                "id.trafficking.case.referral", referral, recipients=["kemensos"]
            )
            sent_plan = await kbri.publish(
                "id.trafficking.case.repatriation-plan", plan, recipients=["kemensos"]
            )
            referral_key = f"{KBRI}/{sent_referral.id}"
            plan_key = f"{KBRI}/{sent_plan.id}"
            await eventually(
                lambda: {referral_key, plan_key} <= set(simulator.cases),
                what="the case system to hold the referral and the plan",
            )
            kemensos = nodes["kemensos"]
            assert metric_total(kemensos, "xchg_rejected_total") == 0
            assert metric_total(kemensos, "xchg_dead_lettered_total") == 0

    # delivered once each; the same partition (same case), so the referral met the outage
    assert simulator.statuses(referral_key) == [503, 503, 201]
    assert simulator.statuses(plan_key) == [201]
    assert simulator.raw_count == 4
    assert simulator.unique_count == 2

    received = simulator.cases[referral_key]
    assert received["jenis_data"] == "rujukan"
    assert received["no_kasus"] == "KBRI-KCH-2020-000123"
    assert received["nama_lengkap"] == "Siti Contoh"  # sealed for Kemensos, unsealed by its gateway
    assert received["jenis_kelamin"] == "P"
    assert received["asal_rujukan"] == KBRI
    assert received["kesehatan"]["status_covid"] == "negatif"
    assert received["pesan"] == {
        "id": sent_referral.id,
        "sumber": KBRI,
        "jenis": "id.trafficking.case.referral",
        "waktu": sent_referral.time,
        "skema": sent_referral.dataschema,
        "klasifikasi": "restricted",
    }
    planned = simulator.cases[plan_key]
    assert planned["jenis_data"] == "rencana_kepulangan"
    assert planned["nama_lengkap"] == "Siti Contoh"
    assert planned["nomor_identitas"] == "SPLP-0000001"
    assert planned["rencana_kepulangan"]["titik_kedatangan"] == "pos-pemulangan-pontianak"
    assert planned["rencana_kepulangan"]["tanggal"] == "2020-08-18"
    assert planned["rencana_kepulangan"]["moda_transportasi"] == "darat"


ADMISSION_HEADER = (
    "no_kasus", "nama", "jenis_kelamin", "id_rptc", "tanggal_masuk", "asal", "jenis_penerimaan", "karantina",
    "status_covid", "karantina_sampai", "anak", "dirujuk_oleh",
)  # fmt: skip
ADMISSION_ROWS = (
    ("KBRI-KCH-2020-000123", "Siti Contoh", "P", "RPTC-PTK", "19/08/2020 14:20", "PP-PTK", "pos-pemulangan",
     "y", "negatif", "01/09/2020", "t", "KBRI Kuching"),
    ("KBRI-KCH-2020-000131", "Rina Rekaan", "P", "RPTC-PTK", "19/08/2020 25:61", "PP-PTK", "pos-pemulangan",
     "y", "negatif", "", "t", ""),  # an impossible time: quarantined, the rest continues
    ("KBRI-KCH-2020-000124", "Budi Sampel", "L", "RPTC-PTK", "2020-08-19T14:45:00+07:00", "PP-PTK", "rujukan",
     "y", "menunggu", "", "y", ""),
)  # fmt: skip


async def test_an_admissions_drop_reaches_the_embassy_and_the_bad_row_is_quarantined(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    source = {"kind": "kemensos-csv", "directory": "drop", "poll_interval": 0.1}
    async with kemensos_exchange(tmp_path, isolated_kafka, {"sources": [source]}) as nodes:
        drop = nodes["kemensos"].sandbox.drop_dir
        name = "penerimaan_2020-08-19.csv"
        path = write_drop(drop, name, ADMISSION_HEADER, ADMISSION_ROWS)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        kbri = nodes[KBRI]

        def admissions() -> list[Any]:
            return [a for a in kbri.sink.events if a.event.type == ADMISSION]

        await eventually(
            lambda: len(admissions()) == 2 and (drop / "done" / name).exists(),
            what="KBRI Kuching to receive the two good admissions",
        )
        assert metric_total(nodes["kemensos"], "xchg_quarantined_total", source="kemensos-csv") == 1
        assert metric_total(kbri, "xchg_rejected_total") == 0

    received = {a.event.id: a.payload() for a in admissions()}
    assert set(received) == {csv_event_id(digest, 2), csv_event_id(digest, 4)}
    siti = received[csv_event_id(digest, 2)]
    assert siti["case_id"] == "KBRI-KCH-2020-000123"
    assert siti["admitted_at"] == "2020-08-19T14:20:00+07:00"
    assert siti["health"] == {"covid19_status": "negative", "quarantine_until": "2020-09-01"}  # unsealed
    budi = received[csv_event_id(digest, 4)]
    assert budi["child"] == {"is_minor": True}  # sealed for the referrer found by the case id prefix
    assert all("identity" not in payload for payload in received.values())

    reports = (drop / "quarantine" / f"{name}.rejected.jsonl").read_text("utf-8")
    assert [json.loads(line) for line in reports.splitlines()] == [
        {
            "file": file_ref(name),  # a digest of the name: names may carry a person's
            "row": 3,
            "field": "tanggal_masuk",
            "reason": "schema.invalid",
            "problem": "invalid-datetime",
            "detail": json.loads(reports)["detail"],
            "explanation": dict(Catalogue.load().problems["invalid-datetime"]),
        }
    ]
    # the clerk's report, Indonesian first: where and what to do, never a value
    text = (drop / "quarantine" / f"{name}.rejected.txt").read_text("utf-8")
    assert text.startswith(f"Laporan karantina berkas {file_ref(name)}: 1 rekaman tidak dikirim")
    assert "- Baris 3, kolom tanggal_masuk (kode alasan schema.invalid):" in text
    for value in ("Rina Rekaan", "KBRI-KCH-2020-000131", "25:61", "Siti Contoh"):
        assert value not in reports
        assert value not in text
    assert list((drop / "inbox").iterdir()) == []
