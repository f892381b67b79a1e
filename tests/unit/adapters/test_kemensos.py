"""The Kemensos adapter offline: CSV drops -> payloads (against the real schemas), quarantine, the outbound
native shape, the ``kemensos-case-system`` sink against the case-system simulator, options and mapping file.

The stand-in for the runtime's publish function is the real thing minus the outbox: ``build_event`` with the
sample registry (validate the logical payload, seal for the recipients, validate the wire form, sign), so a
row that "works" here is one the gateway would accept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from adapters.fieldmap import FieldSpec
from adapters.kemensos import (
    MAPPING_FILE,
    CsvDropSource,
    KemensosMapping,
    csv_event_id,
    native_record,
    suppress_count,
    to_native,
    write_drop,
)
from adapters.simulators.kemensos import SAMPLE_DROPS, KemensosCaseSystemSimulator, write_sample_drops
from gateway.bus.delivery import RetryPolicy, SinkError, deliver_with_retry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.runtime.intake import file_ref
from gateway.runtime.plugins import build_sink, build_source
from gateway.runtime.webhook import WebhookSink
from tests.doubles import IMMEDIATE, Published, WorldPublish, plugin_context
from tests.paths import DATA
from tests.world import World, example

FIXTURES = DATA / "agencies" / "kemensos"
KBRI_KCH = "kemlu.kbri-kuching"
#: Every invented name in the fixtures; none may reach a quarantine report, a log line or an admission.
NAMES = (
    "Siti Contoh", "Budi Sampel", "Dewi Fiktif", "Agus Contoh", "Rina Rekaan", "Wati Karangan", "Joko Buatan",
    "Putri Khayalan", "Yanti Samaran", "Dodi Tiruan", "Sari Ilustrasi",
)  # fmt: skip


# ---- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mapping() -> KemensosMapping:
    return KemensosMapping.load()


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load(default_schema_root())


@dataclass
class Run:
    source: CsvDropSource
    publish: WorldPublish
    quarantined: list[tuple[str, str]]

    @property
    def calls(self) -> list[Published]:
        return self.publish.calls

    def reports(self, name: str) -> list[dict[str, Any]]:
        path = self.source.quarantine / f"{name}.rejected.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]

    def report_text(self) -> str:
        return "".join(p.read_text("utf-8") for p in sorted(self.source.quarantine.iterdir()))


def make_source(
    directory: Path, mapping: KemensosMapping, quarantined: list[tuple[str, str]]
) -> CsvDropSource:
    source = CsvDropSource(
        directory, mapping, poll_interval=0.01, on_quarantine=lambda s, r: quarantined.append((s, r)),
        bounds=IMMEDIATE,
    )  # fmt: skip
    source.ensure_directories()
    return source


async def run_files(
    tmp_path: Path, world: World, mapping: KemensosMapping, *files: str, publish: WorldPublish | None = None
) -> Run:
    """Copy fixture files into a fresh drop folder's inbox and process them once."""
    quarantined: list[tuple[str, str]] = []
    source = make_source(tmp_path / "drop", mapping, quarantined)
    for name in files:
        shutil.copy(FIXTURES / name, source.inbox / name)
    publish = publish or WorldPublish(world, "kemensos")
    await source.process_pending(publish)
    return Run(source, publish, quarantined)


def validate(store: SchemaStore, call: Published) -> None:
    """The payload is valid under the real schemas: the latest, and the version the adapter names."""
    store.latest(call.type).validate(call.data)
    assert call.dataschema is not None
    store.resolve(call.type, call.dataschema).validate(call.data)


def schema_paths(store: SchemaStore, event_type: str, dataschema: str | None = None) -> set[str]:
    """Every dotted property path a payload can have (``$ref`` resolved, arrays see-through)."""
    paths: set[str] = set()
    schema = store.resolve(event_type, dataschema) if dataschema else store.latest(event_type)

    def walk(node: Any, prefix: str, resolver: Any) -> None:
        while isinstance(node, Mapping) and "$ref" in node:
            resolved = resolver.lookup(node["$ref"])
            node, resolver = resolved.contents, resolved.resolver
        if not isinstance(node, Mapping):
            return
        if "items" in node:
            walk(node["items"], prefix, resolver)
        for name, sub in node.get("properties", {}).items():
            paths.add(f"{prefix}{name}")
            walk(sub, f"{prefix}{name}.", resolver)

    walk(schema.raw, "", store.registry.resolver(base_uri=schema.id))
    return paths


# ---- the mapping file --------------------------------------------------------------------------------------


