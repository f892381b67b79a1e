"""The gateway image: the ``Dockerfile``'s shape and the ``.dockerignore`` allow-list."""

from __future__ import annotations

import re

from tests.unit.deploy._common import ROOT


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2
    assert stages[0].endswith(" AS builder")
    base = next(line for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim@sha256:[0-9a-f]{64}", base)
    final = lines[lines.index(stages[1]) :]
    assert not any("apt-get" in line or "gcc" in line or "build-essential" in line for line in final)
    assert "USER 10001:10001" in final
    assert final.index("USER 10001:10001") < final.index('ENTRYPOINT ["gateway"]')
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert "/healthz" in text
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"  # an allow-list: nothing reaches the build context unless named
