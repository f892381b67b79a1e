"""The real ``schemas/`` directory: every example behaves as its file name says, and the CI check is clean.

Parametrised over whatever exists when the tests are collected, so a new schema or example is covered
without editing this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.contract.authoring import check_schemas
from gateway.contract.schemas import SCHEMA_ID_PREFIX, SchemaStore, default_schema_root
from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason

ROOT = default_schema_root()


def _examples(kind: str) -> list[Any]:
    cases = []
    for path in sorted(ROOT.glob(f"*/examples/*/{kind}-*.json")):
        name, version = path.parent.parent.parent.name, path.parent.name
        cases.append(
            pytest.param(f"{SCHEMA_ID_PREFIX}{name}:{version}", path, id=f"{name}/{version}/{path.stem}")
        )
    return cases


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore.load(ROOT)


@pytest.mark.parametrize(("dataschema", "path"), _examples("valid"))
def test_valid_example_passes(store: SchemaStore, dataschema: str, path: Path) -> None:
    store.get(dataschema).validate(parse_json(path.read_bytes()))


@pytest.mark.parametrize(("dataschema", "path"), _examples("invalid"))
def test_invalid_example_fails(store: SchemaStore, dataschema: str, path: Path) -> None:
    with pytest.raises(GatewayError) as caught:
        store.get(dataschema).validate(parse_json(path.read_bytes()))
    assert caught.value.reason is Reason.SCHEMA_INVALID


def test_schemas_exist(store: SchemaStore) -> None:
    assert store.schemas(), f"no schemas under {ROOT}"


def test_check_is_clean() -> None:
    problems = check_schemas(SchemaStore.load(default_schema_root()))
    assert problems == [], "\n".join(problems)
