"""Proving a Kafka cluster is reachable with given settings, and saying why not when it is not.

Used by ``/readyz`` (:mod:`gateway.runtime.ops`) and by the integration tests; kept apart from
:mod:`gateway.bus.kafka` (the settings) because it talks to the network. :func:`broker_refusal` turns the
broker's authorisation errors (its ACLs at work) into ``GatewayError(BUS_NOT_AUTHORIZED)`` for the publisher,
the subscriber and topic provisioning. :func:`refuses_idempotence` tells a broker that refuses idempotent
producers from one that is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from typing import Any

from gateway.bus.kafka import KafkaSettings, split_server
from gateway.errors import GatewayError, Reason

__all__ = ["broker_refusal", "check_connection", "refuses_idempotence", "start_client"]


def _fail(field_name: str, message: str) -> GatewayError:
    return GatewayError(Reason.CONFIG_INVALID, f"kafka.{field_name}: {message}")


async def check_connection(settings: KafkaSettings) -> tuple[str, ...]:
    """Prove the cluster is reachable with these settings; return each broker's advertised ``host:port``.

    aiokafka reports every bootstrap failure as "Unable to bootstrap from [...]" and only logs the cause, so
    this first connects to each bootstrap server itself (TCP, TLS, SASL, as aiokafka does) to say *why* it
    failed: certificate verification (names ``kafka.tls.ca_file``), other TLS errors, SASL mechanism or
    credentials, refused connections. Then it does a metadata round trip and connects to every advertised
    broker, which catches a broker advertising an address clients cannot reach (e.g. the port behind a TLS
    terminator). Each step is bounded by ``request_timeout_ms``; wrap the call in ``asyncio.timeout`` for an
    overall bound. Raises :class:`GatewayError`: CONFIG_INVALID when TLS or SASL refuse us (the detail
    names the ``kafka.tls``/``kafka.sasl`` field), BUS_UNAVAILABLE when no broker can be reached or the
    advertised addresses are unreachable.
    """
    from aiokafka import errors  # noqa: PLC0415 -- keep importing settings cheap
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 -- same
    from aiokafka.conn import create_conn  # noqa: PLC0415 -- same

    kwargs = settings.admin_kwargs()
    timeout = settings.request_timeout_ms / 1000
    conn_kwargs = {
        key: kwargs[key]
        for key in (
            "client_id",
            "request_timeout_ms",
            "security_protocol",
            "ssl_context",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
        )
        if key in kwargs
    }
    failures: list[str] = []
    for server in settings.bootstrap_servers:
        host, port = split_server(server)
        try:
            conn = await asyncio.wait_for(create_conn(host, port, **conn_kwargs), timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            raise _fail(
                "tls.ca_file",
                f"TLS handshake with {server} failed: certificate verify failed: {exc.verify_message}",
            ) from exc
        except ssl.SSLError as exc:
            raise _fail("tls", f"TLS handshake with {server} failed: {exc.reason or exc}") from exc
        except (errors.AuthenticationFailedError, errors.SaslAuthenticationFailed) as exc:
            user = settings.sasl.username if settings.sasl else "?"
            raise _fail("sasl", f"authentication as {user!r} failed at {server}: {exc}") from exc
        except (errors.UnsupportedSaslMechanismError, errors.AuthenticationMethodNotSupported) as exc:
            raise _fail("sasl.mechanism", f"{server} does not accept it: {exc}") from exc
        except (OSError, TimeoutError, errors.KafkaError) as exc:
            failures.append(f"{server}: {exc or type(exc).__name__}")
            continue
        conn.close()
    if len(failures) == len(settings.bootstrap_servers):
        raise GatewayError(
            Reason.BUS_UNAVAILABLE,
            f"kafka.bootstrap_servers: no broker reachable ({'; '.join(failures)}); "
            f"security_protocol is {settings.security_protocol}",
        )

    client = AIOKafkaClient(**kwargs)
    try:
        try:
            await asyncio.wait_for(client.bootstrap(), timeout=timeout)
        except (errors.KafkaError, OSError, TimeoutError) as exc:
            raise GatewayError(
                Reason.BUS_UNAVAILABLE,
                f"kafka.bootstrap_servers: no metadata from {', '.join(settings.bootstrap_servers)} "
                f"({type(exc).__name__}); is it a Kafka listener with security_protocol "
                f"{settings.security_protocol}?",
            ) from exc
        advertised: list[str] = []
        for broker in client.cluster.brokers():
            address = f"{broker.host}:{broker.port}"
            if not await asyncio.wait_for(client.ready(broker.nodeId), timeout=timeout):
                raise GatewayError(
                    Reason.BUS_UNAVAILABLE,
                    f"kafka.bootstrap_servers: broker {broker.nodeId} advertises {address}, "
                    "which this client cannot connect to",
                )
            advertised.append(address)
        return tuple(advertised)
    finally:
        await client.close()


async def start_client(client: Any) -> None:
    """``client.start()`` for an aiokafka producer, consumer or the like; when it fails or is cancelled, the
    client is stopped before the error goes on: a half-started client keeps its connections and tasks."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise


