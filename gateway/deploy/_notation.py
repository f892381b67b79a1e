"""What the renderers share: Kubernetes name rules and multi-document YAML written as JSON documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

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
