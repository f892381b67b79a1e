"""The local trial in ``deploy/compose/``: it matches the registry, ``gen-secrets.sh`` provides every file it
mounts, and ``docker-compose config`` passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy.acls import render, username_for
from gateway.deploy.kubernetes import k8s_slug
from gateway.deploy.script import to_shell_script
from gateway.runtime.config import GatewayConfig
from tests.unit.deploy._common import BASH, COMPOSE, SAMPLE, require_tool, yaml_documents


def compose_document() -> dict[str, Any]:
    return dict(yaml_documents(COMPOSE / "compose.yaml")[0])


def test_compose_matches_the_registry() -> None:
    registry = Registry.load(SAMPLE)
    compose = compose_document()
    services = compose["services"]
    gateways = {name for name in services if name.startswith("gw-")}
    assert gateways == {f"gw-{k8s_slug(p)}" for p in registry.parties}
    targets = yaml_documents(COMPOSE / "prometheus" / "prometheus.yml")[0]["scrape_configs"][0][
        "static_configs"
    ][0]
    assert set(targets["targets"]) == {f"{g}:8080" for g in gateways}
    for party in registry.parties:
        service = services[f"gw-{k8s_slug(party)}"]
        assert f"./gateways/{party}.toml:/etc/xchg/gateway.toml:ro" in service["volumes"]
        config = tomllib.loads((COMPOSE / "gateways" / f"{party}.toml").read_text())
        assert config["party"] == party
        assert config["kafka"]["sasl"] == {
            "mechanism": "SCRAM-SHA-512",
            "username": username_for(party),
            "password_file": "/run/secrets/kafka-password",
        }
        assert config["kafka"]["security_protocol"] == "SASL_SSL"
        assert config["topics"]["partitions"] <= 3  # what deploy/compose/kafka-init.sh creates
        mounted = {s["target"] for s in service["secrets"]}
        paths = [
            config["keys"]["signing_key"],
            *config["keys"]["sealing_keys"],
            config["kafka"]["tls"]["ca_file"],
            config["kafka"]["sasl"]["password_file"],
        ]
        assert {Path(p).name for p in paths} <= mounted
        assert all(p.startswith("/run/secrets/") for p in paths)
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        assert "ports" not in services[name]  # Kafka is not published outside the compose network
    assert compose["networks"]["bus"]["internal"] is True
    assert services["notary"]["profiles"] == ["audit"]


def test_gen_secrets_provides_every_file_compose_mounts(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        require_tool(False, "openssl")
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    env = {
        **os.environ,
        "GATEWAY": str(Path(sys.executable).with_name("gateway")),
        "PYTHON": sys.executable,
        "REGISTRY_TEMPLATE": str(SAMPLE),
    }
    result = subprocess.run(
        [BASH, str(work / "gen-secrets.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    secrets = work / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for name, secret in compose_document()["secrets"].items():
        assert (work / secret["file"]).is_file(), name
    generated = Registry.load(secrets / "registry.toml")
    assert all(len(p.keys) == 2 for p in generated.parties.values())
    schemas = SchemaStore.load()
    rendered = render(generated, schemas, partitions=3, replication=3, min_insync=2)
    assert to_shell_script(rendered) == (COMPOSE / "kafka-init.sh").read_text()  # keys change no ACL
    party = "kemlu.kbri-kuching"
    document = tomllib.loads((COMPOSE / "gateways" / f"{party}.toml").read_text())
    document["keys"] = {
        "signing_key": str(secrets / "parties" / party / "signing.pem"),
        "sealing_keys": [str(secrets / "parties" / party / "sealing.pem")],
    }
    document["kafka"]["tls"]["ca_file"] = str(secrets / "ca" / "ca.crt")
    document["kafka"]["sasl"]["password_file"] = str(secrets / "scram" / f"xchg-{party}")
    document["registry"] = str(secrets / "registry.toml")
    config = GatewayConfig.from_mapping(document, base_dir=work)
    assert config.kafka.sasl is not None
    assert config.kafka.sasl.username == f"xchg-{party}"


def test_docker_compose_config_passes() -> None:
    binary = shutil.which("docker-compose")
    require_tool(binary is not None, "docker-compose (Debian package docker-compose)")
    assert binary is not None
    for extra in ([], ["--profile", "audit"]):
        result = subprocess.run(
            [binary, "-f", str(COMPOSE / "compose.yaml"), *extra, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
            cwd=COMPOSE,
        )
        assert result.returncode == 0, result.stderr
