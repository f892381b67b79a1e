"""Gateway configuration: the sample file parses, overrides apply, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig, env_overrides
from tests.paths import REPO
from tests.tls import make_ca

EXAMPLE = REPO / "deploy" / "gateway.example.toml"


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, object]:
    """The example's TLS and SASL files exist on a real host; point them at throwaway files here."""
    ca_file, _, _ = make_ca(tmp_path)
    (tmp_path / "password").write_text("synthetic-password\n")
    return {
        "kafka": {
            "tls": {"ca_file": str(ca_file)},
            "sasl": {"password_file": str(tmp_path / "password")},
        }
    }


def test_example_configuration_parses(secrets: dict[str, object]) -> None:
    config = GatewayConfig.load(EXAMPLE, secrets)
    assert config.party == "kemensos"
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.sasl is not None
    assert config.kafka.sasl.mechanism == "SCRAM-SHA-512"
    assert config.kafka.idempotence is True
    assert config.sources[0].kind == "file-drop"
    assert config.sinks[0].types == ("id.trafficking.case.*",)
    assert config.ops.port == 8080


def test_environment_overrides(secrets: dict[str, object]) -> None:
    overrides = env_overrides(
        {
            "XCHG__KAFKA__BOOTSTRAP_SERVERS": "k1.example:9093, k2.example:9093",
            "XCHG__OPS__PORT": "9100",
            "XCHG__PARTY": "iom",
            "UNRELATED": "x",
        }
    )
    assert overrides == {
        "kafka": {"bootstrap_servers": ["k1.example:9093", "k2.example:9093"]},
        "ops": {"port": 9100},
        "party": "iom",
    }
    merged = {**overrides, "kafka": {**secrets["kafka"], **overrides["kafka"]}}  # type: ignore[dict-item]
    config = GatewayConfig.load(EXAMPLE, merged)
    assert config.kafka.bootstrap_servers == ("k1.example:9093", "k2.example:9093")
    assert config.ops.port == 9100
    assert config.party == "iom"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"ops": {"port": 70000}}, "ops.port"),
        ({"limits": {"max_bytes": "big"}}, "limits.max_bytes"),
        ({"retry": {"attempts": 0}}, "retry.attempts"),
        ({"kafka": {"sasl": {"mechanism": "PLAIN"}}}, "kafka.sasl.mechanism"),
        ({"sinks": [{"kind": "webhook", "types": []}]}, "sinks[0].types"),
        ({"keys": {"sealing_keys": []}}, "keys.sealing_keys"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_mistakes_name_the_setting(
    secrets: dict[str, object], override: dict[str, object], fragment: str
) -> None:
    document = dict(secrets)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            merged = dict(document[key])  # type: ignore[call-overload]
            for inner, inner_value in value.items():
                if isinstance(inner_value, dict) and isinstance(merged.get(inner), dict):
                    merged[inner] = {**merged[inner], **inner_value}
                else:
                    merged[inner] = inner_value
            document[key] = merged
        else:
            document[key] = value
    with pytest.raises(GatewayError) as caught:
        GatewayConfig.load(EXAMPLE, document)
    assert caught.value.reason == Reason.CONFIG_INVALID
    assert fragment in caught.value.detail
