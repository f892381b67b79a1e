"""What the deploy tests share: the registries they render, the ACLs as plain tuples, and parsers.

Two registries: the sample one and one where two agencies joined (``bp2mi`` with a sloppy read pattern,
``polri`` reading only alerts). Validation tools (``docker-compose``, ``kubernetes-validate``) are skipped
only when missing outside CI (``CI`` set), and fail the test in CI, where ``.ci/install-system-deps`` and
the dev extras install them.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.contract.registry import Registry
from gateway.deploy.acls import Rendered
from tests.paths import REPO

ROOT = REPO
SAMPLE = ROOT / "deploy" / "registry.example.toml"
COMPOSE = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
BASH = shutil.which("bash") or "/bin/bash"

BP2MI = {
    "id": "bp2mi",
    "name": "Badan Pelindungan Pekerja Migran Indonesia",
    "name_en": "Indonesian Migrant Workers Protection Agency",
    "roles": ["migrant-worker-protection"],
    "publish": [
        "id.trafficking.case.referral",
        "id.trafficking.case.consent-change",
        "id.trafficking.alert.*",
    ],
    # "xchg.kemensos.*" is sloppy on purpose: it also matches xchg.kemensos.dlq.v1, which must not be granted
    "read": ["xchg.kemlu.*.case.v1", "xchg.kemlu.*.alert.v1", "xchg.kemensos.*"],
}
POLRI = {
    "id": "polri",
    "name": "Kepolisian Negara Republik Indonesia",
    "name_en": "Indonesian National Police",
    "roles": ["law-enforcement"],
    "publish": [],
    "read": ["xchg.*.alert.v1"],
}


def sample_document() -> dict[str, Any]:
    with SAMPLE.open("rb") as handle:
        return tomllib.load(handle)


def extended_registry() -> Registry:
    document = sample_document()
    document["parties"] = [*document["parties"], BP2MI, POLRI]
    return Registry.from_mapping(document)


REGISTRIES = {"sample": lambda: Registry.load(SAMPLE), "extended": extended_registry}

Acl = tuple[str, str, str, str]  # principal, resource type, resource name, operation


def as_tuples(rendered: Rendered) -> set[Acl]:
    return {(a.principal, a.resource_type, a.resource_name, a.operation) for a in rendered.acls}


def documents(text: str) -> list[dict[str, Any]]:
    """The documents of a rendered multi-document YAML file (JSON documents), checked with PyYAML too."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line == "---":
            chunks.append([])
        elif not line.startswith("#"):
            chunks[-1].append(line)
    parsed = [json.loads("\n".join(chunk)) for chunk in chunks if "".join(chunk).strip()]
    try:
        import yaml  # noqa: PLC0415 - optional: installed with kubernetes-validate (dev extras)
    except ImportError:
        return parsed
    assert [d for d in yaml.safe_load_all(text) if d is not None] == parsed
    return parsed


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml") if not os.environ.get("CI") else __import__("yaml")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def require_tool(available: bool, what: str) -> None:
    """Skip when a validation tool is missing on a developer machine; fail in CI, which must have it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: .ci/install-system-deps and the dev extras must install it")
    pytest.skip(f"{what} is not installed here (outside CI); install it to run this check")