def test_every_mapped_field_exists_in_its_schema(mapping: KemensosMapping, store: SchemaStore) -> None:
    """A typo in mapping.toml would quarantine every row at run time; catch it here instead."""
    for kind in mapping.files:
        assert kind.dataschema is not None, kind.name  # producers name the version, not "the latest"
        paths = schema_paths(store, kind.type, kind.dataschema)
        targets = [spec.target for spec in kind.message.fields if not spec.target.startswith("$")]
        for target in targets:
            assert target in paths, (kind.name, target)
    every = set().union(*(schema_paths(store, t) for t in store.types()))
    for out in mapping.common_record.fields:
        assert all(p in every for p in payload_paths(out)), out.target
    for event_type, spec in mapping.records.items():
        paths = schema_paths(store, event_type)
        for out in (s for s in spec.fields if s not in mapping.common_record.fields):
            assert all(p in paths for p in payload_paths(out)), (event_type, out.target)


def payload_paths(spec: FieldSpec) -> list[str]:
    """The payload paths an outbound field reads (not the event attributes, ``$event.*``)."""
    return [path for path in spec.reads() if not path.startswith("$")]


def test_code_list_values_are_exchange_values(mapping: KemensosMapping, store: SchemaStore) -> None:
    """Each code list maps to values the schemas accept: checked by the fixtures below for the ones they use,
    and here for the small enumerations (a misspelt ``fit-to-travl`` would otherwise wait for real data)."""
    common = json.loads((default_schema_root() / "_common" / "1.0.json").read_text("utf-8"))["$defs"]
    assert set(mapping.tables.values("jenis_kelamin")) <= set(common["prs_Gender"]["enum"])
    assert set(mapping.tables.values("status_korban")) == set(common["vic_TraffickingStatus"]["enum"])
    assert set(mapping.tables.values("dasar_hukum")) == set(common["legalBasis"]["enum"])
    assert set(mapping.tables.values("moda")) == set(common["transportMode"]["enum"])
    health = common["health"]["properties"]
    assert set(mapping.tables.values("status_covid")) == set(health["covid19_status"]["enum"])
    assert set(mapping.tables.values("hasil_skrining")) == set(health["screening_result"]["enum"])
    assert all(len(v) == 2 and v.isupper() for v in mapping.tables.values("negara"))


@pytest.mark.parametrize(
    ("replace", "by", "named"),
    [
        ('table = "lokasi", required = true }', 'table = "lokasi_typo", required = true }', "table"),
        ('format = "xchg-mapping/1"', 'format = "xchg-mapping/9"', "format"),
        ('kind = "datetime", required = true }', 'kind = "timestamp", required = true }', ".kind"),
        ('timezone = "+07:00"', 'timezone = "WIB"', "formats.timezone"),
        ("[case_system.fields]", '[case_system.fields]\nbogus = "$event.nope"', "case_system.fields.bogus"),
        ('prefixes = ["kapasitas_"]', 'prefixes = ["keluar_x"]', "overlaps"),
    ],
)
def test_a_broken_mapping_file_stops_start_up_naming_the_key(
    tmp_path: Path, replace: str, by: str, named: str
) -> None:
    text = MAPPING_FILE.read_text("utf-8")
    assert replace in text
    broken = tmp_path / "mapping.toml"
    broken.write_text(text.replace(replace, by, 1), "utf-8")
    with pytest.raises(GatewayError) as caught:
        KemensosMapping.load(broken)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert named in caught.value.detail


# ---- inbound: each file kind -------------------------------------------------------------------------------


