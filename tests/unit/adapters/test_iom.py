"""The IOM adapter offline: HTCDS v2.0 exports (XLSX in the template's column order, and CSV) -> assistance
records and supply alerts valid under the real schemas, quarantine by row and column without values, file
handling (done/, half-written files, deferring), and referrals -> HTCDS-shaped JSON for IOM's case system.

The stand-in for the runtime's publish function is ``build_event`` as IOM (validate, sign) plus an outbox
keyed by event id, so a row that "works" here is one the gateway would accept and deduplicate.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from structlog.testing import capture_logs

from adapters.iom import (
    COLUMNS_FILE,
    HtcdsExportSource,
    IomMapping,
    htcds_columns,
    read_sheet,
    row_event_id,
)
from adapters.simulators.iom import IomCaseSystemSimulator, export_columns, sample_rows, write_htcds_export
from gateway.bus.delivery import RetryPolicy, SinkError, deliver_with_retry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.runtime.intake import file_ref
from gateway.runtime.plugins import build_sink, build_source
from gateway.runtime.webhook import WebhookSink
from tests.data.agencies.iom import generate
from tests.doubles import IMMEDIATE, WorldPublish, plugin_context
from tests.paths import DATA
from tests.world import World, example

FIXTURES = DATA / "agencies" / "iom"
SYNTHETIC_NAME = generate.SYNTHETIC_NAME
PERSON_VALUES = ("Budi", "Dewi", "Rudi", "Sampel", "Fiktif", SYNTHETIC_NAME)


@pytest.fixture(scope="module")
def mapping() -> IomMapping:
    return IomMapping.load()


def drop(source: HtcdsExportSource, fixture: Path, name: str | None = None) -> Path:
    source.ensure_directories()
    target = source.inbox / (name or fixture.name)
    shutil.copyfile(fixture, target)
    return target


def new_source(tmp_path: Path, mapping: IomMapping, **kwargs: Any) -> HtcdsExportSource:
    kwargs.setdefault("bounds", IMMEDIATE)
    return HtcdsExportSource(tmp_path / "iom-exports", party="iom", mapping=mapping, **kwargs)


# ---- the HTCDS layout --------------------------------------------------------------------------------


def test_committed_column_list_is_the_htcds_reference_in_order() -> None:
    if not generate.REFERENCE.is_file():
        pytest.skip("HTCDS reference text not available on this machine")
    assert COLUMNS_FILE.read_text("utf-8") == generate.columns_file_text()


def test_xlsx_fixture_has_the_htcds_template_column_order(mapping: IomMapping) -> None:
    workbook = load_workbook(FIXTURES / "htcds-export-2020-08-26.xlsx", read_only=True)
    header = list(next(workbook.worksheets[0].iter_rows(values_only=True)))
    workbook.close()
    columns = htcds_columns()
    assert header == [*columns, *mapping.operational]
    assert columns[:3] == ("org_Name", "org_ShippingCity", "org_ShippingCountry")
    assert (
        columns.index("prs_FirstName") < columns.index("vic_TraffickingStatus") < columns.index("cas_Status")
    )
    assert columns.index("cas_Status") < columns.index("spl_Type") < columns.index("con_Consent")
    assert len(columns) == 84
    assert "per_Organisation" in columns  # a row cut short in the reference


@pytest.mark.parametrize("fixture", ["htcds-export-2020-08-26.xlsx", "htcds-export-2020-08-26.csv"])
async def test_export_rows_become_valid_assistance_records_and_a_supply_alert(
    tmp_path: Path, world: World, mapping: IomMapping, fixture: str
) -> None:
    source = new_source(tmp_path, mapping)
    drop(source, FIXTURES / fixture)
    publish = WorldPublish(world, "iom")
    [report] = await source.process_pending(publish)
    assert report.done
    assert (report.published, report.skipped, report.rejections) == (3, 1, [])
    assert (source.done / fixture).exists()
    assert not any(source.inbox.iterdir())
    schemas = SchemaStore.load(default_schema_root())
    records = publish.payloads("case.assistance-record")
    for payload in records:
        schemas.latest("id.trafficking.case.assistance-record").validate(payload)
    assert sorted((r["case_id"], r["assistance_type"], r.get("quantity")) for r in records) == [
        ("KBRI-KCH-2020-000123", "hygiene-kit", 1),
        ("KBRI-KCH-2020-000124", "psychoeducation", 3),
    ]
    hygiene = next(r for r in records if r["assistance_type"] == "hygiene-kit")
    assert hygiene == example("case.assistance-record", "1.0")[0][1]  # the schema's own example, exactly
    [supply] = publish.payloads("alert.supply")
    assert supply == example("alert.supply", "1.0")[0][1]  # 2,500 hygiene kits to Pos Pemulangan Pontianak
    everything = b"".join(e.data for e in publish.outbox.values()).decode("utf-8")
    for value in PERSON_VALUES:
        assert value not in everything  # the rows' HTCDS person columns are never published


async def test_a_cumulative_re_export_publishes_nothing_new(
    tmp_path: Path, world: World, mapping: IomMapping
) -> None:
    source = new_source(tmp_path, mapping)
    publish = WorldPublish(world, "iom")
    drop(source, FIXTURES / "htcds-export-2020-08-26.xlsx")
    await source.process_pending(publish)
    first = set(publish.outbox)
    later = {
        "record_type": "assistance",
        "case_id": "KBRI-KCH-2020-000125",
        "assistance_type": "Psychoeducation",
        "assistance_date": "2020-09-03",
    }
    rows = [*sample_rows(), later]
    write_htcds_export(source.inbox / "htcds-export-2020-09-03.csv", rows)
    [report] = await source.process_pending(publish)
    assert report.published == 4  # handed to publish again, with the same ids: the outbox keeps one each
    assert len(set(publish.outbox) - first) == 1
    assert (source.done / "htcds-export-2020-09-03.csv").exists()


async def test_malformed_rows_are_quarantined_by_row_and_column_never_by_value(
    tmp_path: Path, world: World, mapping: IomMapping
) -> None:
    counted: list[tuple[str, str]] = []
    source = new_source(tmp_path, mapping, on_quarantine=lambda s, r: counted.append((s, r)))
    drop(source, FIXTURES / "htcds-export-malformed.csv")
    publish = WorldPublish(world, "iom")
    with capture_logs() as logs:
        [report] = await source.process_pending(publish)
    assert report.done
    assert report.published == 1  # the valid last row: a bad row never stops the rest
    quarantine = source.quarantine / "htcds-export-malformed.csv.rejected.jsonl"
    text = quarantine.read_text("utf-8")
    entries = [json.loads(line) for line in text.splitlines()]
    assert [(e["row"], e["field"]) for e in entries] == generate.MALFORMED_EXPECTED
    assert all(e["file"] == file_ref("htcds-export-malformed.csv") for e in entries)
    assert {e["reason"] for e in entries} == {"schema.invalid"}
    assert SYNTHETIC_NAME not in text
    assert "banyak" not in text  # nor any other cell value
    assert SYNTHETIC_NAME not in json.dumps(logs, default=str)
    assert len(counted) == len(entries)
    assert (source.done / "htcds-export-malformed.csv").exists()


async def test_whole_file_problems_are_quarantined_and_the_file_is_done(
    tmp_path: Path, world: World, mapping: IomMapping
) -> None:
    source = new_source(tmp_path, mapping)
    source.ensure_directories()
    columns = [c for c in export_columns(mapping) if c != "record_type"]
    write_htcds_export(source.inbox / "a-no-record-type.csv", sample_rows(), columns=columns)
    write_htcds_export(source.inbox / "b-repeated.csv", [], columns=[*export_columns(mapping), "case_id"])
    (source.inbox / "c-latin1.csv").write_bytes(
        f"record_type,prs_FirstName\ncase,{SYNTHETIC_NAME}é\n".encode("latin-1")
    )
    (source.inbox / "d-broken.xlsx").write_bytes(
        b"PK\x03\x04 not really a workbook " + SYNTHETIC_NAME.encode()
    )
    reports = await source.process_pending(WorldPublish(world, "iom"))
    assert [r.done for r in reports] == [True] * 4
    found = {}
    for path in sorted(source.quarantine.glob("*.rejected.jsonl")):
        [entry] = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        found[entry["file"]] = (entry["row"], entry["field"], entry["reason"])
        assert SYNTHETIC_NAME not in path.read_text("utf-8")
    assert found == {  # files are named by a digest of their name (a name may carry a person's)
        file_ref("a-no-record-type.csv"): (1, "record_type", "schema.invalid"),
        file_ref("b-repeated.csv"): (1, f"column {_letter(len(export_columns(mapping)))}", "schema.invalid"),
        file_ref("c-latin1.csv"): (0, "file", "parse.invalid-utf8"),
        file_ref("d-broken.xlsx"): (0, "file", "schema.invalid"),
    }


def _letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


async def test_deferring_leaves_the_file_in_the_inbox_and_redoes_it_with_the_same_ids(
    tmp_path: Path, world: World, mapping: IomMapping
) -> None:
    source = new_source(tmp_path, mapping)
    drop(source, FIXTURES / "htcds-export-2020-08-26.xlsx")
    publish = WorldPublish(world, "iom", refuse_on_call=(2, Reason.OUTBOX_FULL))
    [report] = await source.process_pending(publish)
    assert not report.done
    assert (source.inbox / "htcds-export-2020-08-26.xlsx").exists()
    assert not any(source.quarantine.iterdir())
    [report] = await source.process_pending(publish)
    assert report.done
    assert len(publish.outbox) == 3


async def test_half_written_and_foreign_files_are_left_alone(
    tmp_path: Path, world: World, mapping: IomMapping
) -> None:
    source = new_source(tmp_path, mapping)
    source.ensure_directories()
    shutil.copyfile(FIXTURES / "htcds-export-2020-08-26.xlsx", source.inbox / ".htcds-export.xlsx.tmp")
    (source.inbox / "notes.txt").write_text("not an export")
    assert await source.process_pending(WorldPublish(world, "iom")) == []
    assert sorted(p.name for p in source.inbox.iterdir()) == [".htcds-export.xlsx.tmp", "notes.txt"]


def test_semicolon_csv_with_labels_instead_of_value_names(tmp_path: Path, mapping: IomMapping) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\ufeffspl_Type;record_type;case_id;assistance_type;assistance_date;quantity\n"
        "Social Care;Assistance;KBRI-KCH-2020-000123;hygiene kit;2020-08-26;2.500\n",
        encoding="utf-8",
    )
    sheet = read_sheet(path)
    [(row, record)] = list(sheet.records())
    payload = mapping.map_row(mapping.message_of(record), record, party="iom")
    assert row == 2
    assert payload["spl_Type"] == "SocialCare"
    assert payload["quantity"] == 2500
    assert payload["provider_party"] == "iom"


def test_row_event_ids_follow_content() -> None:
    payload = {"case_id": "KBRI-KCH-2020-000123", "assistance_type": "hygiene-kit"}
    assert row_event_id("assistance_record", payload) == row_event_id("assistance_record", dict(payload))
    assert row_event_id("assistance_record", payload) != row_event_id(
        "assistance_record", {**payload, "quantity": 2}
    )


def test_source_options(tmp_path: Path) -> None:
    source = build_source(
        "iom-htcds", {"directory": "exports", "poll_interval": 1}, plugin_context(tmp_path, "iom")
    )
    assert source.directory == tmp_path / "exports"
    assert source.party == "iom"
    with pytest.raises(GatewayError, match=r"sources\[0\]\.directory"):
        build_source("iom-htcds", {}, plugin_context(tmp_path, "iom"))
    with pytest.raises(GatewayError, match=r"sources\[0\]\.sheets: unknown setting"):
        build_source(
            "iom-htcds", {"directory": "exports", "sheets": "HTCDS"}, plugin_context(tmp_path, "iom")
        )
    with pytest.raises(GatewayError, match=r"sources\[0\]\.url"):
        build_sink("iom-htcds", {"url": "iom.example/referrals"}, plugin_context(tmp_path, "iom"))


# ---- outbound: referrals -> IOM's case system ------------------------------------------------------------


def referral_for_iom(world: World, *, sealed_for_iom: bool) -> Accepted:
    recipients = ["kemensos", "iom"] if sealed_for_iom else ["kemensos"]
    payload = next(p for path, p in example("case.referral", "1.0") if "plantation" in path.name)
    event = world.event(
        "id.trafficking.case.referral", payload, by="kemlu.kbri-kuching", recipients=recipients
    )
    verdict = world.verifier("iom").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted), verdict
    return verdict


async def test_referral_is_posted_in_htcds_field_names(tmp_path: Path, world: World) -> None:
    accepted = referral_for_iom(world, sealed_for_iom=True)
    async with IomCaseSystemSimulator() as iom:
        sink = build_sink("iom-htcds", {"url": iom.url}, plugin_context(tmp_path, "iom"))
        assert isinstance(sink, WebhookSink)
        await sink.deliver(accepted)
        await sink.deliver(accepted)  # redelivery: 409, counted as delivered
        await sink.close()
    assert iom.attempts == [f"kemlu.kbri-kuching/{accepted.event.id}"] * 2
    [received] = iom.referrals
    body = received.body
    assert received.event_id == accepted.event.id
    assert body["case_id"] == "KBRI-KCH-2020-000123"
    assert body["cas_Status"] == "Active"
    assert body["cas_ReferringOrganisation"] == "kemlu.kbri-kuching"
    assert body["cas_ReferredOrganisation"] == "kemensos"
    assert body["cas_ReasonForIncomingReferral"] == "MigrationOrChangeOfLocation"
    assert body["con_Consent"] is True
    assert (body["prs_FirstName"], body["prs_SecondName"], body["prs_Gender"]) == (
        "Siti",
        "Contoh",
        "Feminine",
    )
    assert body["prs_Citizenship"] == ["ID"]
    assert body["prs_MailingCity"] == "Kabupaten Sambas"
    assert body["vic_TraffickingStatus"] == "ActualVictimOfTrafficking"
    assert body["vic_TypeOfExploitation"] == ["ForcedLabour"]
    assert body["historic_trafficking_events"][0]["hte_Type"] == "Recruitment"
    assert body["perpetrators"][0]["per_RoleInProcess"] == ["RecruiterOrIntermediary"]
    assert body["xchg"]["event_id"] == accepted.event.id
    assert body["xchg"]["health"]["covid19_status"] == "negative"
    htcds = set(htcds_columns())
    flat_htcds = {k for k in body if k[:4] in ("prs_", "vic_", "cas_", "con_")}
    assert flat_htcds <= htcds  # every prefixed name is a real HTCDS v2.0 field name
    assert not any(k.startswith("identity") or k == "consent" for k in body)  # not the exchange's nesting


async def test_a_referral_not_sealed_for_iom_carries_no_person_fields(tmp_path: Path, world: World) -> None:
    accepted = referral_for_iom(world, sealed_for_iom=False)
    async with IomCaseSystemSimulator() as iom:
        sink = build_sink("iom-htcds", {"url": iom.url}, plugin_context(tmp_path, "iom"))
        await sink.deliver(accepted)
        await sink.close()
    body = iom.referrals[0].body
    assert not [k for k in body if k.startswith("prs_")]
    assert "perpetrators" not in body
    assert body["vic_TraffickingStatus"] == "ActualVictimOfTrafficking"


async def test_other_types_are_dead_lettered_and_outages_retried(tmp_path: Path, world: World) -> None:
    record = world.event(
        "id.trafficking.case.shelter-discharge",
        example("case.shelter-discharge", "1.0")[0][1],
        by="kemensos",
        recipients=["iom"],
    )
    verdict = world.verifier("iom").verify_structured(record.to_structured())
    assert isinstance(verdict, Accepted)
    async with IomCaseSystemSimulator() as iom:
        sink = build_sink("iom-htcds", {"url": iom.url}, plugin_context(tmp_path, "iom"))
        with pytest.raises(SinkError) as refused:
            await deliver_with_retry(sink, verdict, RetryPolicy(attempts=3, base_delay=0.0))
        assert not refused.value.retryable
        assert iom.attempts == []  # nothing was sent
        iom.fail_next(2)
        await deliver_with_retry(
            sink, referral_for_iom(world, sealed_for_iom=True), RetryPolicy(attempts=3, base_delay=0.0)
        )
        await sink.close()
    assert iom.failures_served == 2
    assert len(iom.referrals) == 1


def test_mapping_file_typos_stop_start_up() -> None:
    document = copy.deepcopy(_load_document())
    document["assistance_record"]["fields"]["unit"]["table"] = "units"
    with pytest.raises(GatewayError, match=r"no \[tables\.units\]"):
        IomMapping(document)


def _load_document() -> dict[str, Any]:
    import tomllib  # noqa: PLC0415

    from adapters.iom import MAPPING_FILE  # noqa: PLC0415

    with MAPPING_FILE.open("rb") as handle:
        return tomllib.load(handle)


def test_fields_of_a_newer_schema_version_reach_iom_unchanged(mapping: IomMapping) -> None:
    payload = {"case_id": "KBRI-KCH-2020-000123", "interpreter_language": "msa", "a_future_field": {"x": 1}}
    body = mapping.referral_out.apply(payload, mapping.tables, {"event": {"source": "kemlu.kbri-kuching"}})
    assert body["xchg"]["interpreter_language"] == "msa"  # 1.1, mapped
    assert body["xchg"]["other"] == {"a_future_field": {"x": 1}}  # not mapped yet: passed on, not dropped
