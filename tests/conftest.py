"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import pytest

from tests.world import World


@pytest.fixture(scope="session")
def world() -> World:
    """The sample parties with fresh keys and the real schemas (built once per session)."""
    return World.build()