async def refuses_idempotence(settings: KafkaSettings) -> bool:
    """After an idempotent producer failed to start: True when a producer without idempotence starts, so
    the broker answered but refused idempotence (not the network, TLS or SASL)."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 -- keep importing settings cheap

    probe = AIOKafkaProducer(**dataclasses.replace(settings, enable_idempotence=False).producer_kwargs())
    try:
        await probe.start()
    except Exception:  # noqa: BLE001 - then it is not about idempotence
        return False
    finally:
        with contextlib.suppress(Exception):
            await probe.stop()
    return True


def broker_refusal(exc: BaseException, operation: str) -> GatewayError | None:
    """``exc`` as ``GatewayError(BUS_NOT_AUTHORIZED)`` if it is the broker refusing ``operation`` (``Write``,
    ``Read``, ``Describe``, ...) to this client's principal; ``None`` for any other error.

    aiokafka raises TopicAuthorizationFailedError (with the topic or set of topics),
    GroupAuthorizationFailedError (with the group id), ClusterAuthorizationFailedError and
    TransactionalIdAuthorizationFailed; they are not retriable, and retrying them blindly hides a
    misconfiguration behind "send failed" warnings. The detail names the resource and says where ACLs come
    from; it holds names of topics and groups only, never record contents.
    """
    from aiokafka import errors  # noqa: PLC0415 -- keep importing settings cheap

    if isinstance(exc, errors.TopicAuthorizationFailedError):
        what = f"topic {_names(exc.args)}"
    elif isinstance(exc, errors.GroupAuthorizationFailedError):
        what = f"consumer group {_names(exc.args)}"
    elif isinstance(exc, errors.ClusterAuthorizationFailedError):
        what = "the cluster (IdempotentWrite, which an idempotent producer needs)"
    elif isinstance(exc, errors.TransactionalIdAuthorizationFailed):
        what = "a transactional id"
    else:
        return None
    return GatewayError(
        Reason.BUS_NOT_AUTHORIZED,
        f"the broker refused {operation} on {what} to this gateway's Kafka user ({type(exc).__name__}); "
        "its ACLs do not grant it: check the registry's permissions, then re-render and apply them "
        "(gateway deploy render, kafka-init.sh)",
    )


def _names(args: tuple[object, ...]) -> str:
    """The resource names aiokafka put in an exception's arguments (a name, or a set or list of names)."""
    names: list[str] = []
    for arg in args:
        if isinstance(arg, str):
            names.append(arg)
        elif isinstance(arg, set | frozenset | list | tuple):
            names.extend(sorted(str(item) for item in arg))
    return ", ".join(repr(name) for name in names) if names else "(unnamed)"
