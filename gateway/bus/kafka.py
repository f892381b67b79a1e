"""Connection settings for Apache Kafka, validated once at the edge and turned into aiokafka arguments.

Why a settings object: every gateway role (publisher, subscriber, notary, auditor) talks to the same cluster
with the same security, and a typo in a security option must stop the gateway at startup with a message that
names the field, not surface later as a hung connection. :meth:`KafkaSettings.from_mapping` parses the
``kafka`` section of the configuration; the object is frozen and re-validates in ``__post_init__``, so every
instance is valid however it was built. The environment is never read here (the CLI does that).

Security decisions (inter-agency data about trafficking victims crosses this bus):

* ``security_protocol`` is one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL. Clear-text protocols (PLAINTEXT,
  SASL_PLAINTEXT) are only accepted for loopback brokers (``localhost``, 127.0.0.0/8, ``::1``) or the embedded
  broker, unless ``allow_plaintext: true`` says so explicitly (e.g. a private test network).
* SSL and SASL_SSL require ``tls.ca_file``: the agencies' brokers are on a private PKI, and trusting the
  system store would let any public CA vouch for a broker. Hostname checking is on unless
  ``tls.check_hostname: false``. A client certificate (``tls.cert_file`` + ``tls.key_file``, optional
  ``tls.key_password_file``) enables mutual TLS. TLS 1.2 is the minimum.
* SASL mechanisms are SCRAM-SHA-256 and SCRAM-SHA-512 only. PLAIN is refused even over TLS: it hands the
  password itself to whatever terminates TLS (broker, proxy, a misissued certificate's holder), while SCRAM
  proves knowledge of it without sending it. GSSAPI and OAUTHBEARER are not supported.
* Secrets never live in the configuration text: ``sasl.password_file`` and ``tls.key_password_file`` name
  files read when keyword arguments are built (so a rotated secret file is picked up on reconnect). A
  ``password`` key in the mapping is refused. The settings object stores only paths, so its ``repr`` and logs
  carry no secret; the dicts returned by the ``*_kwargs`` methods do contain the password: never log them.
* Producers always use ``acks="all"``. ``enable_idempotence`` defaults to on for real Kafka and off for the
  embedded broker (empty ``bootstrap_servers``), whose Tansu build cannot answer InitProducerId; asking for it
  there is an error. Consumers never auto-commit (the subscriber commits after handling) and start from the
  earliest offset of a new group.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import structlog

from gateway.errors import GatewayError, Reason
from gateway.settings import Table, is_loopback, read_secret

__all__ = [
    "EMBEDDED_CLIENT_TIMINGS",
    "EMBEDDED_FETCH_MAX_WAIT_MS",
    "KAFKA_FETCH_MAX_WAIT_MS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "KafkaSettings",
    "SaslMechanism",
    "SaslSettings",
    "SecurityProtocol",
    "TlsSettings",
    "split_server",
]

_log = structlog.get_logger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: Final[tuple[SecurityProtocol, ...]] = get_args(SecurityProtocol)
SASL_MECHANISMS: Final[tuple[SaslMechanism, ...]] = get_args(SaslMechanism)
KAFKA_FETCH_MAX_WAIT_MS: Final = 500
"""Kafka's own default for ``fetch.max.wait.ms``; a real broker answers a fetch as soon as records arrive."""
EMBEDDED_FETCH_MAX_WAIT_MS: Final = 10
"""The embedded broker answers a fetch only when its wait has elapsed (see gateway/sandbox/broker.py's
quirks), so every delivery waits up to this long: 10 ms keeps p99 low at the cost of idle fetches every 10 ms
(measured in docs/PERFORMANCE.md)."""
EMBEDDED_CLIENT_TIMINGS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "session_timeout_ms": 1_000,
        "heartbeat_interval_ms": 100,
        "fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS,
    }
)
"""Client timings for the embedded broker, as ``KafkaSettings`` keyword arguments (or ``[kafka]`` keys): Tansu
holds JoinGroup for about half the session timeout and a consumer that stops in generation 0 lingers for a
whole session (gateway/sandbox/broker.py), so 1 s sessions make joins take ~1 s instead of ~5 s; real Kafka
refuses sessions below 6 s by default, so never use these against a real cluster."""


