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


def test_outage_policy_receipts_and_redrive_settings(secrets: dict[str, object]) -> None:
    config = GatewayConfig.load(EXAMPLE, secrets)
    assert config.retry.horizon == 72 * 3600
    assert config.retry.breaker_threshold == 5
    assert config.receipts.issue is True
    assert config.receipts.unacknowledged_after_seconds == 3600
    document = dict(secrets)
    document["retry"] = {"horizon_hours": 0.5, "max_delay": 2.0, "base_delay": 0.1}
    document["sinks"] = [{"kind": "webhook", "url": "https://cs.example/x", "retry": {"horizon_hours": 168}}]
    document["receipts"] = {"issue": False}
    document["dlq"] = {"redrive_poll_seconds": 0.25}
    config = GatewayConfig.load(EXAMPLE, document)
    assert config.retry.horizon == 1800
    sink_retry = config.sinks[0].retry
    assert sink_retry is not None
    assert sink_retry.horizon == 168 * 3600
    assert sink_retry.max_delay == 2.0  # the rest laid over [retry]
    assert config.receipts.issue is False
    assert config.redrive_poll_seconds == 0.25
    for bad, fragment in (
        ({"retry": {"horizon_hours": 0}}, "horizon_hours"),
        ({"retry": {"max_delay": 0.1, "base_delay": 1.0}}, "max_delay"),
        ({"retry": {"breaker_treshold": 3}}, "breaker_treshold"),
        ({"receipts": {"colour": 1}}, "colour"),
    ):
        with pytest.raises(GatewayError) as caught:
            GatewayConfig.load(EXAMPLE, {**secrets, **bad})
        assert fragment in caught.value.detail


def test_store_retention_settings(secrets: dict[str, object]) -> None:
    """The outbox's and inbox's retention are configured in ``[limits]`` (defaults 7 and 30 days)."""
    config = GatewayConfig.load(EXAMPLE, secrets)
    assert (config.outbox_retention_days, config.inbox_retention_days) == (7, 30)
    limits = {"outbox_max_backlog": 100_000, "outbox_retention_days": 14, "inbox_retention_days": 90}
    config = GatewayConfig.load(EXAMPLE, {**secrets, "limits": limits})
    assert (config.outbox_retention_days, config.inbox_retention_days) == (14, 90)
    for key in ("outbox_retention_days", "inbox_retention_days"):
        with pytest.raises(GatewayError) as caught:
            GatewayConfig.load(EXAMPLE, {**secrets, "limits": {key: 0}})
        assert key in caught.value.detail
