"""``kafka-init.sh``: the derived topics, SCRAM users and ACLs as calls of Kafka's ``kafka-*.sh`` tools.

For a cluster without an operator (the local trial in ``deploy/compose/`` runs it in a one-shot container).
The fixed part of the script -- its environment, the ``kafka`` and ``scram_user`` functions -- is the package
file ``templates/kafka-init.sh``; :func:`to_shell_script` fills in one line per topic and user and one
``kafka-acls.sh`` call per batch of ACLs (all LITERAL: :mod:`gateway.deploy.acls` says why).
"""

from __future__ import annotations

import shlex
import string
from importlib import resources

from gateway.deploy._notation import grouped_acls, settings_text
from gateway.deploy.acls import Operation, Rendered, ResourceType

__all__ = ["to_shell_script"]


class _ScriptTemplate(string.Template):
    """Placeholders are ``@@{name}``: ``$`` is bash's own."""

    delimiter = "@@"


def to_shell_script(rendered: Rendered) -> str:
    """``kafka-init.sh``: idempotent ``kafka-topics.sh``/``kafka-configs.sh``/``kafka-acls.sh`` calls.

    Every value is quoted with :func:`shlex.quote`; passwords are read from files at run time and never
    appear in the script.
    """
    template = (
        resources.files("gateway.deploy").joinpath("templates", "kafka-init.sh").read_text(encoding="utf-8")
    )
    return _ScriptTemplate(template).substitute(
        settings=settings_text(rendered),
        topics="\n".join(_topic_lines(rendered)),
        users="\n".join(f"scram_user {shlex.quote(user.username)}" for user in rendered.users),
        acls="\n".join(_acl_lines(rendered)),
        topic_count=len(rendered.topics),
        user_count=len(rendered.users),
        acl_count=len(rendered.acls),
    )


def _topic_lines(rendered: Rendered) -> list[str]:
    q = shlex.quote
    lines = []
    for topic in rendered.topics:
        configs = " ".join(f"--config {q(f'{k}={v}')}" for k, v in sorted(topic.config.items()))
        lines.append(
            f"kafka kafka-topics.sh --create --if-not-exists --topic {q(topic.name)} "
            f"--partitions {topic.partitions} --replication-factor {topic.replication} {configs}"
        )
    return lines


def _acl_lines(rendered: Rendered) -> list[str]:
    """One ``kafka-acls.sh --add`` per principal, resource type and set of operations, and an ``echo``."""
    q = shlex.quote
    batches: dict[tuple[str, ResourceType, tuple[Operation, ...]], list[str]] = {}
    for (principal, resource_type, name), granted in grouped_acls(rendered.acls):
        batches.setdefault((principal, resource_type, tuple(granted)), []).append(name)
    lines = []
    for (principal, resource_type, operations), names in batches.items():
        if resource_type == "cluster":
            resources = "--cluster"
        else:
            resources = " ".join(f"--{resource_type} {q(name)}" for name in names)
        ops = " ".join(f"--operation {op}" for op in operations)
        lines.append(
            f"kafka kafka-acls.sh --add --allow-principal {q(principal)} --allow-host '*' {ops} "
            f"{resources} --resource-pattern-type literal >/dev/null"
        )
        lines.append(
            f"echo {q(f'kafka-init: ACLs of {principal} on {len(names)} {resource_type} resource(s)')}"
        )
    return lines
