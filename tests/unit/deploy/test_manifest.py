"""``acls.json`` (``gateway.deploy.manifest``) says exactly what the derivation says."""

from __future__ import annotations

import json

from gateway.contract.registry import Registry
from gateway.deploy.acls import Rendered
from gateway.deploy.manifest import MANIFEST_FORMAT, to_manifest
from tests.unit.deploy._common import as_tuples


def test_manifest_round_trips(case: tuple[Registry, Rendered]) -> None:
    _, rendered = case
    manifest = json.loads(to_manifest(rendered))
    assert manifest["format"] == MANIFEST_FORMAT
    acls = {
        (a["principal"], a["resource_type"], a["resource_name"], a["operation"]) for a in manifest["acls"]
    }
    assert acls == as_tuples(rendered)
    assert {a["pattern_type"] for a in manifest["acls"]} == {"literal"}
    assert [t["name"] for t in manifest["topics"]] == rendered.topic_names()
