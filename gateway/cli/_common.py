"""What every command shares: where the registry and schemas come from, input files, passphrases.

The registry and schema folder are taken from ``--registry``/``--schemas``, else from ``$XCHG_REGISTRY`` and
``$XCHG_SCHEMAS`` (the CLI is the only place that reads the environment), else the bundled schemas.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.contract.keys import PublicKey
from gateway.contract.registry import Registry
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.errors import GatewayError, Reason
from gateway.settings import read_passphrase

__all__ = [
    "ENV_REGISTRY",
    "ENV_SCHEMAS",
    "add_contract_options",
    "kafka_from_args",
    "kid_for",
    "load_registry",
    "load_schemas",
    "passphrase",
    "pretty",
    "read_input",
    "read_registry",
]

ENV_REGISTRY = "XCHG_REGISTRY"
ENV_SCHEMAS = "XCHG_SCHEMAS"


def add_contract_options(parser: argparse.ArgumentParser, *, registry: bool = True) -> None:
    """``--registry`` and ``--schemas``, as every command that signs or checks events takes them."""
    if registry:
        parser.add_argument(
            "--registry", help=f"signed party registry (registry.json; default ${ENV_REGISTRY})"
        )
    parser.add_argument(
        "--schemas", help=f"schema directory (default ${ENV_SCHEMAS} or the bundled schemas/)"
    )


def load_registry(args: argparse.Namespace) -> Registry:
    path = args.registry or os.environ.get(ENV_REGISTRY)
    if not path:
        raise GatewayError(Reason.CONFIG_INVALID, f"--registry or ${ENV_REGISTRY} is required")
    return read_registry(Path(path))


def read_registry(path: Path) -> Registry:
    """The parties of a registry file: a signed version (JSON; it must carry a threshold of its own
    maintainers' signatures — ``gateway registry verify`` checks the chain and anchor too) or, for trials,
    the unsigned TOML form (``xchg-registry/1``), checked alike."""
    try:
        head = path.read_bytes()[:64].lstrip()
    except OSError as exc:
        raise GatewayError(Reason.REGISTRY_INVALID, f"cannot read registry {path}: {exc.strerror}") from exc
    if not head.startswith(b"{"):
        return Registry.load(path)
    version = RegistryVersion.parse(path.read_bytes())
    version.maintainers.require(version.payload, version.signatures, f"serial {version.serial}")
    return version.registry


def load_schemas(args: argparse.Namespace) -> SchemaStore:
    root = args.schemas or os.environ.get(ENV_SCHEMAS)
    return SchemaStore.load(Path(root) if root else default_schema_root())


def kid_for(registry: Registry, party_id: str | None, public: PublicKey) -> str:
    """Find the registry kid of a private key we hold (by its public half) so users need not type kids."""
    party = registry.party(party_id or "")
    if party is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"--party {party_id!r} is not in the registry")
    for key in party.keys:
        if key.public_key.raw == public.raw and key.public_key.alg == public.alg:
            return key.kid
    raise GatewayError(Reason.KEYFILE_INVALID, f"the key file's public key is not registered for {party.id}")


def read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {name}: {exc.strerror}") from exc


def passphrase(args: argparse.Namespace) -> bytes | None:
    """The passphrase of the private key files (``--passphrase-file``), or None."""
    return read_passphrase(Path(args.passphrase_file) if args.passphrase_file else None, "--passphrase-file")


def pretty(value: object) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def kafka_from_args(args: argparse.Namespace) -> Any:
    """Kafka settings from ``--kafka-config`` (a TOML file with a ``[kafka]`` table, e.g. a gateway.toml) and
    ``--bootstrap-servers``; None when neither names a broker. Idempotence off: these commands send at most
    one record, or none."""
    from gateway.bus.kafka import KafkaSettings  # noqa: PLC0415 - keep CLI start-up light
    from gateway.settings import load_toml  # noqa: PLC0415 - same

    table: dict[str, Any] = {}
    base: Path | None = None
    if args.kafka_config:
        path = Path(args.kafka_config)
        table = dict(load_toml(path, what="--kafka-config").get("kafka", {}))
        base = path.parent
    if args.bootstrap_servers:
        table["bootstrap_servers"] = args.bootstrap_servers
    if not table.get("bootstrap_servers"):
        return None
    table.setdefault("enable_idempotence", False)
    return KafkaSettings.from_mapping(table, base_dir=base)
