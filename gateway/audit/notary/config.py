"""The notary's configuration: ``gateway notary run --config FILE`` (``docs/AUDIT.md`` section 11.1).

Read with :class:`gateway.settings.Table`, like every configuration file of the project: each key with its
type and bounds, relative paths against the file's folder, and a key nobody reads (in any table:
``[checkpoint]``, ``[http]``, ``[kafka]``) an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.audit.checkpoint import deployment_origin
from gateway.audit.note import verifier_from_vkey
from gateway.bus.kafka import KafkaSettings
from gateway.contract.policy import CHECKPOINT_TOPIC, NOTARISED_TOPICS
from gateway.settings import Table

__all__ = ["NotaryConfig"]

_KEYS: Final = (
    "deployment", "registry_anchor", "schemas", "log_dir", "key_file", "passphrase_file", "kafka",
    "cosigners", "topic_pattern", "checkpoint_topic", "checkpoint", "batch_size", "refresh_seconds", "http",
    "durable",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class NotaryConfig:
    """``gateway notary run --config FILE`` (TOML); relative paths are resolved against the file's folder.

    See ``docs/AUDIT.md`` section 11 for every key.
    """

    deployment: str
    registry_anchor: Path
    """The registry's trust anchor: the notary takes every registry version from ``xchg.registry.v1``, in
    the order it logs them, so each verdict depends on the log alone (``docs/AUDIT.md``)."""
    log_dir: Path
    key_file: Path
    schemas: Path | None = None
    passphrase_file: Path | None = None
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    cosigners: tuple[str, ...] = ()
    """Verifier keys (vkeys) of the cosigners whose cosignatures the notary attaches to its checkpoints."""
    topic_pattern: str = NOTARISED_TOPICS
    checkpoint_topic: str = CHECKPOINT_TOPIC
    checkpoint_entries: int = 1000
    checkpoint_interval: float = 10.0
    batch_size: int = 1000
    refresh_seconds: float = 5.0
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    durable: bool = True

    @property
    def origin(self) -> str:
        return deployment_origin(self.deployment)

    @classmethod
    def load(cls, path: Path) -> NotaryConfig:
        return cls.from_table(Table.load(path))

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], *, base_dir: Path) -> NotaryConfig:
        return cls.from_table(Table(document, base_dir=base_dir))

    @classmethod
    def from_table(cls, doc: Table) -> NotaryConfig:
        """Every key checked (type, bounds); an unknown key or table is an error naming it."""
        if "registry" in doc:
            raise doc.fail(
                "registry",
                "the notary takes the signed registry from xchg.registry.v1 since issue 12; set "
                "registry_anchor to the anchor file (gateway registry anchor; docs/REGISTRY.md)",
            )
        doc.only(*_KEYS)
        if "deployment" not in doc:
            raise doc.fail(
                "deployment", "a deployment name is required (origin id.trafficking.xchg/notary/<it>)"
            )
        deployment = doc.string("deployment")
        deployment_origin(deployment)
        cosigners = doc.strings("cosigners", ())
        for vkey in cosigners:
            verifier_from_vkey(vkey)  # fail at start-up, naming the setting's error
        pattern = doc.string("topic_pattern", NOTARISED_TOPICS)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise doc.fail("topic_pattern", f"not a regular expression: {exc}") from exc
        checkpoint, http = doc.table("checkpoint"), doc.table("http")
        config = cls(
            deployment=deployment,
            registry_anchor=doc.path("registry_anchor"),
            log_dir=doc.path("log_dir"),
            key_file=doc.path("key_file"),
            schemas=doc.path("schemas", None),
            passphrase_file=doc.path("passphrase_file", None),
            kafka=KafkaSettings.from_table(doc.table("kafka")),
            cosigners=cosigners,
            topic_pattern=pattern,
            checkpoint_topic=doc.string("checkpoint_topic", CHECKPOINT_TOPIC),
            checkpoint_entries=checkpoint.integer("entries", 1000, low=1, high=10**9),
            checkpoint_interval=checkpoint.number("interval_seconds", 10.0, positive=True),
            batch_size=doc.integer("batch_size", 1000, low=1, high=100_000),
            refresh_seconds=doc.number("refresh_seconds", 5.0, positive=True),
            http_host=http.string("host", "127.0.0.1"),
            http_port=http.integer("port", 8090, low=0, high=65535),
            durable=doc.boolean("durable", True),
        )
        for table in (checkpoint, http):
            table.refuse_unknown()
        return config