_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def _fail(field_name: str, message: str) -> GatewayError:
    return GatewayError(Reason.CONFIG_INVALID, f"kafka.{field_name}: {message}")


def split_server(server: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError with a reason."""
    if server.startswith("["):
        host, sep, port_text = server[1:].partition("]:")
        if not sep:
            raise ValueError("an IPv6 address must be written [address]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = server.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"{host!r} is not a valid host name or IPv4 address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not in 1..65535")
    return host, int(port_text)


def _check_readable_file(field_name: str, path: Path) -> None:
    if not path.is_file():
        raise _fail(field_name, f"file {str(path)!r} does not exist or is not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _fail(field_name, f"file {str(path)!r} is not readable: {exc.strerror}") from exc


def _read_secret(field_name: str, path: Path) -> str:
    return read_secret(path, f"kafka.{field_name}")


def _warn_if_shared(field_name: str, path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            _log.warning("kafka.secret_file_permissions", field=f"kafka.{field_name}", path=str(path))


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsSettings:
    """TLS trust and (optional) client identity for SSL / SASL_SSL. Paths only; files are read on use."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        _check_readable_file("tls.ca_file", self.ca_file)
        if (self.cert_file is None) != (self.key_file is None):
            missing = "tls.key_file" if self.key_file is None else "tls.cert_file"
            raise _fail(missing, "a client certificate needs both tls.cert_file and tls.key_file")
        if self.cert_file is not None:
            _check_readable_file("tls.cert_file", self.cert_file)
        if self.key_file is not None:
            _check_readable_file("tls.key_file", self.key_file)
            _warn_if_shared("tls.key_file", self.key_file)
        if self.key_password_file is not None:
            if self.key_file is None:
                raise _fail("tls.key_password_file", "only meaningful together with tls.key_file")
            _check_readable_file("tls.key_password_file", self.key_password_file)
            _warn_if_shared("tls.key_password_file", self.key_password_file)
        self.ssl_context()  # fail now, not at the first connection: bad PEM, key not matching cert, ...

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client context: CA from ``ca_file``, optional client certificate, TLS >= 1.2.

        Built with the ssl module directly (not ``aiokafka.helpers.create_ssl_context``) so a failure can
        name the file at fault and ``check_hostname`` can be honoured.
        """
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise _fail(
                "tls.ca_file", f"cannot load CA certificates from {str(self.ca_file)!r}: {_ssl_reason(exc)}"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        if self.cert_file is not None:
            password: Callable[[], str] | None = None
            if self.key_password_file is not None:
                password_file = self.key_password_file

                def password() -> str:
                    return _read_secret("tls.key_password_file", password_file)

            try:
                context.load_cert_chain(
                    str(self.cert_file), str(self.key_file) if self.key_file else None, password=password
                )
            except (ssl.SSLError, OSError) as exc:
                raise _fail(
                    "tls.cert_file",
                    "cannot load the client certificate and key (tls.cert_file, tls.key_file"
                    f"{', tls.key_password_file' if self.key_password_file else ''}): {_ssl_reason(exc)}",
                ) from exc
        return context


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass(frozen=True, kw_only=True, slots=True)
class SaslSettings:
    """SASL/SCRAM credentials: the password is read from ``password_file`` when connecting, never stored."""

    mechanism: SaslMechanism
    username: str
    password_file: Path

    def __post_init__(self) -> None:
        if self.mechanism not in SASL_MECHANISMS:
            raise _fail(
                "sasl.mechanism",
                f"{self.mechanism!r} is not allowed; use {' or '.join(SASL_MECHANISMS)}",
            )
        if not self.username or self.username != self.username.strip() or "," in self.username:
            raise _fail("sasl.username", "must be non-empty, without surrounding spaces or commas")
        _check_readable_file("sasl.password_file", self.password_file)
        _read_secret("sasl.password_file", self.password_file)
        _warn_if_shared("sasl.password_file", self.password_file)

    def password(self) -> str:
        return _read_secret("sasl.password_file", self.password_file)


@dataclass(frozen=True, kw_only=True, slots=True)
class KafkaSettings:
    """How to reach the Kafka cluster. ``bootstrap_servers=()`` means "use the embedded broker"."""

    bootstrap_servers: tuple[str, ...] = ()
    security_protocol: SecurityProtocol = "PLAINTEXT"
    tls: TlsSettings | None = None
    sasl: SaslSettings | None = None
    allow_plaintext: bool = False
    enable_idempotence: bool | None = None
    """``None`` = automatic: on for real Kafka, off for the embedded broker. See :attr:`idempotence`."""
    client_id: str = "xchg-gateway"
    request_timeout_ms: int = 30_000
    retry_backoff_ms: int = 100
    metadata_max_age_ms: int = 300_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_batch_bytes: int = 262_144
    """Producer batch size per partition (aiokafka ``max_batch_size``). 256 KiB instead of aiokafka's 16 KiB:
    a batch of 500 ~2 KB events then fits one produce request per partition, which cut the broker's CPU per
    event by a third and kept the outbox sender from starving under many concurrent publishers
    (docs/PERFORMANCE.md). Must not exceed the topics' ``max.message.bytes`` (Kafka's default 1 MiB)."""
    max_request_bytes: int = 1_048_576
    """The producer's ``max_request_size`` (aiokafka's default, 1 MiB): the largest record it sends. The
    subscriber bounds dead-letter records by it and by the DLQ topic's ``max.message.bytes``
    (:mod:`gateway.bus.deadletter`)."""
    fetch_max_wait_ms: int | None = None
    """How long a fetch may wait for records. ``None`` = Kafka's default (500 ms) for a real cluster, which
    answers as soon as records arrive anyway; :meth:`for_embedded` sets :data:`EMBEDDED_FETCH_MAX_WAIT_MS`,
    because the embedded broker (Tansu) holds every fetch for the whole wait even when records arrive."""
    _hosts: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.bootstrap_servers, str) or not isinstance(self.bootstrap_servers, tuple):
            raise _fail("bootstrap_servers", "must be a tuple of 'host:port' strings")
        hosts: list[tuple[str, int]] = []
        for server in self.bootstrap_servers:
            try:
                hosts.append(split_server(server))
            except ValueError as exc:
                raise _fail("bootstrap_servers", f"{server!r}: {exc}") from exc
        object.__setattr__(self, "_hosts", tuple(hosts))

        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise _fail(
                "security_protocol",
                f"{self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}",
            )
        uses_tls = self.security_protocol in ("SSL", "SASL_SSL")
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_tls and self.tls is None:
            raise _fail("tls.ca_file", f"required when security_protocol is {self.security_protocol}")
        if not uses_tls and self.tls is not None:
            raise _fail(
                "tls", f"not used with security_protocol {self.security_protocol}; remove it or use SSL"
            )
        if uses_sasl and self.sasl is None:
            raise _fail("sasl", f"required when security_protocol is {self.security_protocol}")
        if not uses_sasl and self.sasl is not None:
            raise _fail(
                "sasl", f"not used with security_protocol {self.security_protocol}; use SASL_SSL or remove it"
            )
        if self.embedded and self.security_protocol != "PLAINTEXT":
            raise _fail(
                "security_protocol",
                "the embedded broker (empty bootstrap_servers) speaks PLAINTEXT only; "
                "set kafka.bootstrap_servers for a real cluster",
            )
        if not uses_tls and not self.allow_plaintext:
            remote = [f"{h}:{p}" for h, p in self._hosts if not is_loopback(h)]
            if remote:
                raise _fail(
                    "security_protocol",
                    f"{self.security_protocol} sends data in clear to non-loopback broker(s) "
                    f"{', '.join(remote)}; use SSL or SASL_SSL, or set kafka.allow_plaintext: true",
                )
        if self.enable_idempotence is True and self.embedded:
            raise _fail(
                "enable_idempotence",
                "the embedded broker cannot do idempotent producers (InitProducerId fails); "
                "set it to false or configure kafka.bootstrap_servers",
            )
        if not _CLIENT_ID_RE.match(self.client_id):
            raise _fail("client_id", "must be 1-249 characters of A-Z a-z 0-9 . _ -")
        for name, low, high in (
            ("request_timeout_ms", 1_000, 600_000),
            ("retry_backoff_ms", 10, 60_000),
            ("metadata_max_age_ms", 1_000, 3_600_000),
            ("session_timeout_ms", 1_000, 3_600_000),
            ("heartbeat_interval_ms", 50, 600_000),
            ("max_poll_interval_ms", 1_000, 86_400_000),
            ("fetch_max_wait_ms", 1, 60_000),
            ("max_batch_bytes", 16_384, 1_048_576),
            ("max_request_bytes", 65_536, 104_857_600),
        ):
            value = getattr(self, name)
            if value is None and name == "fetch_max_wait_ms":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _fail(name, f"must be an integer in {low}..{high}, got {value!r}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise _fail(
                "heartbeat_interval_ms",
                f"must be below session_timeout_ms ({self.session_timeout_ms}); a third of it is typical",
            )

    # -- derived values ---------------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when no bootstrap servers are configured: the gateway starts its own broker."""
        return not self.bootstrap_servers

    @property
    def idempotence(self) -> bool:
        """Effective producer idempotence: the explicit setting, else on for real Kafka, off for embedded."""
        if self.enable_idempotence is not None:
            return self.enable_idempotence
        return not self.embedded

    def for_embedded(self, bootstrap_servers: str | Sequence[str]) -> KafkaSettings:
        """These settings pointed at a running embedded broker (idempotence pinned off)."""
        if not self.embedded:
            raise _fail("bootstrap_servers", "already set; for_embedded() applies to embedded settings only")
        servers = (
            tuple(s.strip() for s in bootstrap_servers.split(","))
            if isinstance(bootstrap_servers, str)
            else tuple(bootstrap_servers)
        )
        fetch_wait = self.fetch_max_wait_ms or EMBEDDED_FETCH_MAX_WAIT_MS
        return replace(
            self, bootstrap_servers=servers, enable_idempotence=False, fetch_max_wait_ms=fetch_wait
        )

    def redacted(self) -> dict[str, object]:
        """A log-safe summary (paths and names, no secrets)."""
        return {
            "bootstrap_servers": list(self.bootstrap_servers) or "embedded",
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl.mechanism if self.sasl else None,
            "sasl_username": self.sasl.username if self.sasl else None,
            "tls_ca_file": str(self.tls.ca_file) if self.tls else None,
            "tls_client_cert": bool(self.tls and self.tls.cert_file),
            "idempotence": self.idempotence,
            "client_id": self.client_id,
        }

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.ssl_context() if self.tls is not None else None

    # -- aiokafka keyword arguments ---------------------------------------------------------------------

    def _common_kwargs(self) -> dict[str, Any]:
        if self.embedded:
            raise _fail(
                "bootstrap_servers",
                "empty (embedded broker): start it and use settings.for_embedded(broker.bootstrap_servers)",
            )
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl is not None:
            kwargs["sasl_mechanism"] = self.sasl.mechanism
            kwargs["sasl_plain_username"] = self.sasl.username
            kwargs["sasl_plain_password"] = self.sasl.password()
        return kwargs

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``: ``acks="all"``, idempotence per :attr:`idempotence`.

        Contains the SASL password when SASL is configured: never log the result.
        """
        return {
            **self._common_kwargs(),
            "acks": "all",
            "enable_idempotence": self.idempotence,
            "max_batch_size": self.max_batch_bytes,
            "max_request_size": self.max_request_bytes,
        }

    def consumer_kwargs(self, group_id: str | None) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer``: no auto-commit, new groups start at the earliest.

        ``group_id=None`` is for consumers that assign partitions themselves (notary, auditor replay).
        Contains the SASL password when SASL is configured: never log the result.
        """
        kwargs = {
            **self._common_kwargs(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.fetch_max_wait_ms or KAFKA_FETCH_MAX_WAIT_MS,
        }
        if group_id is not None:
            kwargs["session_timeout_ms"] = self.session_timeout_ms
            kwargs["heartbeat_interval_ms"] = self.heartbeat_interval_ms
            kwargs["max_poll_interval_ms"] = self.max_poll_interval_ms
        return kwargs

    def admin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaAdminClient``. Contains the SASL password: never log the result."""
        return self._common_kwargs()

    # -- parsing ----------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], *, base_dir: Path | None = None) -> KafkaSettings:
        """Parse the ``kafka`` configuration section (already decoded from TOML/JSON/YAML).

        Relative file paths are resolved against ``base_dir`` (the configuration file's directory) when
        given. Every error is a ``GatewayError(CONFIG_INVALID)`` whose detail starts with ``kafka.<field>``.
        """
        return _settings_from(Table(mapping, where="kafka", base_dir=base_dir))

    @classmethod
    def from_table(cls, table: Table) -> KafkaSettings:
        """Parse a ``kafka`` table read with :class:`gateway.settings.Table` (names in errors follow it)."""
        return _settings_from(table)


_INT_FIELDS: Final = (
    "request_timeout_ms",
    "retry_backoff_ms",
    "metadata_max_age_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "fetch_max_wait_ms",
    "max_batch_bytes",
    "max_request_bytes",
)


def _settings_from(table: Table) -> KafkaSettings:
    """The ``[kafka]`` table, key by key; bounds and cross-field rules are KafkaSettings' own checks."""
    kwargs: dict[str, Any] = {}
    if "bootstrap_servers" in table:
        kwargs["bootstrap_servers"] = _servers(table, table.raw("bootstrap_servers"))
    table.mark_used("bootstrap_servers")
    protocol = table.string("security_protocol", None)
    if protocol is not None:
        if protocol not in SECURITY_PROTOCOLS:
            raise table.fail(
                "security_protocol", f"{protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        kwargs["security_protocol"] = protocol
    for name in ("allow_plaintext", "enable_idempotence"):
        value = table.boolean(name, None)
        if value is not None:
            kwargs[name] = value
    client_id = table.string("client_id", None, empty=True)
    if client_id is not None:
        kwargs["client_id"] = client_id
    for name in _INT_FIELDS:
        number = table.integer(name, None)
        if number is not None:
            kwargs[name] = number
    if "tls" in table:
        kwargs["tls"] = _tls_from(table.table("tls"))
    if "sasl" in table:
        kwargs["sasl"] = _sasl_from(table.table("sasl"))
    table.mark_used("tls", "sasl")
    table.refuse_unknown()
    return KafkaSettings(**kwargs)


def _tls_from(table: Table) -> TlsSettings:
    table.only("ca_file", "cert_file", "key_file", "key_password_file", "check_hostname")
    if "ca_file" not in table:
        raise table.fail("ca_file", "required: the CA certificate(s) that sign the brokers' certificates")
    kwargs: dict[str, Any] = {"ca_file": table.path("ca_file")}
    for name in ("cert_file", "key_file", "key_password_file"):
        path = table.path(name, None)
        if path is not None:
            kwargs[name] = path
    check_hostname = table.boolean("check_hostname", None)
    if check_hostname is not None:
        kwargs["check_hostname"] = check_hostname
    table.refuse_unknown()
    return TlsSettings(**kwargs)


def _sasl_from(table: Table) -> SaslSettings:
    if "password" in table:
        raise table.fail(
            "password",
            "passwords are never read from the configuration; put it in a file and set "
            "kafka.sasl.password_file",
        )
    table.only("mechanism", "username", "password_file")
    mechanism = table.string("mechanism", empty=True)
    if mechanism not in SASL_MECHANISMS:
        raise table.fail("mechanism", f"{mechanism!r} is not allowed; use {' or '.join(SASL_MECHANISMS)}")
    username = table.string("username", empty=True)
    password_file = table.path("password_file")
    table.refuse_unknown()
    return SaslSettings(mechanism=mechanism, username=username, password_file=password_file)


def _servers(table: Table, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[object] = [part.strip() for part in raw.split(",")] if raw.strip() else []
    elif isinstance(raw, Sequence):
        items = list(raw)
    else:
        raise table.fail(
            "bootstrap_servers", "must be a list of 'host:port' strings or a comma-separated string"
        )
    for item in items:
        if not isinstance(item, str):
            raise table.fail("bootstrap_servers", f"must be a string, got {type(item).__name__}")
    servers = tuple(str(item) for item in items)
    if len(set(servers)) != len(servers):
        raise table.fail("bootstrap_servers", "lists the same server twice")
    return servers
