"""``acls.json``: what :func:`gateway.deploy.acls.render` derived, as plain JSON for review and diffing.

The manifest is the reference reading of the broker's authorisation: every topic with its owner and settings,
every SCRAM user with its consumer group, every ALLOW ACL (all LITERAL: :mod:`gateway.deploy.acls` says why)
and the warnings the derivation raised. It is also valid YAML.
"""

from __future__ import annotations

import json
from typing import Final

from gateway.deploy.acls import SCRAM_MECHANISM, Rendered

__all__ = ["MANIFEST_FORMAT", "to_manifest"]

MANIFEST_FORMAT: Final = "xchg-kafka-acls/1"


def to_manifest(rendered: Rendered) -> str:
    """``acls.json``: topics, users and ACLs as plain JSON (also valid YAML), for review and diffing."""
    document = {
        "format": MANIFEST_FORMAT,
        "settings": {
            "partitions": rendered.partitions,
            "replication": rendered.replication,
            "min_insync": rendered.min_insync,
            "retention_ms": rendered.retention_ms,
            "sasl_mechanism": SCRAM_MECHANISM,
        },
        "topics": [
            {
                "name": t.name,
                "owner": t.owner,
                "role": t.role,
                "partitions": t.partitions,
                "replication": t.replication,
                "config": dict(t.config),
            }
            for t in rendered.topics
        ],
        "users": [
            {
                "username": u.username,
                "principal": u.principal,
                "party": u.party,
                "group": u.group,
                "mechanism": SCRAM_MECHANISM,
            }
            for u in rendered.users
        ],
        "acls": [
            {
                "principal": a.principal,
                "permission": "Allow",
                "operation": a.operation,
                "resource_type": a.resource_type,
                "resource_name": a.resource_name,
                "pattern_type": a.pattern_type,
                "host": "*",
            }
            for a in rendered.acls
        ],
        "warnings": list(rendered.warnings),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
