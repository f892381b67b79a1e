"""KafkaSettings validation and the aiokafka arguments it produces; topic naming. Offline."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.bus.admin import ensure_topics
from gateway.bus.kafka import (
    EMBEDDED_CLIENT_TIMINGS,
    EMBEDDED_FETCH_MAX_WAIT_MS,
    KAFKA_FETCH_MAX_WAIT_MS,
    KafkaSettings,
    SaslSettings,
    TlsSettings,
)
from gateway.contract.policy import TopicName, dlq_topic, parse_topic, topic_for
from gateway.errors import GatewayError, Reason

# -- material ----------------------------------------------------------------------------------------------


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool) -> bytes:
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a client certificate with its key encrypted under a password file, and a SCRAM password file."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit CA")])
    client_key = ec.generate_private_key(ec.SECP256R1())
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
        "key_password": tmp_path / "client.key.pass",
        "password": tmp_path / "scram.pass",
        "garbage": tmp_path / "garbage.pem",
    }
    paths["ca"].write_bytes(_cert("unit CA", ca_key, ca_name, ca_key, ca=True))
    paths["cert"].write_bytes(_cert("gateway-kemensos", client_key, ca_name, ca_key, ca=False))
    paths["key"].write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key pass phrase"),
        )
    )
    paths["key_password"].write_text("key pass phrase\n")
    paths["password"].write_text("s3cret with spaces \n")
    paths["garbage"].write_text("not a certificate\n")
    for name in ("key", "key_password", "password"):
        paths[name].chmod(0o600)
    return paths


def invalid(mapping: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(GatewayError) as info:
        KafkaSettings.from_mapping(mapping, **kwargs)
    assert info.value.reason is Reason.CONFIG_INVALID
    return info.value.detail


REMOTE = ["kafka-1.kemensos.example:9093", "kafka-2.kemensos.example:9093"]


def sasl_ssl(files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {
        "bootstrap_servers": REMOTE,
        "security_protocol": "SASL_SSL",
        "tls": {"ca_file": str(files["ca"])},
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "gw-kemensos",
            "password_file": str(files["password"]),
        },
    }
    mapping.update(overrides)
    return mapping


# -- defaults and the embedded broker ----------------------------------------------------------------------


def test_empty_mapping_means_embedded_broker_without_idempotence() -> None:
    settings = KafkaSettings.from_mapping({})
    assert settings.embedded
    assert settings.idempotence is False
    assert settings == KafkaSettings()
    with pytest.raises(GatewayError, match=r"kafka\.bootstrap_servers: empty"):
        settings.producer_kwargs()


def test_for_embedded_points_at_the_running_broker() -> None:
    settings = KafkaSettings().for_embedded("127.0.0.1:40001")
    assert settings.bootstrap_servers == ("127.0.0.1:40001",)
    assert settings.producer_kwargs()["enable_idempotence"] is False
    with pytest.raises(GatewayError, match="already set"):
        settings.for_embedded("127.0.0.1:40002")


def test_fetch_wait_is_kafkas_default_for_a_cluster_and_short_for_the_embedded_broker() -> None:
    """Tansu holds each fetch for its whole wait, so the embedded broker gets a short one
    (gateway.sandbox.broker)."""
    cluster = KafkaSettings.from_mapping({"bootstrap_servers": "127.0.0.1:9092"})
    assert cluster.consumer_kwargs("g")["fetch_max_wait_ms"] == KAFKA_FETCH_MAX_WAIT_MS == 500
    embedded = KafkaSettings().for_embedded("127.0.0.1:40001")
    assert embedded.consumer_kwargs(None)["fetch_max_wait_ms"] == EMBEDDED_FETCH_MAX_WAIT_MS
    assert EMBEDDED_FETCH_MAX_WAIT_MS < KAFKA_FETCH_MAX_WAIT_MS
    chosen = KafkaSettings.from_mapping({"fetch_max_wait_ms": 40}).for_embedded("127.0.0.1:40001")
    assert chosen.consumer_kwargs("g")["fetch_max_wait_ms"] == 40  # an explicit value wins
    assert "fetch_max_wait_ms" not in cluster.producer_kwargs()


def test_producer_batches_are_256_kib_unless_configured() -> None:
    cluster = KafkaSettings.from_mapping({"bootstrap_servers": "127.0.0.1:9092"})
    assert cluster.producer_kwargs()["max_batch_size"] == 262_144
    small = KafkaSettings.from_mapping({"bootstrap_servers": "127.0.0.1:9092", "max_batch_bytes": 16_384})
    assert small.producer_kwargs()["max_batch_size"] == 16_384
    for value in (16_383, 1_048_577, "big"):
        detail = invalid({"bootstrap_servers": "127.0.0.1:9092", "max_batch_bytes": value})
        assert detail.startswith("kafka.max_batch_bytes: must be an integer")


@pytest.mark.parametrize("value", [0, -1, 60_001, True, "25"])
def test_fetch_wait_out_of_range_or_mistyped(value: object) -> None:
    assert invalid({"bootstrap_servers": "127.0.0.1:9092", "fetch_max_wait_ms": value}).startswith(
        "kafka.fetch_max_wait_ms: must be an integer"
    )


def test_embedded_client_timings_are_valid_settings() -> None:
    settings = KafkaSettings(bootstrap_servers=("127.0.0.1:1",), **EMBEDDED_CLIENT_TIMINGS)
    kwargs = settings.consumer_kwargs("g")
    assert kwargs["session_timeout_ms"] == EMBEDDED_CLIENT_TIMINGS["session_timeout_ms"]


def test_idempotence_cannot_be_forced_on_the_embedded_broker() -> None:
    detail = invalid({"enable_idempotence": True})
    assert detail.startswith("kafka.enable_idempotence: the embedded broker cannot")


def test_real_kafka_defaults_to_idempotent_acks_all() -> None:
    settings = KafkaSettings.from_mapping({"bootstrap_servers": "127.0.0.1:9092, localhost:9093"})
    assert settings.bootstrap_servers == ("127.0.0.1:9092", "localhost:9093")
    kwargs = settings.producer_kwargs()
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in kwargs
    assert "sasl_plain_password" not in kwargs
    off = KafkaSettings.from_mapping({"bootstrap_servers": ["127.0.0.1:9092"], "enable_idempotence": False})
    assert off.producer_kwargs()["enable_idempotence"] is False


def test_consumer_kwargs_never_auto_commit() -> None:
    settings = KafkaSettings.from_mapping(
        {"bootstrap_servers": ["[::1]:9092"], "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
    )
    grouped = settings.consumer_kwargs("xchg-kemensos")
    assert grouped["group_id"] == "xchg-kemensos"
    assert grouped["enable_auto_commit"] is False
    assert grouped["auto_offset_reset"] == "earliest"
    assert (grouped["session_timeout_ms"], grouped["heartbeat_interval_ms"]) == (6000, 2000)
    assigned = settings.consumer_kwargs(None)
    assert assigned["group_id"] is None
    assert "session_timeout_ms" not in assigned
    admin = settings.admin_kwargs()
    assert admin["bootstrap_servers"] == ["[::1]:9092"]
    assert "acks" not in admin
    assert "group_id" not in admin


# -- security ----------------------------------------------------------------------------------------------


def test_sasl_ssl_kwargs(files: dict[str, Path]) -> None:
    settings = KafkaSettings.from_mapping(sasl_ssl(files))
    kwargs = settings.producer_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "gw-kemensos"
    assert kwargs["sasl_plain_password"] == "s3cret with spaces "  # only the newline is stripped
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    for method in (settings.consumer_kwargs("g"), settings.admin_kwargs()):
        assert method["sasl_mechanism"] == "SCRAM-SHA-512"


def test_the_password_is_read_from_its_file_and_never_kept(files: dict[str, Path]) -> None:
    settings = KafkaSettings.from_mapping(sasl_ssl(files))
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in repr(settings.redacted())
    files["password"].write_text("rotated\n")
    assert settings.admin_kwargs()["sasl_plain_password"] == "rotated"


def test_plain_mechanism_is_refused(files: dict[str, Path]) -> None:
    mapping = sasl_ssl(files)
    mapping["sasl"]["mechanism"] = "PLAIN"
    assert invalid(mapping) == (
        "kafka.sasl.mechanism: 'PLAIN' is not allowed; use SCRAM-SHA-256 or SCRAM-SHA-512"
    )


@pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER", "scram-sha-256", ""])
def test_other_mechanisms_are_refused(files: dict[str, Path], mechanism: str) -> None:
    mapping = sasl_ssl(files)
    mapping["sasl"]["mechanism"] = mechanism
    assert invalid(mapping).startswith(f"kafka.sasl.mechanism: {mechanism!r} is not allowed")


def test_password_in_config_text_is_refused(files: dict[str, Path]) -> None:
    mapping = sasl_ssl(files)
    mapping["sasl"]["password"] = "hunter2"
    detail = invalid(mapping)
    assert detail.startswith("kafka.sasl.password: passwords are never read from the configuration")
    assert "hunter2" not in detail


def test_missing_password_file(files: dict[str, Path], tmp_path: Path) -> None:
    mapping = sasl_ssl(files)
    mapping["sasl"]["password_file"] = str(tmp_path / "nope")
    assert invalid(mapping).startswith("kafka.sasl.password_file: file ")
    assert "does not exist" in invalid(mapping)


def test_empty_or_multiline_password_file(files: dict[str, Path]) -> None:
    mapping = sasl_ssl(files)
    files["password"].write_text("\n")
    assert "is empty" in invalid(mapping)
    files["password"].write_text("one\ntwo\n")
    assert "single line" in invalid(mapping)


@pytest.mark.parametrize("field", ["mechanism", "username", "password_file"])
def test_sasl_fields_are_required(files: dict[str, Path], field: str) -> None:
    mapping = sasl_ssl(files)
    del mapping["sasl"][field]
    assert invalid(mapping) == f"kafka.sasl.{field}: required"


def test_ssl_requires_a_ca(files: dict[str, Path]) -> None:
    assert invalid({"bootstrap_servers": REMOTE, "security_protocol": "SSL"}) == (
        "kafka.tls.ca_file: required when security_protocol is SSL"
    )
    assert invalid({"bootstrap_servers": REMOTE, "security_protocol": "SSL", "tls": {}}).startswith(
        "kafka.tls.ca_file: required"
    )


def test_sasl_ssl_requires_sasl_and_tls(files: dict[str, Path]) -> None:
    mapping = sasl_ssl(files)
    del mapping["sasl"]
    assert invalid(mapping) == "kafka.sasl: required when security_protocol is SASL_SSL"
    mapping = sasl_ssl(files)
    del mapping["tls"]
    assert invalid(mapping) == "kafka.tls.ca_file: required when security_protocol is SASL_SSL"


def test_settings_for_another_protocol_are_refused(files: dict[str, Path]) -> None:
    mapping = sasl_ssl(files, security_protocol="SSL")
    assert invalid(mapping).startswith("kafka.sasl: not used with security_protocol SSL")
    mapping = {"bootstrap_servers": ["127.0.0.1:9092"], "tls": {"ca_file": str(files["ca"])}}
    assert invalid(mapping).startswith("kafka.tls: not used with security_protocol PLAINTEXT")


def test_unknown_protocol() -> None:
    assert invalid({"bootstrap_servers": REMOTE, "security_protocol": "TLS"}) == (
        "kafka.security_protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    )


def test_clear_text_to_remote_brokers_needs_explicit_consent(files: dict[str, Path]) -> None:
    detail = invalid({"bootstrap_servers": REMOTE})
    assert detail.startswith("kafka.security_protocol: PLAINTEXT sends data in clear to non-loopback")
    assert "kafka.allow_plaintext" in detail
    allowed = KafkaSettings.from_mapping({"bootstrap_servers": REMOTE, "allow_plaintext": True})
    assert allowed.producer_kwargs()["security_protocol"] == "PLAINTEXT"
    scram_clear = sasl_ssl(files, security_protocol="SASL_PLAINTEXT")
    del scram_clear["tls"]
    assert invalid(scram_clear).startswith("kafka.security_protocol: SASL_PLAINTEXT sends data in clear")


def test_embedded_broker_is_plaintext_only(files: dict[str, Path]) -> None:
    assert invalid({"security_protocol": "SSL", "tls": {"ca_file": str(files["ca"])}}).startswith(
        "kafka.security_protocol: the embedded broker"
    )


def test_mutual_tls_with_encrypted_key(files: dict[str, Path]) -> None:
    tls = {
        "ca_file": str(files["ca"]),
        "cert_file": str(files["cert"]),
        "key_file": str(files["key"]),
        "key_password_file": str(files["key_password"]),
        "check_hostname": False,
    }
    mapping = {"bootstrap_servers": REMOTE, "security_protocol": "SSL", "tls": tls}
    settings = KafkaSettings.from_mapping(mapping)
    context = settings.producer_kwargs()["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_wrong_key_password_names_the_files(files: dict[str, Path]) -> None:
    files["key_password"].write_text("wrong\n")
    with pytest.raises(GatewayError) as info:
        TlsSettings(
            ca_file=files["ca"],
            cert_file=files["cert"],
            key_file=files["key"],
            key_password_file=files["key_password"],
        )
    assert info.value.detail.startswith("kafka.tls.cert_file: cannot load the client certificate and key")
    assert "tls.key_password_file" in info.value.detail


def test_client_certificate_needs_its_key(files: dict[str, Path]) -> None:
    with pytest.raises(GatewayError, match=r"kafka\.tls\.key_file: a client certificate needs both"):
        TlsSettings(ca_file=files["ca"], cert_file=files["cert"])
    with pytest.raises(GatewayError, match=r"kafka\.tls\.key_password_file: only meaningful"):
        TlsSettings(ca_file=files["ca"], key_password_file=files["key_password"])


def test_ca_file_must_hold_certificates(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match=r"kafka\.tls\.ca_file: cannot load CA certificates"):
        TlsSettings(ca_file=files["garbage"])
    with pytest.raises(GatewayError, match=r"kafka\.tls\.ca_file: file .* does not exist"):
        TlsSettings(ca_file=tmp_path / "missing.pem")


def test_relative_paths_resolve_against_base_dir(files: dict[str, Path], tmp_path: Path) -> None:
    mapping = sasl_ssl(files)
    mapping["tls"]["ca_file"] = "ca.pem"
    mapping["sasl"]["password_file"] = "scram.pass"
    settings = KafkaSettings.from_mapping(mapping, base_dir=tmp_path)
    assert settings.tls is not None
    assert settings.tls.ca_file == tmp_path / "ca.pem"
    assert isinstance(settings.sasl, SaslSettings)
    assert settings.sasl.password_file == tmp_path / "scram.pass"


# -- shapes and types --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "fragment"),
    [
        ("kafka", "expected host:port"),
        ("kafka:0", "port '0' is not in 1..65535"),
        ("kafka:70000", "port '70000' is not in 1..65535"),
        ("kafka:http", "port 'http' is not in 1..65535"),
        ("bad_host:9092", "'bad_host' is not a valid host name"),
        ("::1:9092", "not a valid host name"),
        ("[::1]9092", "[address]:port"),
    ],
)
def test_bad_bootstrap_servers(server: str, fragment: str) -> None:
    detail = invalid({"bootstrap_servers": [server]})
    assert detail.startswith(f"kafka.bootstrap_servers: {server!r}: ")
    assert fragment in detail


def test_duplicate_and_mistyped_servers() -> None:
    assert "same server twice" in invalid({"bootstrap_servers": ["localhost:1", "localhost:1"]})
    assert "must be a list" in invalid({"bootstrap_servers": 9092})
    assert invalid({"bootstrap_servers": [9092]}) == "kafka.bootstrap_servers: must be a string, got int"


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"bootstrap": "x:1"}, "kafka.bootstrap: unknown setting; expected one of "),
        ({"tls": {"ca": "x"}}, "kafka.tls.ca: unknown setting"),
        ({"allow_plaintext": "yes"}, "kafka.allow_plaintext: must be true or false, got 'yes'"),
        ({"request_timeout_ms": True}, "kafka.request_timeout_ms: must be an integer, got True"),
        ({"request_timeout_ms": 10}, "kafka.request_timeout_ms: must be an integer in 1000..600000, got 10"),
        ({"client_id": "gw kemensos"}, "kafka.client_id: must be 1-249 characters"),
        ({"sasl": "SCRAM"}, "kafka.sasl: must be a table/object, got str"),
        (
            {"session_timeout_ms": 6000, "heartbeat_interval_ms": 6000},
            "kafka.heartbeat_interval_ms: must be below session_timeout_ms (6000)",
        ),
    ],
)
def test_field_errors_name_the_field(mapping: dict[str, Any], expected: str) -> None:
    assert invalid({"bootstrap_servers": ["localhost:9092"], **mapping}).startswith(expected)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(GatewayError, match=r"kafka\.bootstrap_servers: must be a tuple"):
        KafkaSettings(bootstrap_servers="localhost:9092")  # type: ignore[arg-type]  # the wrong type is the test
    with pytest.raises(GatewayError, match=r"kafka\.security_protocol: 'SSL '"):
        KafkaSettings(bootstrap_servers=("localhost:1",), security_protocol="SSL ")  # type: ignore[arg-type]  # same


# -- topics ------------------------------------------------------------------------------------------------


def test_topic_names() -> None:
    assert topic_for("kemensos", "case", 1) == "xchg.kemensos.case.v1"
    assert topic_for("kemlu.kbri-kuching", "alert", 2) == "xchg.kemlu.kbri-kuching.alert.v2"
    assert dlq_topic("iom") == "xchg.iom.dlq.v1"


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("xchg.kemensos.case.v1", TopicName("kemensos", "case", 1)),
        ("xchg.kemlu.kbri-kuala-lumpur.alert.v12", TopicName("kemlu.kbri-kuala-lumpur", "alert", 12)),
        ("xchg.iom.dlq.v1", TopicName("iom", "dlq", 1)),
        ("xchg.odd.case.case.v3", TopicName("odd.case", "case", 3)),  # parsed from the right
    ],
)
def test_parse_topic_round_trip(name: str, parsed: TopicName) -> None:
    assert parse_topic(name) == parsed
    assert str(parsed) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("xchg.kemensos.case", "is not an exchange topic"),
        ("other.kemensos.case.v1", "is not an exchange topic"),
        ("xchg.kemensos.case.1", "does not end in .v<major>"),
        ("xchg.kemensos.case.v0", "does not end in .v<major>"),
        ("xchg.kemensos.case.v01", "does not end in .v<major>"),
        ("xchg.kemensos.audit.v1", "has kind 'audit'"),
        ("xchg.Kemensos.case.v1", "does not match"),
        ("xchg.kemensos..case.v1", "does not match"),
        ("xchg.kemensos.dlq.v2", "dead-letter topics are v1"),
        ("xchg.kemensos.case.v1 ", "not a valid Kafka topic name"),
        ("xchg.kemensos_x.case.v1", "does not match"),
    ],
)
def test_parse_topic_rejects(name: str, fragment: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_topic(name)
    assert info.value.reason is Reason.CONFIG_INVALID
    assert fragment in info.value.detail


@pytest.mark.parametrize(
    ("party", "kind", "major", "fragment"),
    [
        ("Kemensos", "case", 1, "party id 'Kemensos' does not match"),
        ("kemensos.", "case", 1, "does not match"),
        ("kemensos", "dlq", 1, "kind must be one of case, alert, delivery"),
        ("kemensos", "case", 0, "major version must be an integer >= 1"),
        ("kemensos", "case", True, "major version must be an integer >= 1"),
        ("a" * 240, "case", 1, "longer than Kafka's 249 characters"),
    ],
)
def test_topic_for_rejects(party: str, kind: str, major: int, fragment: str) -> None:
    with pytest.raises(GatewayError) as info:
        topic_for(party, kind, major)  # type: ignore[arg-type]  # invalid kinds are part of the test
    assert fragment in info.value.detail


@pytest.mark.parametrize(
    ("names", "partitions", "replication", "fragment"),
    [
        (["ok"], 0, 1, "partitions must be an integer >= 1"),
        (["ok"], 1, True, "replication must be an integer >= 1"),
        (["bad name"], 1, 1, "'bad name' is not a valid Kafka topic name"),
        ([".."], 1, 1, "is not a valid Kafka topic name"),
        (["x" * 250], 1, 1, "is not a valid Kafka topic name"),
    ],
)
async def test_ensure_topics_validates_before_connecting(
    names: list[str], partitions: int, replication: int, fragment: str
) -> None:
    # no broker at this address: validation must fail first
    with pytest.raises(GatewayError) as info:
        await ensure_topics({"bootstrap_servers": "127.0.0.1:1"}, names, partitions, replication)
    assert fragment in info.value.detail


async def test_ensure_topics_with_nothing_to_do_does_not_connect() -> None:
    assert await ensure_topics({"bootstrap_servers": "127.0.0.1:1"}, [], 1, 1) == {}
