"""The Kemlu/KBRI and IOM adapters between real gateways on a real broker, against the agency SIMULATORS.

1. KBRI Kuching's gateway polls the (simulated) Kemlu case API with the ``kemlu-case-api`` source while the
   API fails three times and recovers; the referrals, repatriation plans and the network alert reach Kemensos
   (MemorySink) and IOM, whose ``iom-htcds`` sink hands the referrals to the (simulated) IOM case system in
   HTCDS field names. Every case is published exactly once, however often the API was polled.
2. IOM's gateway reads an HTCDS v2.0 XLSX export with the ``iom-htcds`` source: the assistance records and the
   2,500-hygiene-kit supply alert reach Kemensos; the person columns of the export reach nobody.

The adapters are configured the way an operator configures them (``[[sources]]`` / ``[[sinks]]`` tables of
``gateway.toml``, found through the entry points), in one sandbox deployment with per-party settings.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.simulators.iom import IomCaseSystemSimulator, write_htcds_export
from adapters.simulators.kemlu import KemluCaseApiSimulator
from gateway.bus.kafka import KafkaSettings
from tests.integration.exchange import Node, eventually, exchange, metric_total

KBRI_KCH = "kemlu.kbri-kuching"
KCH_TPPO = {"KBRI-KCH-2020-000123", "KBRI-KCH-2020-000124", "KBRI-KCH-2020-000125", "KBRI-KCH-2020-000126"}
FIRST_NAMES = {"KBRI-KCH-2020-000123": "Budi", "KBRI-KCH-2020-000124": "Dewi", "KBRI-KCH-2020-000125": "Rudi"}


def adapter_exchange(
    root: Path, settings: KafkaSettings, per_party: Mapping[str, Mapping[str, Any]]
) -> contextlib.AbstractAsyncContextManager[dict[str, Node]]:
    """One gateway per party of ``per_party``, each with a MemorySink for everything it receives plus the
    ``sources``/``sinks`` tables given for it (which replace the sandbox defaults)."""
    return exchange(root, list(per_party), settings, per_party=per_party)


def events_of(node: Node, source: str, type_suffix: str) -> list[Any]:
    return [a for a in node.sink.events if a.event.source == source and a.event.type.endswith(type_suffix)]


async def test_kbri_cases_reach_kemensos_and_the_iom_case_system_once_through_a_failing_api(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    async with KemluCaseApiSimulator() as kemlu_api, IomCaseSystemSimulator() as iom_cases:
        kemlu_api.fail_next(3)  # the agency API is down when the gateway starts, then recovers
        per_party = {
            KBRI_KCH: {
                "sources": [
                    {"kind": "kemlu-case-api", "url": kemlu_api.url, "poll_interval": 0.2,
                     "backoff_base": 0.05, "backoff_max": 0.2, "page_size": 2},
                ],
            },
            "kemensos": {"sources": []},
            "iom": {
                "sources": [],
                "sinks": [
                    {"kind": "iom-htcds", "types": ["id.trafficking.case.referral"], "url": iom_cases.url}
                ],
            },
        }  # fmt: skip
        async with adapter_exchange(tmp_path, isolated_kafka, per_party) as nodes:
            kemensos = nodes["kemensos"]

            def all_arrived() -> bool:
                referred = {a.event.subject for a in events_of(kemensos, KBRI_KCH, "case.referral")}
                planned = {a.event.subject for a in events_of(kemensos, KBRI_KCH, "case.repatriation-plan")}
                return (
                    referred == KCH_TPPO
                    and planned == KCH_TPPO
                    and len(events_of(kemensos, KBRI_KCH, "alert.network")) == 1
                    and set(iom_cases.by_case()) == KCH_TPPO
                )

            await eventually(all_arrived, timeout=60, what="KBRI Kuching's cases at Kemensos and IOM")
            polls_before = len(kemlu_api.gets)
            await eventually(
                lambda: len(kemlu_api.gets) >= polls_before + 5, what="more polls of the same cases"
            )

            # exactly once: every event delivered once, one referral and one plan per case, however many polls
            ours = [key for key in kemensos.sink.log if key[0] == KBRI_KCH]
            assert all(n == 1 for n in Counter(ours).values()), Counter(ours)
            assert len(ours) == 4 + 4 + 1
            assert Counter(
                a.event.subject for a in events_of(kemensos, KBRI_KCH, "case.referral")
            ) == dict.fromkeys(KCH_TPPO, 1)
            assert kemlu_api.failures_served == 3
            assert all(query["mission"] == "kuching" for query in kemlu_api.gets)

            # not exchanged: the lost-passport case (tppo false) and KBRI Kuala Lumpur's case
            subjects = {a.event.subject for a in kemensos.sink.events}
            assert "KBRI-KCH-2020-000130" not in subjects
            assert "KBRI-KL-2020-000310" not in subjects

            # Kemensos, the referred party, opens the identity; the network alert names nobody
            budi = next(
                a
                for a in events_of(kemensos, KBRI_KCH, "case.referral")
                if a.event.subject == "KBRI-KCH-2020-000123"
            )
            assert budi.payload()["identity"]["prs_FirstName"] == "Budi"
            assert budi.payload()["cas_ReferredOrganisation"] == "kemensos"
            [network] = events_of(kemensos, KBRI_KCH, "alert.network")
            assert network.payload()["suspected_victim_count"] == 14
            assert "Budi" not in json.dumps(network.payload())

            # what IOM's case system received: HTCDS field names, sealed parts opened for IOM (in copy)
            assert len(iom_cases.referrals) == 4
            assert all(n == 1 for n in iom_cases.counts().values())
            for case_id, body in iom_cases.by_case().items():
                assert body["cas_ReferringOrganisation"] == KBRI_KCH
                assert body["cas_ReferredOrganisation"] == "kemensos"
                assert body["vic_TraffickingStatus"] == "ActualVictimOfTrafficking"
                assert body["vic_TypeOfExploitation"] == ["ForcedLabour"]
                assert body["vic_ForcedLabourIndustry"] == "A_AgricultureForestryAndFishing"
                assert body["con_Consent"] is True
                assert body["prs_Citizenship"] == ["ID"]
                assert body["historic_trafficking_events"][-1]["hte_City"] == "Bintulu"
                if case_id in FIRST_NAMES:
                    assert body["prs_FirstName"] == FIRST_NAMES[case_id]
            assert iom_cases.by_case()["KBRI-KCH-2020-000124"]["xchg"]["child"]["is_minor"] is True
            assert all(key.startswith(f"{KBRI_KCH}/") for key in iom_cases.attempts)

            for node in nodes.values():
                assert metric_total(node, "xchg_rejected_total") == 0

            # a new version of a case in the embassy system: an update on the exchange, once
            kemlu_api.update_case("KBRI-KCH-2020-000125", {"pemulangan": {"status": "BERUBAH"}})

            def plan_changed() -> bool:
                plans = [
                    a for a in events_of(kemensos, KBRI_KCH, "case.repatriation-plan")
                    if a.event.subject == "KBRI-KCH-2020-000125"
                ]  # fmt: skip
                return any(a.payload()["plan_status"] == "changed" for a in plans)

            await eventually(plan_changed, what="the changed repatriation plan at Kemensos")
            assert len(events_of(kemensos, KBRI_KCH, "case.repatriation-plan")) == 5


async def test_iom_htcds_xlsx_export_reaches_kemensos(tmp_path: Path, isolated_kafka: KafkaSettings) -> None:
    per_party = {
        "iom": {"sources": [{"kind": "iom-htcds", "directory": "htcds-exports", "poll_interval": 0.2}]},
        "kemensos": {"sources": []},
    }
    async with adapter_exchange(tmp_path, isolated_kafka, per_party) as nodes:
        exports = nodes["iom"].sandbox.config.parent / "htcds-exports"
        inbox = exports / "inbox"
        await eventually(inbox.is_dir, what="the IOM source to create its folders")
        write_htcds_export(
            inbox / "htcds-export-2020-08-26.xlsx"
        )  # .tmp then rename: never read half-written
        kemensos = nodes["kemensos"]

        def arrived() -> bool:
            return (
                len(events_of(kemensos, "iom", "case.assistance-record")) == 2
                and len(events_of(kemensos, "iom", "alert.supply")) == 1
            )

        await eventually(arrived, what="IOM's assistance records and supply alert at Kemensos")
        records = {a.event.subject: a.payload() for a in events_of(kemensos, "iom", "case.assistance-record")}
        assert records["KBRI-KCH-2020-000123"]["assistance_type"] == "hygiene-kit"
        assert records["KBRI-KCH-2020-000123"]["location_id"] == "pos-pemulangan-pontianak"
        assert records["KBRI-KCH-2020-000124"]["assistance_type"] == "psychoeducation"
        assert records["KBRI-KCH-2020-000124"]["spl_Type"] == "LabourExploitationRehabilitation"
        [supply] = events_of(kemensos, "iom", "alert.supply")
        assert supply.payload()["quantity"] == 2500
        assert supply.payload()["item"] == "hygiene-kit"
        assert supply.payload()["location_id"] == "pos-pemulangan-pontianak"
        assert supply.event.subject == "ALR-IOM-2020-000045"
        everything = json.dumps([a.payload() for a in kemensos.sink.events])
        for person in ("Budi", "Dewi", "Rudi", "Sampel", "Fiktif"):
            assert person not in everything  # the export's HTCDS person columns reach nobody
        await eventually(
            (exports / "done" / "htcds-export-2020-08-26.xlsx").exists, what="the export in done/"
        )
        assert not any((exports / "quarantine").iterdir())
        assert metric_total(kemensos, "xchg_rejected_total") == 0
