"""Fixtures of the coordination tests: a store on SQLite and on a real PostgreSQL server
(tests/postgres.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.contract.schemas import SchemaStore
from gateway.coordination.clock import ManualClock
from gateway.coordination.service import schema_fields
from gateway.coordination.sop import Sop
from gateway.coordination.store import Store
from tests.postgres import postgres_server

_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each kind (PostgreSQL: a fresh database per test)."""
    if request.param == "sqlite":
        opened = Store.sqlite(tmp_path / "coordination.db")
    else:
        dsn = request.getfixturevalue("postgres")
        name = f"xc_test_{next(_DATABASES)}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        opened = Store.postgresql(dsn.replace("dbname=postgres", f"dbname={name}"))
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def schemas() -> SchemaStore:
    return SchemaStore.load()


@pytest.fixture(scope="session")
def default_sop(schemas: SchemaStore) -> Sop:
    return Sop.load(known_types=schemas.types(), fields_of=schema_fields(schemas))


@pytest.fixture
def clock() -> ManualClock:
    from datetime import UTC, datetime  # noqa: PLC0415

    return ManualClock(datetime(2020, 8, 18, 8, 0, tzinfo=UTC))