async def test_admissions_map_to_valid_sealed_payloads(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    run = await run_files(tmp_path, world, mapping, "penerimaan_2020-08-19.csv")
    assert [c.data["case_id"] for c in run.calls] == [
        "KBRI-KCH-2020-000123", "KBRI-KCH-2020-000124", "KBRI-KL-2020-000310",
    ]  # fmt: skip
    for call in run.calls:
        validate(store, call)
        assert call.type == "id.trafficking.case.shelter-admission"
    siti, budi, dewi = run.calls
    assert siti.data == {
        "case_id": "KBRI-KCH-2020-000123",
        "shelter_id": "rptc-pontianak",
        "admitted_at": "2020-08-19T14:20:00+07:00",  # dd/mm/yyyy hh:mm, local time WIB
        "arrived_from": "pos-pemulangan-pontianak",
        "admission_type": "return-post",
        "planned_discharge_date": "2020-09-15",
        "quarantine": True,
        "health": {
            "conditions": "Luka ringan di tangan, sedang pulih.",
            "covid19_status": "negative",
            "quarantine_until": "2020-09-01",
            "needs_psychosocial_support": True,
        },  # anak = t: no child block at all (nothing to seal about a child)
    }
    assert siti.recipients == (KBRI_KCH,)  # from the dirujuk_oleh column
    assert budi.data["admitted_at"] == "2020-08-19T14:45:00+07:00"  # ISO with offset, kept
    assert budi.data["child"] == {"is_minor": True, "unaccompanied": True}  # "Y", "ya"
    assert budi.recipients == (KBRI_KCH,)  # from the case id prefix (case id upper-cased)
    assert dewi.data["admitted_at"] == "2020-08-20T09:30:00+07:00"
    assert "health" not in dewi.data
    assert "child" not in dewi.data
    assert dewi.recipients == ("kemlu.kbri-kuala-lumpur",)
    assert run.quarantined == []
    assert run.report_text() == ""
    assert (run.source.done / "penerimaan_2020-08-19.csv").exists()
    assert list(run.source.inbox.iterdir()) == []


async def test_admissions_never_carry_identity_columns(
    tmp_path: Path, world: World, mapping: KemensosMapping
) -> None:
    """case.shelter-admission has no identity: name, sex, birth date, citizenship stay at Kemensos."""
    run = await run_files(tmp_path, world, mapping, "penerimaan_2020-08-19.csv")
    published = json.dumps([c.data for c in run.calls])
    for value in ("Siti Contoh", "Budi Sampel", "Dewi Fiktif", "1996-03-14", "14/03/1996", "Feminine"):
        assert value not in published
    assert all("identity" not in c.data for c in run.calls)


async def test_discharges_seal_contact_and_normalise_the_phone(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    run = await run_files(tmp_path, world, mapping, "keluar_2020-09-15.csv")
    for call in run.calls:
        validate(store, call)
    home, transfer = (c.data for c in run.calls)
    assert home["discharge_destination"] == "family-reunification"
    assert home["destination_subdivision"] == "ID-KB"
    assert home["contact"] == {
        "prs_MobilePhone": "+447700900123",
        "prs_MailingStreet": "Jalan Fiktif No. 1, RT 001/RW 002, Desa Contoh",
        "prs_MailingCity": "Kabupaten Sambas",
        "prs_MailingState": "Kalimantan Barat",
    }
    assert run.calls[0].recipients == (KBRI_KCH,)
    assert transfer == {
        "case_id": "KBRI-KCH-2020-000124",
        "shelter_id": "rptc-pontianak",
        "discharged_at": "2020-09-02T08:00:00+07:00",
        "discharge_destination": "other-shelter",
        "destination_party": "kemensos",
        "destination_location_id": "rpsa-jawa-timur",
        "destination_country": "ID",  # an ISO code is accepted as written
        "destination_subdivision": "ID-JI",
    }


async def test_capacity_semicolon_export_and_derived_fields(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    """Excel with Indonesian settings writes ';'; alert id and free beds are derived when not exported."""
    run = await run_files(tmp_path, world, mapping, "kapasitas_2020-08-26.csv")
    for call in run.calls:
        validate(store, call)
        assert call.recipients == ()
    assert [c.data for c in run.calls] == [
        {
            "alert_id": "CAP-RPTC-PONTIANAK",
            "shelter_id": "rptc-pontianak",
            "operator_party": "kemensos",
            "as_of": "2020-08-26T08:00:00+07:00",
            "capacity_beds": 60,
            "occupied_beds": 52,
            "available_beds": 4,  # exported value wins (2 beds kept for quarantine)
            "quarantine_beds_available": 2,
            "accepting_admissions": True,
            "accepts": ["women", "men", "children"],
        },
        {
            "alert_id": "CAP-RPTC-PONTIANAK",  # the same alert, updated
            "shelter_id": "rptc-pontianak",
            "operator_party": "kemensos",
            "as_of": "2020-09-03T08:00:00+07:00",
            "capacity_beds": 60,
            "occupied_beds": 60,
            "available_beds": 0,  # derived: capacity - occupied
            "accepting_admissions": False,
        },
    ]


async def test_group_arrivals_suppress_small_counts_instead_of_quarantining(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    run = await run_files(tmp_path, world, mapping, "kedatangan_2020-08-18.csv")
    assert run.quarantined == []
    for call in run.calls:
        validate(store, call)
    assert [c.data["expected_count"] for c in run.calls] == [14, "<11", 0, "<11"]
    first = run.calls[0].data
    assert first == {
        "alert_id": "KDT-PTK-2020-0045",
        "arrival_point": "pos-pemulangan-pontianak",
        "expected_date": "2020-08-18",
        "expected_count": 14,
        "origin_country": "MY",
        "origin_subdivision": "MY-13",
        "border_crossing": "plbn-entikong",
        "return_type": "mixed",
        "transport_mode": "road",
        "needs": [
            "health-screening", "quarantine", "shelter", "psychosocial-support", "child-protection",
            "hygiene-kits",
        ],
        "coordinating_party": KBRI_KCH,
        "escort_party": "iom",
        "alert_status": "active",
    }  # fmt: skip
    assert run.calls[2].data["alert_status"] == "cancelled"


@pytest.mark.parametrize(("count", "published"), [(0, 0), (1, "<11"), (10, "<11"), (11, 11), (2500, 2500)])
def test_suppress_count(count: int, published: int | str) -> None:
    assert suppress_count(count) == published


async def test_referrals_map_names_sex_and_citizenship(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    run = await run_files(tmp_path, world, mapping, "rujukan_2020-09-20.csv")
    for call in run.calls:
        validate(store, call)
        assert call.recipients == ("iom",)  # sealed for the party referred to
    siti, budi = (c.data for c in run.calls)
    assert siti["identity"] == {
        "prs_FirstName": "Siti",
        "prs_SecondName": "Contoh",
        "prs_Gender": "Feminine",  # P
        "prs_Birthdate": "1996-03-14",
        "prs_Citizenship": ["ID"],
    }
    assert siti["consent"] == {
        "con_Consent": True,
        "given_at": "2020-09-18T10:00:00+07:00",
        "scope": ["referral", "data-sharing", "case-management"],
    }
    assert siti["requested_services"] == ["reintegration", "livelihood"]
    assert "child" not in siti
    assert "Catatan internal" not in json.dumps(siti)  # an ignored column is never read
    assert budi["identity"] == {
        "prs_FirstName": "Budi",  # a single name goes into prs_FirstName
        "prs_Gender": "Masculine",  # l
        "prs_Birthdate": "2004-01-01",
        "prs_Citizenship": ["ID", "MY"],
    }
    assert budi["legal_basis"] == "vital-interest"
    assert budi["child"] == {"is_minor": True}


# ---- inbound: codes and formats ----------------------------------------------------------------------------


def column(name: str, **spec: Any) -> FieldSpec:
    return FieldSpec(target=name, source=name, **spec)


@pytest.mark.parametrize(
    ("native", "gender"), [("L", "Masculine"), ("P", "Feminine"), ("l", "Masculine"), (" p ", "Feminine")]
)
def test_gender_codes(mapping: KemensosMapping, native: str, gender: str) -> None:
    assert mapping.tables.lookup("jenis_kelamin", native, "jenis_kelamin") == gender


def test_unknown_gender_code_names_the_column_not_the_value(tmp_path: Path, mapping: KemensosMapping) -> None:
    source = make_source(tmp_path, mapping, [])
    with pytest.raises(GatewayError) as caught:
        source.mapper._one(column("jenis_kelamin", table="jenis_kelamin"), "Perempuan-X")
    assert caught.value.reason is Reason.SCHEMA_INVALID
    assert "jenis_kelamin" in caught.value.detail
    assert "unknown-code" in caught.value.detail
    assert "Perempuan-X" not in caught.value.detail


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("19/08/2020", "2020-08-19"),
        ("2020-08-19", "2020-08-19"),
        ("19-08-2020", "2020-08-19"),
        ("1/8/2020", "2020-08-01"),
    ],
)
def test_date_formats(tmp_path: Path, mapping: KemensosMapping, text: str, iso: str) -> None:
    source = make_source(tmp_path, mapping, [])
    assert source.mapper._one(column("tanggal", kind="date"), text) == iso


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("19/08/2020 14:20", "2020-08-19T14:20:00+07:00"),
        ("19/08/2020 14:20:05", "2020-08-19T14:20:05+07:00"),
        ("2020-08-19 14:20", "2020-08-19T14:20:00+07:00"),
        ("2020-08-19T14:20:00+08:00", "2020-08-19T14:20:00+08:00"),  # an explicit offset is kept
        ("2020-08-19T07:20:00Z", "2020-08-19T07:20:00Z"),
        ("19/08/2020", "2020-08-19T00:00:00+07:00"),  # a date alone: midnight local time
    ],
)
def test_datetime_formats(tmp_path: Path, mapping: KemensosMapping, text: str, instant: str) -> None:
    source = make_source(tmp_path, mapping, [])
    assert source.mapper._one(column("waktu", kind="datetime"), text) == instant


@pytest.mark.parametrize(
    ("kind", "text", "problem"),
    [
        ("date", "31/02/2020", "invalid-date"),
        ("date", "2020/19/08", "invalid-date"),
        ("datetime", "19/08/2020 25:00", "invalid-datetime"),
        ("int", "1.234", "invalid-integer"),
        ("int", "-1", "invalid-integer"),
        ("count", "sepuluh", "invalid-count"),
        ("phone", "12", "invalid-phone"),
    ],
)
def test_bad_values_name_the_problem_not_the_value(
    tmp_path: Path, mapping: KemensosMapping, kind: str, text: str, problem: str
) -> None:
    source = make_source(tmp_path, mapping, [])
    with pytest.raises(GatewayError) as caught:
        source.mapper._one(column("kolom", kind=kind), text)
    assert f"kolom: {problem}" in caught.value.detail
    assert text not in caught.value.detail


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("+44 7700 900123", "+447700900123"),
        ("0044 7700 900124", "+447700900124"),
        ("0812-0000-0000", "+6281200000000"),
    ],
)
def test_phone_numbers_become_e164(tmp_path: Path, mapping: KemensosMapping, text: str, e164: str) -> None:
    source = make_source(tmp_path, mapping, [])
    assert source.mapper._one(column("telepon", kind="phone"), text) == e164


