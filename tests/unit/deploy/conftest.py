"""Fixtures of the deploy tests: the real schemas, and each registry of ``_common`` rendered once."""

from __future__ import annotations

import pytest

from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy.acls import Rendered, render
from tests.unit.deploy._common import REGISTRIES


@pytest.fixture(scope="module")
def schemas() -> SchemaStore:
    return SchemaStore.load()


@pytest.fixture(scope="module", params=sorted(REGISTRIES))
def case(request: pytest.FixtureRequest, schemas: SchemaStore) -> tuple[Registry, Rendered]:
    registry = REGISTRIES[request.param]()
    return registry, render(registry, schemas, partitions=3, replication=3, min_insync=2)
