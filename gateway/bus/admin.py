"""Topic provisioning: create the topics a role needs, check the ones that exist.

:func:`ensure_topics` creates missing topics and checks existing ones. It lists topics first and only
describes names that exist: Tansu auto-creates a topic (with 4 partitions) on any metadata request naming
it, so "describe to see if it exists" would create it with the wrong shape. :func:`refused_topics` names the
topics the broker's ACLs hide from this client (for clusters with authentication only, for that reason).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from gateway.errors import GatewayError, Reason

__all__ = ["TopicState", "ensure_topics", "max_message_bytes", "refused_topics"]

_log = structlog.get_logger(__name__)

_KAFKA_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION: the topic is not (yet) in the metadata
_LEADER_NOT_AVAILABLE = 5  # right after creation on real Kafka
_TOPIC_ALREADY_EXISTS = 36
_AUTHORIZATION_FAILED = frozenset({29, 31})  # TOPIC_ / CLUSTER_AUTHORIZATION_FAILED


@dataclass(frozen=True, slots=True)
class TopicState:
    """What :func:`ensure_topics` found (or made) for one topic."""

    name: str
    partitions: int
    replication: int
    created: bool


def _error_name(code: int) -> str:
    from aiokafka.errors import for_code  # noqa: PLC0415 -- aiokafka is imported only when talking to Kafka

    return str(for_code(code).__name__)


async def ensure_topics(
    admin_kwargs: Mapping[str, Any],
    names: Iterable[str],
    partitions: int,
    replication: int,
    *,
    configs: Mapping[str, str] | None = None,
) -> dict[str, TopicState]:
    """Create the topics in ``names`` that are missing; check that every one has at least ``partitions``
    partitions and ``replication`` replicas. Idempotent and safe to race with another gateway doing the same
    (TOPIC_ALREADY_EXISTS is not an error). Works on Apache Kafka and on Tansu.

    ``admin_kwargs`` are keyword arguments for ``AIOKafkaAdminClient`` (``KafkaSettings.admin_kwargs()``);
    their ``request_timeout_ms`` also bounds how long to wait for new topics to appear in the metadata.
    ``configs`` are topic configurations for the topics it creates (``cleanup.policy`` of the registry topic).
    Returns the state of each topic by name. Raises :class:`GatewayError`: CONFIG_INVALID for bad names or
    too few partitions or replicas; BUS_NOT_AUTHORIZED when the ACLs refuse creation or Describe;
    BUS_UNAVAILABLE when the cluster cannot be reached or new topics do not show up in its metadata in time.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 -- see _error_name
    from aiokafka.errors import KafkaError  # noqa: PLC0415 -- same

    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if not isinstance(name, str) or not _KAFKA_TOPIC_RE.match(name) or name in {".", ".."}:
            raise GatewayError(Reason.CONFIG_INVALID, f"topic: {name!r} is not a valid Kafka topic name")
    for label, value in (("partitions", partitions), ("replication", replication)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"topic: {label} must be an integer >= 1, got {value!r}"
            )
    if not wanted:
        return {}

    timeout_ms = int(admin_kwargs.get("request_timeout_ms", 30_000))
    admin = AIOKafkaAdminClient(**admin_kwargs)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created: set[str] = set()
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(name, partitions, replication, topic_configs=dict(configs or {}))
                    for name in missing
                ],
                timeout_ms=timeout_ms,
            )
            for item in response.topic_errors:
                topic, code = item[0], item[1]
                message = item[2] if len(item) > 2 and item[2] else ""
                if code == 0:
                    created.add(topic)
                elif code == _TOPIC_ALREADY_EXISTS:
                    pass  # created concurrently by another gateway: checked below like any existing topic
                elif code in _AUTHORIZATION_FAILED:
                    raise GatewayError(
                        Reason.BUS_NOT_AUTHORIZED,
                        f"topic: not authorised to create {topic!r} ({_error_name(code)}); "
                        "create it out of band (kafka-init.sh, gateway deploy render) or grant CREATE",
                    )
                else:
                    raise GatewayError(
                        Reason.CONFIG_INVALID,
                        f"topic: cannot create {topic!r}: {_error_name(code)} {message}".rstrip(),
                    )
            for name in created:
                _log.info("topic.created", topic=name, partitions=partitions, replication=replication)
        described = await _describe_until_ready(admin, wanted, timeout_ms / 1000)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise GatewayError(Reason.BUS_UNAVAILABLE, f"topic: cannot provision topics: {exc!r}") from exc
    finally:
        await admin.close()

    states: dict[str, TopicState] = {}
    for name in wanted:
        have_partitions, have_replication = described[name]
        if have_partitions < partitions:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"topic: {name!r} has {have_partitions} partitions, fewer than the {partitions} required",
            )
        if have_replication < replication:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"topic: {name!r} has replication factor {have_replication}, "
                f"below the {replication} required",
            )
        states[name] = TopicState(name, have_partitions, have_replication, name in created)
    return states


