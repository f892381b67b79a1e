"""What the renderers share: ACLs grouped per resource, the settings line of file headers, Kubernetes name
rules and multi-document YAML written as JSON documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.deploy.acls import AclEntry, Operation, Rendered, ResourceType

#: A DNS-1123 subdomain: the names of most Kubernetes objects (and so of Strimzi users and Secrets).
DNS_SUBDOMAIN: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
#: A DNS label that starts with a letter: Strimzi cluster names and the party slugs in object names.
DNS_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def yaml_documents(documents: Iterable[Mapping[str, Any]], header: str) -> str:
    """Multi-document YAML written as JSON documents (JSON is YAML 1.2; no YAML library needed)."""
    parts = [f"# {line}".rstrip() for line in header.splitlines()]
    for document in documents:
        parts.append("---")
        parts.append(json.dumps(document, indent=2, ensure_ascii=False))
    return "\n".join(parts) + "\n"


def grouped_acls(acls: Iterable[AclEntry]) -> list[tuple[tuple[str, ResourceType, str], list[Operation]]]:
    """The operations granted per principal and resource, in :meth:`AclEntry.sort_key` order (one Strimzi ACL
    rule, or one batch of ``kafka-acls.sh``, each)."""
    groups: dict[tuple[str, ResourceType, str], list[AclEntry]] = {}
    for acl in acls:
        groups.setdefault((acl.principal, acl.resource_type, acl.resource_name), []).append(acl)
    return [
        (key, [acl.operation for acl in sorted(entries, key=AclEntry.sort_key)])
        for key, entries in groups.items()
    ]


def settings_text(rendered: Rendered) -> str:
    """``partitions=6, replication=3, min_insync=2, retention_ms=...``: the headers of generated files."""
    return (
        f"partitions={rendered.partitions}, replication={rendered.replication}, "
        f"min_insync={rendered.min_insync}, retention_ms={rendered.retention_ms}"
    )
