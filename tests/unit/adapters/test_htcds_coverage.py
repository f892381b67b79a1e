"""HTCDS v2.0 coverage: every column of IOM's template is mapped into the exchange schemas (sealed where
personal) or excluded with a reason, and at least 90 % are mapped (adapters/iom/htcds_coverage.toml)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from referencing import Registry

from adapters.iom import IomMapping, htcds_columns
from gateway.contract.schemas import SchemaStore

COVERAGE = Path(__file__).resolve().parents[3] / "adapters" / "iom" / "htcds_coverage.toml"
ENVELOPE = {"source", "subject", "time", "type", "id"}
PERSONAL_PREFIXES = ("prs_", "per_", "org_")
FREE_TEXT = {
    "cas_ReasonForCaseClosure",
    "cas_OutgoingReferralDetails",
    "cas_IncomingReferralDetails",
    "hte_Description",
    "spl_Objectives",
    "spl_ActionPlan",
    "vic_DetailsOfVulnerabilities",
}


@pytest.fixture(scope="module")
def coverage() -> dict[str, dict[str, str]]:
    with COVERAGE.open("rb") as handle:
        document = tomllib.load(handle)
    assert document["format"] == "xchg-htcds-coverage/1"
    columns: dict[str, dict[str, str]] = document["columns"]
    return columns


def _resolve(registry: Registry[Any], node: Mapping[str, Any], base: str) -> tuple[Mapping[str, Any], str]:
    while "$ref" in node:
        resolved = registry.resolver(base_uri=base).lookup(node["$ref"])
        node, base = resolved.contents, resolved.resolver._base_uri
    return node, base


def _walk(schemas: SchemaStore, message: str, path: str) -> tuple[bool, bool]:
    """(path exists, path is under an x-seal property) in the named schema version."""
    name, version = message.split(":")
    schema = schemas.get(f"urn:id.trafficking:schema:{name}:{version}")
    node: Mapping[str, Any] = schema.raw
    base = schema.id
    sealed = False
    for depth, part in enumerate(path.split(".")):
        node, base = _resolve(schemas.registry, node, base)
        if node.get("type") == "array":
            node, base = _resolve(schemas.registry, node["items"], base)
        properties = node.get("properties", {})
        if part not in properties:
            return False, sealed
        node = properties[part]
        if depth == 0 and "x-seal" in node:
            sealed = True
    return True, sealed


def test_every_template_column_is_listed_once(coverage: dict[str, dict[str, str]]) -> None:
    columns = htcds_columns()
    assert len(columns) == 84
    assert sorted(coverage) == sorted(columns)


def test_mapped_paths_exist_and_personal_columns_travel_sealed(
    coverage: dict[str, dict[str, str]], world_schemas: SchemaStore
) -> None:
    problems = []
    for column, entry in coverage.items():
        if "excluded" in entry:
            assert len(entry["excluded"]) > 20, f"{column}: give a reason"
            continue
        if entry["schema"] == "envelope":
            assert entry["path"] in ENVELOPE
            continue
        exists, sealed = _walk(world_schemas, entry["schema"], entry["path"])
        if not exists:
            problems.append(f"{column}: {entry['schema']} has no {entry['path']}")
        elif (column.startswith(PERSONAL_PREFIXES) or column in FREE_TEXT) and not sealed:
            problems.append(f"{column}: personal, but {entry['path']} is not sealed")
    assert problems == []


def test_at_least_90_percent_of_the_columns_are_mapped(coverage: dict[str, dict[str, str]]) -> None:
    mapped = [c for c, e in coverage.items() if "excluded" not in e]
    excluded = sorted(c for c, e in coverage.items() if "excluded" in e)
    assert len(mapped) / len(coverage) >= 0.9, excluded
    assert excluded == sorted(
        [
            "cas_CaseOwner",
            "cas_ReferringPrimaryCaseWorker",
            "cas_ReferredPrimaryCaseWorker",
            "cco_CaseComment",
            "hte_Street",
            "hte_PostalCode",
            "hte_Latitude",
            "hte_Longitude",
        ]
    )


def test_the_iom_sink_emits_every_referral_column(coverage: dict[str, dict[str, str]]) -> None:
    """What the schemas carry for a referral, IOM's case system gets under its HTCDS name (or within the
    object or list that holds it)."""
    mapping = IomMapping.load()
    targets = {spec.target for spec in mapping.referral_out.fields}
    reads = {path.split(".", 1)[0] for spec in mapping.referral_out.fields for path in spec.reads()}
    missing = []
    for column, entry in coverage.items():
        if entry.get("schema", "").startswith("case.referral:") or entry.get("schema") == "envelope":
            top = entry["path"].split(".", 1)[0]
            if column not in targets and top not in reads and f"${entry['path']}" not in reads:
                missing.append(column)
    assert missing == []


@pytest.fixture(scope="module")
def world_schemas() -> SchemaStore:
    return SchemaStore.load()
