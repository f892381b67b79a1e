"""The notary's and the cosigner's configuration files, read with ``gateway.settings.Table``: typed keys,
paths relative to the file, and every unknown key (also in ``[checkpoint]`` and ``[http]``) an error that
names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.audit.checkpoint import deployment_origin
from gateway.audit.cosigner import CosignerConfig
from gateway.audit.notary import NotaryConfig
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer
from gateway.contract.keys import SigningKey
from gateway.contract.policy import CHECKPOINT_TOPIC, NOTARISED_TOPICS
from gateway.errors import GatewayError, Reason

_KEY = SigningKey.generate()
NOTARY_VKEY = str(Ed25519Signer(deployment_origin("prod"), _KEY).verifier().vkey())
COSIGNER_VKEY = str(CosignatureV1Signer("kemensos.cosigner", _KEY).verifier().vkey())


def _notary(tmp_path: Path, **changes: Any) -> NotaryConfig:
    document: dict[str, Any] = {
        "deployment": "prod",
        "registry_anchor": "registry-anchor.toml",
        "log_dir": "log",
        "key_file": "/etc/xchg/notary.pem",
        "cosigners": [COSIGNER_VKEY],
        "checkpoint": {"entries": 50, "interval_seconds": 2},
        "http": {"host": "10.1.2.3", "port": 0},
        "kafka": {"bootstrap_servers": ["localhost:9092"]},
    }
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    path = tmp_path / "notary.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return NotaryConfig.load(path)


def _cosigner(tmp_path: Path, **changes: Any) -> CosignerConfig:
    document: dict[str, Any] = {
        "name": "kemensos.cosigner",
        "key_file": "cosigner.pem",
        "state_file": "state/cosigner.json",
        "notary_url": "http://notary:8090/",
        "notary_vkeys": [NOTARY_VKEY],
    }
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    path = tmp_path / "cosigner.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return CosignerConfig.load(path)


def _error(read: Any, tmp_path: Path, **changes: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        read(tmp_path, **changes)
    return caught.value


def test_notary_config_reads_every_key(tmp_path: Path) -> None:
    config = _notary(tmp_path, batch_size=10, refresh_seconds=0.5, durable=False)
    assert config.origin == "id.trafficking.xchg/notary/prod"
    assert (config.registry_anchor, config.log_dir) == (tmp_path / "registry-anchor.toml", tmp_path / "log")
    assert config.key_file == Path("/etc/xchg/notary.pem")
    assert (config.schemas, config.passphrase_file) == (None, None)
    assert config.cosigners == (COSIGNER_VKEY,)
    assert (config.topic_pattern, config.checkpoint_topic) == (NOTARISED_TOPICS, CHECKPOINT_TOPIC)
    assert (config.checkpoint_entries, config.checkpoint_interval) == (50, 2.0)
    assert (config.batch_size, config.refresh_seconds, config.durable) == (10, 0.5, False)
    assert (config.http_host, config.http_port) == ("10.1.2.3", 0)
    assert config.kafka.bootstrap_servers == ("localhost:9092",)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"log_dri": "log"}, "log_dri: unknown setting"),
        ({"checkpoint": {"entries": 5, "interval": 1.0}}, "checkpoint.interval: unknown setting"),
        ({"http": {"hots": "10.1.2.3"}}, "http.hots: unknown setting"),
        ({"kafka": {"bootstrap_servers": ["k:9092"], "ca_file": "x"}}, "kafka.ca_file: unknown setting"),
        ({"deployment": None}, "deployment: a deployment name is required"),
        ({"registry_anchor": None}, "registry_anchor: required"),
        (
            {"registry": "registry.toml"},
            "registry: the notary takes the signed registry from xchg.registry.v1",
        ),
        ({"batch_size": 0}, "batch_size: must be an integer in 1..100000"),
        ({"checkpoint": {"entries": "many"}}, "checkpoint.entries: must be an integer"),
        ({"checkpoint": {"interval_seconds": 0}}, "checkpoint.interval_seconds: must be a positive number"),
        ({"http": {"port": 70000}}, "http.port: must be an integer in 0..65535"),
        ({"refresh_seconds": -1}, "refresh_seconds: must be a positive number"),
        ({"durable": "yes"}, "durable: must be true or false"),
        ({"cosigners": "one"}, "cosigners: must be a list"),
        ({"topic_pattern": "(unclosed"}, "topic_pattern: not a regular expression"),
    ],
)
def test_notary_config_errors_name_the_key(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    error = _error(_notary, tmp_path, **changes)
    assert error.reason == Reason.CONFIG_INVALID
    assert error.detail.startswith(named)


def test_cosigner_config_reads_every_key(tmp_path: Path) -> None:
    config = _cosigner(tmp_path, passphrase_file="secret", interval_seconds=2, timeout_seconds=0.5)
    assert config.name == "kemensos.cosigner"
    assert (config.key_file, config.state_file) == (
        tmp_path / "cosigner.pem",
        tmp_path / "state/cosigner.json",
    )
    assert config.notary_url == "http://notary:8090"
    assert config.notary_vkeys == (NOTARY_VKEY,)
    assert config.passphrase_file == tmp_path / "secret"
    assert (config.interval_seconds, config.timeout_seconds) == (2.0, 0.5)
    defaults = _cosigner(tmp_path)
    assert (defaults.passphrase_file, defaults.interval_seconds, defaults.timeout_seconds) == (
        None,
        10.0,
        10.0,
    )


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"intervall_seconds": 5}, "intervall_seconds: unknown setting"),
        ({"name": None}, "name: required"),
        ({"notary_url": ""}, "notary_url: must not be empty"),
        ({"notary_vkeys": None}, "notary_vkeys: a list of the notary's vkeys is required"),
        ({"notary_vkeys": []}, "notary_vkeys: must list at least one value"),
        ({"interval_seconds": 0}, "interval_seconds: must be a positive number"),
        ({"timeout_seconds": True}, "timeout_seconds: must be a number"),
        ({"passphrase_file": ""}, "passphrase_file: a path is required"),
    ],
)
def test_cosigner_config_errors_name_the_key(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    error = _error(_cosigner, tmp_path, **changes)
    assert error.reason == Reason.CONFIG_INVALID
    assert error.detail.startswith(named)


def test_a_bad_vkey_is_refused_at_load(tmp_path: Path) -> None:
    assert _error(_notary, tmp_path, cosigners=["not a vkey"]).reason == Reason.NOTE_KEY_INVALID
    assert _error(_cosigner, tmp_path, notary_vkeys=["not a vkey"]).reason == Reason.NOTE_KEY_INVALID
