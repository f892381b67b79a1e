"""The shared mapping engine (adapters.fieldmap) on small documents: reading through Table, kinds, tables
both ways, derived fields, context values and fields nobody mapped. The agencies' tests cover their files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.fieldmap import FORMAT, MappingError, MappingFile, MessageMap, load_mapping
from adapters.iom import MAPPING_FILE as IOM_MAPPING
from adapters.kemensos import MAPPING_FILE as KEMENSOS_MAPPING
from adapters.kemlu import MAPPING_FILE as KEMLU_MAPPING
from gateway.errors import GatewayError, Reason

TABLES = {"jk": {"L": "Masculine", "P": "Feminine"}, "yt": {"y": True, "t": False}}


def message(
    fields: dict[str, Any], *, context: tuple[str, ...] = (), unmapped: bool = False, **top: Any
) -> tuple[MessageMap, MappingFile]:
    section = {"fields": fields, **top.pop("section", {})}
    file = MappingFile({"format": FORMAT, "tables": TABLES, "m": section, **top})
    mapped = file.message(file.section("m"), context=context, unmapped=unmapped)
    file.close()
    return mapped, file


def apply(fields: dict[str, Any], record: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    context = kwargs.pop("values", None)
    mapped, file = message(fields, **kwargs)
    return mapped.apply(record, file.tables, context)


@pytest.mark.parametrize("path", [KEMENSOS_MAPPING, KEMLU_MAPPING, IOM_MAPPING])
def test_every_shipped_mapping_file_is_in_the_one_format(path: Path) -> None:
    assert path.read_text("utf-8").count(f'format = "{FORMAT}"') == 1


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"format": "kemensos-mapping/1"}, "format: must be"),
        ({"format": FORMAT, "tabels": {}}, "tabels: unknown setting"),
        ({"format": FORMAT, "tables": {"jk": {"L": "M", " l ": "F"}}}, "tables.jk. l : listed twice"),
        ({"format": FORMAT, "tables": {"jk": {"L": 1}}}, "tables.jk.L: a text or true/false value"),
        ({"format": FORMAT, "formats": {"timezone": "WIB"}}, "formats.timezone"),
        ({"format": FORMAT, "formats": {"tz": "+07:00"}}, "formats.tz: unknown setting"),
    ],
)
def test_document_errors_name_the_key(document: dict[str, Any], named: str) -> None:
    with pytest.raises(GatewayError) as caught:
        MappingFile(document).close()
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert named in caught.value.detail


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"a": {"from": "x", "tabel": "jk"}}, "m.fields.a.tabel: unknown setting"),
        ({"a": {"from": "x", "kind": "timestamp"}}, "m.fields.a.kind"),
        ({"a": {"from": "x", "table": "nope"}}, "m.fields.a.table: no [tables.nope]"),
        ({"a": {"from": "x", "const": 1}}, "m.fields.a: give one of"),
        ({"a": {"kind": "int"}}, "m.fields.a: give one of"),
        ({"a": {"from": "$party"}}, "'$party' is not a context value"),
        ({"$recipients": {"from": "x"}}, "m.fields.$recipients: not a target"),
        ({"a b": "x"}, "a dotted field path"),
        ({"a": {"from": "x", "reverse": True}}, "m.fields.a.reverse: needs a table"),
        ({"a": {"difference": ["b"]}}, "m.fields.a.difference: two field paths"),
        ({"a": {"from": "x", "required": True, "default": "y"}}, "m.fields.a.required"),
    ],
)
def test_field_errors_name_the_key(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(GatewayError) as caught:
        message(fields)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert named in caught.value.detail


def test_unmapped_is_refused_where_the_adapter_does_not_allow_it() -> None:
    """An inbound message copying unread columns would publish what nobody reviewed (a person's name)."""
    with pytest.raises(GatewayError, match=r"m\.unmapped: unknown setting"):
        message({"a": {"from": "x"}}, section={"unmapped": "rest"})


def test_a_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(f'format = "{FORMAT}"\n[m]\nfields = {{ a = {{ form = "x" }} }}\n', "utf-8")

    def build(document: Any) -> MessageMap:
        file = MappingFile(document)
        return file.message(file.section("m"))

    with pytest.raises(GatewayError) as caught:
        load_mapping(path, build)
    assert caught.value.detail.startswith(f"mapping {path}: m.fields.a.form: unknown setting")


def test_tables_fold_case_and_blanks_and_go_both_ways() -> None:
    fields = {"g": {"from": "g", "table": "jk"}, "back": {"from": "b", "table": "jk", "reverse": True}}
    assert apply(fields, {"g": "  p ", "b": "Feminine"}) == {"g": "Feminine", "back": "P"}
    assert apply(fields, {"b": "NonConforming"}) == {"back": "NonConforming"}  # nothing invented
    with pytest.raises(MappingError) as caught:
        apply(fields, {"g": "Perempuan-X"})
    assert (caught.value.field, caught.value.problem) == ("g", "unknown-code")
    assert "Perempuan-X" not in caught.value.detail


def test_exchange_values_are_accepted_only_when_the_file_says_so() -> None:
    with pytest.raises(MappingError):
        apply({"g": {"from": "g", "table": "jk"}}, {"g": "Feminine"})
    assert apply({"g": {"from": "g", "table": "jk"}}, {"g": "Feminine"}, accept_exchange_values=True) == {
        "g": "Feminine"
    }


@pytest.mark.parametrize(
    ("spec", "raw", "expected"),
    [
        ({"kind": "id"}, " kbri-kch-1 ", "KBRI-KCH-1"),
        ({"kind": "int"}, "12", 12),
        ({"kind": "int", "thousands": True}, "2.500", 2500),
        ({"kind": "count"}, "7", "<11"),
        ({"kind": "count"}, "<11", "<11"),
        ({"kind": "count"}, 0, 0),
        ({"kind": "bool"}, "Ya", True),
        ({"kind": "bool", "table": "yt"}, "t", False),
        ({"kind": "date"}, "2020-08-19T10:00:00Z", "2020-08-19"),
        ({"kind": "list", "table": "jk"}, "L; P;;L", ["Masculine", "Feminine"]),
        ({"kind": "name"}, "Siti  Nur Contoh", {"prs_FirstName": "Siti", "prs_SecondName": "Nur Contoh"}),
        ({"kind": "raw"}, {"a": [1, ""]}, {"a": [1, ""]}),
    ],
)
def test_kinds(spec: dict[str, Any], raw: Any, expected: Any) -> None:
    assert apply({"v": {"from": "v", **spec}}, {"v": raw}) == {"v": expected}


@pytest.mark.parametrize(
    ("spec", "raw", "problem"),
    [
        ({"kind": "int"}, "1.234", "invalid-integer"),
        ({"kind": "int"}, "²", "invalid-integer"),
        ({"kind": "count"}, "-1", "invalid-count"),
        ({"kind": "date"}, "2020-02-31", "invalid-date"),
        ({"kind": "bool"}, "maybe", "invalid-bool"),
        ({"kind": "phone"}, "0812 0000 0000", "invalid-phone"),  # national, and no calling_code
    ],
)
def test_kind_errors_name_the_field_and_problem_never_the_value(
    spec: dict[str, Any], raw: Any, problem: str
) -> None:
    with pytest.raises(MappingError) as caught:
        apply({"v": {"from": "col", **spec}}, {"col": raw})
    assert (caught.value.field, caught.value.problem) == ("col", problem)
    assert raw not in caught.value.detail


def test_formats_read_local_dates_times_and_phones() -> None:
    formats = {
        "timezone": "+07:00",
        "dates": ["%d/%m/%Y"],
        "datetimes": ["%d/%m/%Y %H:%M"],
        "calling_code": "+62",
    }
    fields = {
        "d": {"from": "d", "kind": "date"},
        "t": {"from": "t", "kind": "datetime"},
        "p": {"from": "p", "kind": "phone"},
    }
    record = {"d": "1/8/2020", "t": "19/08/2020 14:20", "p": "0812-0000-0000"}
    assert apply(fields, record, formats=formats) == {
        "d": "2020-08-01",
        "t": "2020-08-19T14:20:00+07:00",
        "p": "+6281200000000",
    }


def test_blank_and_empty_values_leave_the_field_out_and_required_ones_fail() -> None:
    fields = {"a": {"from": "a", "table": "jk"}, "b.c": {"from": "b", "kind": "list"}, "d": {"from": "d"}}
    assert apply(fields, {"a": "  ", "b": " ; ", "d": ""}) == {}
    with pytest.raises(MappingError) as caught:
        apply({"a": {"from": "a", "required": True}}, {"a": " "})
    assert (caught.value.field, caught.value.problem) == ("a", "missing-value")


def test_derived_fields_fill_what_is_still_absent() -> None:
    fields = {
        "shelter": {"from": "s", "kind": "id"},
        "total": {"from": "n", "kind": "int"},
        "used": {"from": "u", "kind": "int"},
        "free": {"from": "f", "kind": "int", "difference": ["total", "used"]},
        "alert_id": {"template": "CAP-{shelter}", "kind": "id"},
        "child.is_minor": {"from": "anak", "table": "yt", "kind": "bool", "omit_when": False},
    }
    assert apply(fields, {"s": "rptc-1", "n": "6", "u": "8", "anak": "t"}) == {
        "shelter": "RPTC-1", "total": 6, "used": 8, "free": 0, "alert_id": "CAP-RPTC-1",
    }  # fmt: skip
    assert apply(fields, {"n": "6", "u": "2", "f": "1"}) == {"total": 6, "used": 2, "free": 1}


def test_context_values_joins_and_nested_lists() -> None:
    fields = {
        "by": "$event.source",
        "name": {"join": ["p.first", "p.middle", "p.last"]},
        "events": {
            "each": "steps",
            "fields": {"type": {"from": "t", "table": "jk"}, "at": {"from": "$party"}},
        },
    }
    record = {"p": {"first": "Siti", "last": "Contoh"}, "steps": [{"t": "P"}, {}]}
    context = ("$event.source", "$party")
    assert apply(fields, record, context=context, values={"event": {"source": "iom"}, "party": "iom"}) == {
        "by": "iom",
        "name": "Siti Contoh",
        "events": [{"type": "Feminine", "at": "iom"}, {"at": "iom"}],
    }
    with pytest.raises(MappingError) as caught:
        apply(fields, {"steps": [{"t": "X"}]}, context=context, values={})
    assert caught.value.field == "steps[0].t"


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        ("top", {"a": 1, "rest": {"z": {"y": 2}}}),
        ("any", {"a": 1, "rest": {"p": {"b": "x"}, "z": {"y": 2}}}),
    ],
)
def test_fields_nobody_mapped_are_passed_on(depth: str, expected: dict[str, Any]) -> None:
    record = {"p": {"a": 1, "b": "x"}, "z": {"y": 2}}
    fields = {"a": "p.a"}
    section = {"unmapped": "rest", "unmapped_depth": depth}
    assert apply(fields, record, unmapped=True, section=section) == expected


def test_rows_can_be_read_in_column_order_while_required_fields_keep_file_order() -> None:
    mapped, file = message(
        {
            "a": {"from": "a", "kind": "int", "required": True},
            "b": {"from": "b", "kind": "int", "required": True},
        }
    )
    in_columns = mapped.read_in_order({"b": 0, "a": 1})
    with pytest.raises(MappingError) as first_bad:
        in_columns.apply({"a": "x", "b": "y"}, file.tables)
    assert first_bad.value.field == "b"  # the leftmost cell's problem
    with pytest.raises(MappingError) as first_missing:
        in_columns.apply({}, file.tables)
    assert first_missing.value.field == "a"  # the first required field of the file


def test_schema_errors_are_traced_to_the_native_field() -> None:
    mapped, _ = message(
        {"case_id": {"from": "no"}, "consent.given_at": {"from": "waktu"}, "operator": {"const": "x"}}
    )
    assert (
        mapped.source_for_detail("$.consent.given_at: pattern; $: required property 'case_id' missing")
        == "waktu"
    )
    assert mapped.source_for_detail("$: required property 'case_id' missing") == "no"
    assert mapped.source_for_detail("$.consent: type (expected object)") == "waktu"
    assert mapped.source_for_detail("$.operator: enum") is None
