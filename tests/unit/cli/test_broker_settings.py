"""``gateway broker`` prints the ``[kafka]`` table a gateway needs for it (issue 13): it must load as is."""

from __future__ import annotations

import tomllib

from gateway.bus.kafka import KafkaSettings
from gateway.cli.run import client_settings


def test_the_printed_settings_load_and_turn_idempotence_off() -> None:
    text = client_settings("127.0.0.1:9092")
    settings = KafkaSettings.from_mapping(tomllib.loads(text)["kafka"])
    assert settings.bootstrap_servers == ("127.0.0.1:9092",)
    assert settings.idempotence is False  # the embedded broker cannot answer InitProducerId
    assert settings.security_protocol == "PLAINTEXT"