async def partitions_of(admin: Any, select: Callable[[str], bool]) -> list[Any]:
    """Every partition (``TopicPartition``) of the topics the cluster lists that ``select`` keeps, with the
    started admin client ``admin``; a topic the cluster refuses to describe is left out.

    Lists before it describes: describing a missing topic makes Tansu create it. (Not a consumer's
    ``topics()`` plus ``partitions_for_topic``: ``topics()`` does not load the topics into the consumer's own
    metadata, so on Kafka the partitions come back unknown.)
    """
    from aiokafka.structs import TopicPartition  # noqa: PLC0415 -- see _error_name

    names = sorted(name for name in await admin.list_topics() if select(name))
    found: list[Any] = []
    if names:
        for entry in await admin.describe_topics(names):
            if entry.get("error_code", 0) == 0:
                found.extend(TopicPartition(entry["topic"], p["partition"]) for p in entry["partitions"])
    return found


async def max_message_bytes(admin_kwargs: Mapping[str, Any], topics: Iterable[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` as the cluster reports it (DescribeConfigs); topics it does not
    report are left out, and so is everything when the request fails (the embedded broker answers with no
    entries). Never raises for the cluster: callers fall back to Kafka's default."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 -- see _error_name
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: PLC0415

    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    admin = AIOKafkaAdminClient(**admin_kwargs)
    found: dict[str, int] = {}
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None}) for name in names]
        )
        for response in responses:
            for resource in getattr(response, "resources", ()):
                # (error_code, error_message, resource_type, resource_name, config_entries)
                if len(resource) < 5 or resource[0] != 0:
                    continue
                for entry in resource[4]:
                    name, value = entry[0], entry[1]
                    if name == "max.message.bytes" and isinstance(value, str) and value.isdigit():
                        found[str(resource[3])] = int(value)
    except Exception as exc:  # noqa: BLE001 - best effort: the caller assumes Kafka's default
        _log.info("topic.configs_unavailable", error=type(exc).__name__)
    finally:
        await admin.close()
    return found


async def _describe_until_ready(admin: Any, names: list[str], limit_s: float) -> dict[str, tuple[int, int]]:
    """Describe topics known to exist, retrying while new ones propagate (UNKNOWN_TOPIC, LEADER_NOT_AVAIL.).

    Only ever called with names that ``list_topics`` showed or ``create_topics`` made, so it cannot trigger
    Tansu's auto-creation with the wrong partition count.
    """
    deadline = time.monotonic() + limit_s
    result: dict[str, tuple[int, int]] = {}
    pending = list(names)
    while True:
        retry: list[str] = []
        for entry in await admin.describe_topics(pending):
            name, code = entry["topic"], entry["error_code"]
            parts = entry["partitions"]
            if code in (_UNKNOWN_TOPIC, _LEADER_NOT_AVAILABLE) or (code == 0 and not parts):
                retry.append(name)
            elif code in _AUTHORIZATION_FAILED:
                raise GatewayError(
                    Reason.BUS_NOT_AUTHORIZED,
                    f"topic: not authorised to describe {name!r} ({_error_name(code)}); the ACLs rendered "
                    "from the registry grant Describe on a party's own topics (gateway deploy render)",
                )
            elif code != 0:
                raise GatewayError(
                    Reason.BUS_UNAVAILABLE, f"topic: cannot describe {name!r}: {_error_name(code)}"
                )
            else:
                replication = min(len(p["replicas"]) for p in parts)
                result[name] = (len(parts), replication)
        if not retry:
            return result
        if time.monotonic() >= deadline:
            raise GatewayError(
                Reason.BUS_UNAVAILABLE,
                f"topic: {', '.join(retry)} not visible in metadata after {limit_s:g}s",
            )
        pending = retry
        await asyncio.sleep(0.1)


async def refused_topics(admin_kwargs: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The topics in ``names`` the broker refuses to describe to this client (TOPIC_AUTHORIZATION_FAILED).

    Kafka answers that for a topic the principal may not Describe (Read and Write imply Describe), whether
    or not it exists, so a topic listed here cannot be read. Worth asking before subscribing: aiokafka's
    consumer only logs an unauthorised subscribed topic and never raises, so a missing ACL would otherwise
    look like a quiet topic. Only for a cluster with authentication (ACLs name authenticated principals):
    describing a missing topic makes Tansu create it. Raises ``GatewayError(BUS_UNAVAILABLE)`` when the
    cluster cannot be asked.
    """
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 -- see _error_name
    from aiokafka.errors import KafkaError  # noqa: PLC0415 -- same

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(**admin_kwargs)
    try:
        await admin.start()
        described = await admin.describe_topics(wanted)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise GatewayError(Reason.BUS_UNAVAILABLE, f"topic: cannot describe topics: {exc!r}") from exc
    finally:
        await admin.close()
    return sorted(entry["topic"] for entry in described if entry["error_code"] in _AUTHORIZATION_FAILED)
