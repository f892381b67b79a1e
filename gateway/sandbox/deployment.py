"""A complete local deployment generated on the fly: keys, a signed registry and one configuration per party.

Used by ``gateway demo`` and the integration tests, so both run exactly what an operator would run: key
files on disk (0600); three registry maintainers (Kemensos, Kemlu, an independent party; two of three must
sign) whose keys are under ``maintainers/``; version 1 of the registry — ``deploy/registry.example.toml``'s
parties plus the new public keys — signed by two of them as ``registry.json``, with its trust anchor
``registry-anchor.toml`` (digest and maintainer keys); and a TOML configuration per gateway loaded through
:class:`gateway.runtime.config.GatewayConfig`. Every key is fresh; nothing private is committed anywhere.
Publishing version 1 on ``xchg.registry.v1`` (:func:`gateway.bus.registry_feed.publish_version`) is left to
whoever starts a broker (the demo, the tests).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

from gateway.contract.keys import PublicKey, SealingKey, SigningKey, write_private_pem
from gateway.contract.registry import Registry
from gateway.contract.registry_chain import Anchor
from gateway.contract.registry_changes import initial_document
from gateway.contract.registry_version import RegistryVersion
from gateway.sandbox.maintainers import (
    SandboxMaintainer,
    maintainer_set,
    new_maintainers,
    signed_version,
)
from gateway.settings import load_toml, overlay

__all__ = [
    "ANCHOR_FILE",
    "MAINTAINERS_DIR",
    "REGISTRY_FILE",
    "SAMPLE_REGISTRY",
    "SandboxParty",
    "create_sandbox",
    "load_maintainers",
    "sandbox_registry",
]

REGISTRY_FILE = "registry.json"
ANCHOR_FILE = "registry-anchor.toml"
MAINTAINERS_DIR = "maintainers"

SAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "deploy" / "registry.example.toml"


@dataclass(frozen=True, slots=True)
class SandboxParty:
    party: str
    config: Path
    data_dir: Path
    drop_dir: Path


def create_sandbox(
    root: Path,
    parties: Sequence[str],
    *,
    bootstrap_servers: Sequence[str],
    template: Path = SAMPLE_REGISTRY,
    extra_parties: Sequence[Mapping[str, Any]] = (),
    sinks: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    settings: Mapping[str, Any] | None = None,
    per_party: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, SandboxParty]:
    """Write keys, the signed ``registry.json`` (version 1), its anchor, the maintainers' keys and
    ``<party>/gateway.toml`` under ``root`` for each of ``parties``.

    ``extra_parties`` are registry entries added to the template (how a new agency joins); ``sinks`` maps a
    party to its ``[[sinks]]`` tables; ``settings`` are merged into every configuration (e.g. shorter Kafka
    session timeouts for the embedded broker), then ``per_party[party]`` into that party's (lists such as
    ``sources`` are replaced, tables merged).
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    registry: dict[str, Any] = load_toml(template, what="registry template")
    registry["parties"] = [*registry["parties"], *(dict(p) for p in extra_parties)]
    by_id = {p["id"]: p for p in registry["parties"]}
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    result = {}
    for party in parties:
        if party not in by_id:
            raise ValueError(f"{party!r} is neither in {template} nor in extra_parties")
        keys_dir = root / party / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signing, sealing = SigningKey.generate(), SealingKey.generate()
        sig_kid, seal_kid = f"{party}-sig-sandbox", f"{party}-seal-sandbox"
        write_private_pem(keys_dir / f"{sig_kid}.pem", signing.to_pem())
        write_private_pem(keys_dir / f"{seal_kid}.pem", sealing.to_pem())
        by_id[party]["keys"] = [
            _key_entry(sig_kid, "sig", signing.public_key, now),
            _key_entry(seal_kid, "seal", sealing.public_key, now),
        ]
        drop_dir = root / party / "drop"
        config: dict[str, Any] = {
            "party": party,
            "data_dir": "state",
            "registry": f"../{REGISTRY_FILE}",
            "registry_anchor": f"../{ANCHOR_FILE}",
            "keys": {"signing_key": f"keys/{sig_kid}.pem", "sealing_keys": [f"keys/{seal_kid}.pem"]},
            "kafka": {"bootstrap_servers": list(bootstrap_servers), "client_id": f"xchg-{party}"},
            "ops": {"port": 0},
            "sources": [{"kind": "file-drop", "directory": "drop"}],
            "sinks": list((sinks or {}).get(party, ())),
        }
        config = overlay(overlay(config, settings or {}), (per_party or {}).get(party, {}))
        config_path = root / party / "gateway.toml"
        config_path.write_bytes(tomli_w.dumps(config).encode("utf-8"))
        result[party] = SandboxParty(party, config_path, root / party / "state", drop_dir)
    parsed = Registry.from_mapping(registry)
    maintainers = new_maintainers()
    for maintainer in maintainers:
        maintainer.write(root / MAINTAINERS_DIR)
    document = initial_document(parsed, maintainer_set(maintainers, 2), now=now, validity=timedelta(days=365))
    version = signed_version(document, maintainers[:2])
    (root / REGISTRY_FILE).write_bytes(version.to_bytes())
    (root / ANCHOR_FILE).write_text(Anchor.of(version).to_toml(), encoding="utf-8")
    return result


def sandbox_registry(root: Path) -> RegistryVersion:
    """The signed registry version a sandbox under ``root`` was created with."""
    return RegistryVersion.parse((root / REGISTRY_FILE).read_bytes())


def load_maintainers(root: Path) -> list[SandboxMaintainer]:
    """The maintainers of a sandbox under ``root`` (keys read back from ``maintainers/``), in the order
    their key ids appear in its registry."""
    version = sandbox_registry(root)
    result = []
    for key in version.maintainers.keys:
        signing = SigningKey.load(root / MAINTAINERS_DIR / f"{key.kid}.pem")
        result.append(SandboxMaintainer(kid=key.kid, name=key.name, key=signing))
    return result


def _key_entry(kid: str, use: str, public: PublicKey, since: datetime) -> dict[str, Any]:
    return {
        "kid": kid,
        "use": use,
        "alg": public.alg,
        "public_key": base64.b64encode(public.raw).decode("ascii"),
        "valid_from": since,
        "valid_until": since + timedelta(days=365),
    }
