"""The gateway's Kafka producer: started with backoff, telling a broker that refuses idempotence from one
that is away, and closed without leaving a connection behind.

Readiness tells the truth about the producer: ``/readyz`` check ``producer`` (:meth:`ProducerLink.probe`)
fails until it has started, saying why. A broker that refuses idempotent producing (the embedded Tansu
broker answers InitProducerId with an error; Kafka without the IdempotentWrite ACL refuses it) is detected
once -- a producer without idempotence is tried (:func:`gateway.bus.connectivity.refuses_idempotence`) --
and said in one log line (``kafka.idempotence_unsupported``): with ``kafka.enable_idempotence`` unset the
gateway then produces without it (consumers deduplicate by ``(source, id)`` anyway); set to ``true`` it
stays unready, saying why, instead of retrying in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Final

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ClusterAuthorizationFailedError, UnknownError

from gateway.bus.connectivity import refuses_idempotence, start_client
from gateway.bus.kafka import KafkaSettings
from gateway.bus.wait import wait_any
from gateway.runtime.ops import CheckFailed

__all__ = ["ProducerLink", "close_producer"]

_log = structlog.get_logger(__name__)

#: How InitProducerId refuses an idempotent producer: the embedded broker (Tansu) answers
#: UNKNOWN_SERVER_ERROR, Kafka without the IdempotentWrite ACL CLUSTER_AUTHORIZATION_FAILED. Only these are
#: probed further (a start failing for any other reason: unreachable, TLS, SASL, says nothing about it).
_IDEMPOTENCE_REFUSALS: Final[tuple[type[BaseException], ...]] = (
    UnknownError,
    ClusterAuthorizationFailedError,
)
_FIRST_DELAY, _MAX_DELAY, _REFUSED_DELAY = 0.5, 10.0, 30.0
_CANCEL_ROUNDS, _CANCEL_WAIT = 20, 0.05


class ProducerLink:
    """Starts one producer for ``kafka`` and keeps what ``/readyz`` says about it.

    :attr:`kafka` is the settings the producer was started with: after the idempotence fallback it has
    ``enable_idempotence = False``.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.ready = asyncio.Event()
        """Set by the owner once the started producer is in use (the gateway: after its topics exist)."""
        self.problem: str | None = None
        """Why it has not started (for ``/readyz``); None once it has, or before the first failure."""
        self.note: str | None = None
        """What ``/readyz`` adds once it has started (producing without idempotence)."""

    async def start(
        self, closing: asyncio.Event, stop: asyncio.Event, left: Callable[[], int]
    ) -> AIOKafkaProducer | None:
        """Start the producer, retrying with capped backoff; None when ``closing`` is set, or ``stop`` is set
        and ``left()`` (the outbox depth) is 0 -- nothing left to send."""
        delay = _FIRST_DELAY
        while not closing.is_set() and not (stop.is_set() and left() == 0):
            producer = AIOKafkaProducer(**self.kafka.producer_kwargs())
            try:
                await start_client(producer)  # stopped again if it fails or the gateway stops meanwhile
            except Exception as exc:  # noqa: BLE001 - broker not reachable, or refusing: retry or fall back
                refusal = isinstance(exc, _IDEMPOTENCE_REFUSALS)
                if self.kafka.idempotence and refusal and await refuses_idempotence(self.kafka):
                    if self._fall_back(exc):
                        continue  # at once, without idempotence
                    delay = _REFUSED_DELAY  # said once; keep trying quietly (the broker may be upgraded)
                else:
                    self.problem = f"producer cannot start ({type(exc).__name__})"
                    _log.warning(
                        "producer cannot connect; retrying", error=type(exc).__name__, retry_in=delay
                    )
                await wait_any(*([closing] if stop.is_set() else [closing, stop]), seconds=delay)
                delay = max(delay, min(delay * 2, _MAX_DELAY))
                continue
            self.problem = None
            return producer
        return None

    def _fall_back(self, exc: BaseException) -> bool:
        """Say once that the broker refuses idempotent producing; True when producing goes on without it."""
        refused = (
            f"the broker refused an idempotent producer (InitProducerId: {type(exc).__name__}): it cannot do "
            "idempotent producing (the embedded broker, Tansu) or the principal lacks IdempotentWrite"
        )
        if self.kafka.enable_idempotence is None:
            _log.warning(
                "kafka.idempotence_unsupported",
                detail=f"{refused}; producing without idempotence (consumers deduplicate by source and id); "
                "set kafka.enable_idempotence = false to say so",
            )
            self.kafka = dataclasses.replace(self.kafka, enable_idempotence=False)
            self.note = "without idempotence (the broker refused it)"
            return True
        if self.problem is None or not self.problem.startswith("the broker refused"):
            _log.error(
                "kafka.idempotence_unsupported",
                detail=f"{refused}; kafka.enable_idempotence = true: not producing. Set it to false, or "
                "grant IdempotentWrite / use a broker that supports it",
            )
        self.problem = f"{refused}; kafka.enable_idempotence = true"
        return False

    async def probe(self) -> str:
        """The ``producer`` readiness check: ready once :attr:`ready` is set."""
        if not self.ready.is_set():
            raise CheckFailed(self.problem or "producer not started yet (connecting to the broker)")
        return "started" + (f"; {self.note}" if self.note else "")


async def close_producer(producer: AIOKafkaProducer, seconds: float) -> None:
    """Flush and stop ``producer`` within ``seconds``; past that, close its connections anyway.

    ``AIOKafkaProducer.stop`` waits for the batches in flight before it stops its sender task and closes the
    client; cancelled in that wait (a broker gone quiet), it would leave both running and sockets open, and
    a second ``stop`` does nothing. So past ``seconds`` the client is closed (the requests in flight fail)
    and the sender task cancelled until it ends: cancelled once, aiokafka's sender waits for its produce
    requests, which retry and may be reconnecting; cancelled again, that wait is cancelled too. aiokafka
    keeps the task in the private ``_sender``; there is no public way to stop it. What was not
    acknowledged is still in the outbox and is sent again by the next start.
    """
    try:
        await asyncio.wait_for(producer.stop(), timeout=seconds)
    except Exception as exc:  # noqa: BLE001 - stopping must not fail the shutdown
        _log.warning("producer not flushed in time; closing its connections", error=type(exc).__name__)
        with contextlib.suppress(Exception):
            await producer.client.close()
        task: asyncio.Task[None] | None = getattr(getattr(producer, "_sender", None), "sender_task", None)
        for _ in range(_CANCEL_ROUNDS):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait([task], timeout=_CANCEL_WAIT)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: it ended the way it ended, the shutdown goes on