# ---- inbound: quarantine -----------------------------------------------------------------------------------


async def test_bad_rows_are_quarantined_by_column_and_the_rest_continues(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    name = "penerimaan_2020-08-20_rusak.csv"
    with capture_logs() as logs:
        run = await run_files(tmp_path, world, mapping, name)
    assert [c.data["case_id"] for c in run.calls] == ["KBRI-KCH-2020-000125", "KBRI-KCH-2020-000130"]
    for call in run.calls:
        validate(store, call)
    reports = run.reports(name)
    assert [(r["row"], r["field"], r["reason"], r["problem"]) for r in reports] == [
        (3, "tanggal_masuk", "schema.invalid", "invalid-datetime"),
        (4, "id_rptc", "schema.invalid", "unknown-code"),
        (5, "no_kasus", "schema.invalid", "missing-value"),
        (6, "anak", "schema.invalid", "publish-refused"),  # child without is_minor: the schema says no
        (7, "dirujuk_oleh", "seal.no-recipients", "publish-refused"),  # health, but nobody to seal it for
        (8, "id_rptc", "schema.invalid", "missing-cells"),
    ]
    assert all(r["file"] == file_ref(name) for r in reports)
    assert run.quarantined == [("kemensos-csv", r["reason"]) for r in reports]
    assert (run.source.done / name).exists()

    # never a value: not in the report, not in a log line
    fixture_cells = {
        cell
        for line in (FIXTURES / name).read_text("utf-8").splitlines()[1:]
        for cell in line.split(",")
        if len(cell) > 3
    }
    text = run.report_text()
    logged = json.dumps(logs, default=str)
    for value in (*NAMES, *fixture_cells):
        assert value not in text, value
        assert value not in logged, value
    rejected = [entry for entry in logs if entry["event"] == "kemensos_csv.row_rejected"]
    assert [(e["row"], e["field"], e["reason"]) for e in rejected] == [
        (r["row"], r["field"], r["reason"]) for r in reports
    ]
    assert all(e["event_id"] == csv_event_id(sha256(FIXTURES / name), e["row"]) for e in rejected)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_header_less_export_reports_columns_by_position_only(
    tmp_path: Path, world: World, mapping: KemensosMapping
) -> None:
    """Without its header row the first record is read as the header: its cells are names, not columns."""
    quarantined: list[tuple[str, str]] = []
    source = make_source(tmp_path, mapping, quarantined)
    lines = (FIXTURES / "penerimaan_2020-08-19.csv").read_text("utf-8").splitlines()[1:]
    (source.inbox / "penerimaan_tanpa_header.csv").write_text("\n".join(lines) + "\n", "utf-8")
    publish = WorldPublish(world, "kemensos")
    await source.process_pending(publish)
    assert publish.calls == []
    report = (source.quarantine / "penerimaan_tanpa_header.csv.rejected.jsonl").read_text("utf-8")
    records = [json.loads(line) for line in report.splitlines()]
    assert [(r["row"], r["field"], r["problem"]) for r in records] == [
        (2, None, "unknown-column"), (3, None, "unknown-column"),
    ]  # fmt: skip
    assert "column 1 is neither mapped nor ignored" in records[0]["detail"]
    for value in ("Siti Contoh", "KBRI-KCH-2020-000123", "Budi Sampel"):
        assert value not in report


async def test_a_missing_required_column_quarantines_each_row(
    tmp_path: Path, world: World, mapping: KemensosMapping
) -> None:
    source = make_source(tmp_path, mapping, [])
    write_drop(
        source.directory, "penerimaan_x.csv", ["no_kasus", "id_rptc"], [["KBRI-KCH-2020-000123", "RPTC-PTK"]]
    )
    await source.process_pending(WorldPublish(world, "kemensos"))
    records = [
        json.loads(x)
        for x in (source.quarantine / "penerimaan_x.csv.rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["row"], r["field"], r["problem"]) for r in records] == [(2, "tanggal_masuk", "missing-column")]


async def test_invalid_utf8_costs_one_row(tmp_path: Path, world: World, mapping: KemensosMapping) -> None:
    source = make_source(tmp_path, mapping, [])
    content = (
        b"\xef\xbb\xbfno_kasus,id_rptc,tanggal_masuk,kondisi_kesehatan,dirujuk_oleh\r\n"  # with an Excel BOM
        b"KBRI-KCH-2020-000123,RPTC-PTK,19/08/2020,Batuk \xff kering,KBRI Kuching\r\n"
        b"KBRI-KCH-2020-000124,RPTC-PTK,19/08/2020,,\r\n"
    )
    (source.inbox / "penerimaan_utf8.csv").write_bytes(content)
    publish = WorldPublish(world, "kemensos")
    await source.process_pending(publish)
    assert [c.data["case_id"] for c in publish.calls] == ["KBRI-KCH-2020-000124"]
    record = json.loads((source.quarantine / "penerimaan_utf8.csv.rejected.jsonl").read_text())
    assert (record["row"], record["field"], record["reason"]) == (
        2,
        "kondisi_kesehatan",
        "parse.invalid-utf8",
    )


async def test_a_file_of_no_known_kind_is_reported_and_moved(
    tmp_path: Path, world: World, mapping: KemensosMapping
) -> None:
    quarantined: list[tuple[str, str]] = []
    source = make_source(tmp_path, mapping, quarantined)
    shutil.copy(FIXTURES / "penerimaan_2020-08-19.csv", source.inbox / "laporan_bulanan.csv")
    (source.inbox / ".penerimaan_sedang_ditulis.csv.tmp").write_text("half a file", "utf-8")
    publish = WorldPublish(world, "kemensos")
    assert await source.process_pending(publish) == 1
    assert publish.calls == []
    record = json.loads((source.quarantine / "laporan_bulanan.csv.rejected.jsonl").read_text())
    assert (record["row"], record["reason"], record["problem"]) == (
        None,
        "schema.unknown",
        "unknown-file-kind",
    )
    assert quarantined == [("kemensos-csv", "schema.unknown")]
    assert [p.name for p in source.inbox.iterdir()] == [".penerimaan_sedang_ditulis.csv.tmp"]  # not ready yet


# ---- inbound: ids, deferral, the run loop ------------------------------------------------------------------


async def test_event_ids_are_deterministic_per_file_and_row(
    tmp_path: Path, world: World, mapping: KemensosMapping
) -> None:
    name = "penerimaan_2020-08-19.csv"
    first = await run_files(tmp_path / "a", world, mapping, name)
    again = await run_files(tmp_path / "b", world, mapping, name)
    digest = sha256(FIXTURES / name)
    assert [c.event_id for c in first.calls] == [csv_event_id(digest, row) for row in (2, 3, 4)]
    assert [c.event_id for c in again.calls] == [c.event_id for c in first.calls]


@pytest.mark.parametrize("reason", [Reason.OUTBOX_FULL, Reason.STOPPING, Reason.BUS_UNAVAILABLE])
async def test_a_gateway_that_cannot_take_events_now_defers_the_file(
    tmp_path: Path, world: World, mapping: KemensosMapping, reason: Reason
) -> None:
    name = "penerimaan_2020-08-19.csv"
    publish = WorldPublish(world, "kemensos", refuse_on_call=(2, reason))
    run = await run_files(tmp_path, world, mapping, name, publish=publish)
    assert (run.source.inbox / name).exists()
    assert not (run.source.done / name).exists()
    assert run.report_text() == ""
    assert run.quarantined == []
    await run.source.process_pending(publish)  # next poll: the whole file again, with the same ids
    ids = [c.event_id for c in publish.calls]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3
    assert (run.source.done / name).exists()


async def test_run_polls_until_stopped(tmp_path: Path, world: World, mapping: KemensosMapping) -> None:
    source = make_source(tmp_path, mapping, [])
    publish = WorldPublish(world, "kemensos")
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(publish, stop))
    write_sample_drops(source.directory, ("kapasitas_2020-08-26.csv",))
    for _ in range(500):
        if publish.calls:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert [c.type for c in publish.calls] == ["id.trafficking.alert.shelter-capacity"]


async def test_the_simulators_sample_drops_are_all_valid(
    tmp_path: Path, world: World, mapping: KemensosMapping, store: SchemaStore
) -> None:
    quarantined: list[tuple[str, str]] = []
    source = make_source(tmp_path, mapping, quarantined)
    write_sample_drops(source.directory)
    publish = WorldPublish(world, "kemensos")
    assert await source.process_pending(publish) == len(SAMPLE_DROPS)
    assert quarantined == []
    assert len(publish.calls) == sum(len(rows) for _, rows in SAMPLE_DROPS.values())
    for call in publish.calls:
        validate(store, call)


# ---- outbound ----------------------------------------------------------------------------------------------

ATTRIBUTES = {
    "id": "5d0c2a4e-3b8f-4c61-9a57-0f1e2d3c4b01",
    "source": KBRI_KCH,
    "subject": "KBRI-KCH-2020-000123",
    "time": "2020-08-12T09:30:00Z",
    "dataclassification": "restricted",
}


def attributes(event_type: str, version: str = "1.0") -> dict[str, str]:
    name = event_type.removeprefix("id.trafficking.")
    return {**ATTRIBUTES, "type": event_type, "dataschema": f"urn:id.trafficking:schema:{name}:{version}"}


def leaves(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from leaves(inner, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_referral_in_the_native_shape(mapping: KemensosMapping) -> None:
    payload = example("case.referral", "1.0")[0][1]  # KBRI Kuching, plantation worker (Siti Contoh)
    record = native_record(attributes("id.trafficking.case.referral"), payload, mapping)
    expected = json.loads((FIXTURES / "kasus_rujukan_native.json").read_text("utf-8"))
    assert record == expected
    assert record["nama_lengkap"] == "Siti Contoh"
    assert record["jenis_kelamin"] == "P"
    assert record["asal_rujukan"] == KBRI_KCH
    assert record["layanan_diminta"] == ["penampungan", "psikososial", "reintegrasi"]


def test_nothing_a_recipient_was_given_is_lost(mapping: KemensosMapping) -> None:
    """Every payload leaf is either mapped (its path or a parent's) or passed on under ``lainnya``."""
    records = (mapping.common_record, *mapping.records.values())
    mapped = {p for record in records for out in record.fields for p in payload_paths(out)}
    for name in ("case.referral", "case.repatriation-plan", "case.shelter-discharge", "alert.supply"):
        for _, payload in example(name, "1.0"):
            record = native_record(attributes(f"id.trafficking.{name}"), payload, mapping)
            rest = record.get("lainnya", {})
            for leaf in leaves(payload):
                parts = leaf.split(".")
                covered = any(".".join(parts[:i]) in mapped for i in range(1, len(parts) + 1))
                assert covered or _get(rest, parts) is not None, (name, leaf)


def _get(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def test_repatriation_plan_in_the_native_shape(mapping: KemensosMapping) -> None:
    payload = next(
        p for path, p in example("case.repatriation-plan", "1.0") if p["case_id"] == "KBRI-KCH-2020-000123"
    )
    record = native_record(attributes("id.trafficking.case.repatriation-plan"), payload, mapping)
    assert record["jenis_data"] == "rencana_kepulangan"
    assert record["no_kasus"] == "KBRI-KCH-2020-000123"
    assert record["nama_lengkap"] == "Siti Contoh"
    assert record["rencana_kepulangan"] == {
        "status": "pasti",
        "tanggal": "2020-08-18",
        "tanggal_berangkat": "2020-08-18",
        "negara_keberangkatan": "MY",
        "kota_keberangkatan": "Kuching",
        "lokasi_keberangkatan": "kbri-kuching-shelter",
        "pos_lintas_batas": "plbn-entikong",
        "negara_kedatangan": "ID",
        "titik_kedatangan": "pos-pemulangan-pontianak",
        "tujuan_lanjutan": "rptc-pontianak",
        "moda_transportasi": "darat",
        "perlu_pendamping": True,
        "pendamping": "iom",
        "dokumen_perjalanan": "splp",
        "skrining_kesehatan_wajib": True,
        "skrining_kesehatan_selesai": True,
        "karantina_wajib": True,
        "no_kelompok": "ALR-KCH-2020-000045",
    }
    assert record["kesehatan"]["status_covid"] == "negatif"
    assert record["nomor_identitas"] == "SPLP-0000001"
    assert "lainnya" not in record  # every field of this plan has a native name


def test_values_without_a_native_code_pass_unchanged(mapping: KemensosMapping) -> None:
    payload = example("case.referral", "1.0")[0][1]
    changed = {**payload, "identity": {**payload["identity"], "prs_Gender": "NonConforming"}}
    record = native_record(attributes("id.trafficking.case.referral"), changed, mapping)
    assert record["jenis_kelamin"] == "NonConforming"  # no L/P for it: not invented, not dropped


def test_other_types_get_the_generic_shape(mapping: KemensosMapping) -> None:
    payload = example("alert.supply", "1.0")[0][1]
    record = native_record(attributes("id.trafficking.alert.supply"), payload, mapping)
    assert record["jenis_data"] == "alert.supply"
    assert record["no_peringatan"] == payload["alert_id"]
    assert record["pesan"]["jenis"] == "id.trafficking.alert.supply"
    assert {k: v for k, v in payload.items() if k != "alert_id"} == record["lainnya"]


# ---- the sink against the case-system simulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def referral_for_kemensos() -> Accepted:
    world = World.build()
    event = world.event(
        "id.trafficking.case.referral",
        example("case.referral", "1.0")[0][1],
        by=KBRI_KCH,
        recipients=["kemensos"],
    )
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted), verdict
    return verdict


async def test_the_sink_posts_the_native_record_once(
    tmp_path: Path, referral_for_kemensos: Accepted, mapping: KemensosMapping
) -> None:
    async with KemensosCaseSystemSimulator() as simulator:
        sink = build_sink(
            "kemensos-case-system", {"url": simulator.url, "timeout": 5}, plugin_context(tmp_path, "kemensos")
        )
        assert isinstance(sink, WebhookSink)
        assert sink.name == "kemensos-case-system"
        try:
            await sink.deliver(referral_for_kemensos)
            await sink.deliver(referral_for_kemensos)  # a redelivery: 409, counted as delivered
        finally:
            await sink.close()
    event = referral_for_kemensos.event
    key = f"{event.source}/{event.id}"
    assert simulator.raw_count == 2
    assert simulator.unique_count == 1
    assert simulator.statuses(key) == [201, 409]
    assert simulator.cases[key] == to_native(referral_for_kemensos, mapping)
    assert simulator.cases[key]["nama_lengkap"] == "Siti Contoh"  # unsealed for Kemensos
    assert simulator.cases[key]["pesan"]["id"] == event.id


async def test_the_sink_retries_a_case_system_that_is_down(
    tmp_path: Path, referral_for_kemensos: Accepted
) -> None:
    async with KemensosCaseSystemSimulator() as simulator:
        simulator.fail_next(2)
        sink = build_sink(
            "kemensos-case-system", {"url": simulator.url}, plugin_context(tmp_path, "kemensos")
        )
        try:
            with pytest.raises(SinkError) as caught:
                await sink.deliver(referral_for_kemensos)
            assert caught.value.retryable
            assert caught.value.status == 503
            await deliver_with_retry(
                sink,
                referral_for_kemensos,
                RetryPolicy(attempts=3, base_delay=0.0),
                sleep=lambda _: asyncio.sleep(0),
            )
        finally:
            await sink.close()
    assert [r.status for r in simulator.requests] == [503, 503, 201]
    assert simulator.unique_count == 1


async def test_the_simulator_refuses_requests_without_a_key(tmp_path: Path) -> None:
    async with KemensosCaseSystemSimulator() as simulator, aiohttp.ClientSession() as session:
        async with session.post(simulator.url, json={"no_kasus": "KBRI-KCH-2020-000123"}) as response:
            assert response.status == 400
        async with session.get(simulator.url) as response:
            assert await response.json() == {"kasus": []}
    with pytest.raises(ValueError, match="loopback"):
        KemensosCaseSystemSimulator(host="0.0.0.0")  # noqa: S104 - the point of the test


# ---- factories and options ---------------------------------------------------------------------------------


def test_entry_points_resolve_to_the_factories(tmp_path: Path) -> None:
    ctx = plugin_context(tmp_path, "kemensos")
    source = build_source("kemensos-csv", {"directory": "drop", "poll_interval": 0.2}, ctx)
    assert isinstance(source, CsvDropSource)
    assert source.directory == tmp_path / "drop"
    assert source.poll_interval == 0.2
    sink = build_sink("kemensos-case-system", {"url": "http://127.0.0.1:9/kasus"}, ctx)
    assert isinstance(sink, WebhookSink)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "sources[0].directory"),
        ({"directory": "drop", "maping": "x.toml"}, "sources[0].maping"),
        ({"directory": "drop", "poll_interval": 0}, "sources[0].poll_interval"),
        ({"directory": "drop", "poll_interval": "fast"}, "sources[0].poll_interval"),
        ({"directory": "drop", "mapping": "missing.toml"}, "missing.toml"),
    ],
)
def test_source_options_are_checked(tmp_path: Path, options: dict[str, Any], named: str) -> None:
    with pytest.raises(GatewayError) as caught:
        build_source("kemensos-csv", options, plugin_context(tmp_path, "kemensos"))
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert named in caught.value.detail


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "url"),
        ({"url": "ftp://example.org/kasus"}, "url"),
        ({"url": "http://127.0.0.1:9/kasus", "timeout": -1}, "timeout"),
        ({"url": "http://127.0.0.1:9/kasus", "headers": {}}, "headers"),
    ],
)
def test_sink_options_are_checked(tmp_path: Path, options: dict[str, Any], named: str) -> None:
    with pytest.raises(GatewayError) as caught:
        build_sink("kemensos-case-system", options, plugin_context(tmp_path, "kemensos"))
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert named in caught.value.detail


def test_a_mapping_override_is_used(tmp_path: Path) -> None:
    override = tmp_path / "kemensos.toml"
    override.write_text(MAPPING_FILE.read_text("utf-8").replace('"RPTC-PTK" =', '"RPTC-PNK" ='), "utf-8")
    source = build_source(
        "kemensos-csv",
        {"directory": "drop", "mapping": "kemensos.toml"},
        plugin_context(tmp_path, "kemensos"),
    )
    assert isinstance(source, CsvDropSource)
    assert source.mapper.mapping.tables.lookup("lokasi", "RPTC-PNK", "id_rptc") == "rptc-pontianak"
