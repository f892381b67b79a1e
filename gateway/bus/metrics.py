"""Prometheus metrics of one gateway, on a registry of its own.

Why a registry per gateway: tests, the demo and the benchmarks run several gateways (Kemensos, a KBRI, IOM)
in one process. Metrics on ``prometheus_client``'s global default registry would be shared (and counted
twice), and registering the same name twice raises. So :class:`GatewayMetrics` owns a
``CollectorRegistry``; its ``/metrics`` endpoint (:mod:`gateway.runtime.ops`) exports exactly that gateway's
numbers. For the same reason no metric carries a ``party`` label: one registry is one party, named once in
``xchg_gateway_info{party,version}``.

Label values are bounded sets, never event data: message types, reason codes (:class:`gateway.errors.Reason`),
sink and source names, topic and partition. Never use an event id, case id or any payload value as a label
(unbounded cardinality, and a case id is a pseudonymous personal identifier).

Callers use the typed attributes directly, e.g. ``metrics.rejected.labels(reason=rejection.reason).inc()``
(a ``StrEnum`` value is its code) or ``metrics.publish_latency.observe(seconds)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from gateway import __version__

__all__ = ["LATENCY_BUCKETS", "METRICS_CONTENT_TYPE", "SINK_STATES", "GatewayMetrics", "SinkStates"]

#: The states of a sink's circuit breaker (gateway/bus/breaker.py), as ``xchg_sink_state{state}`` labels.
SINK_STATES: Final = ("closed", "open", "half-open")

SinkStates = Callable[[], Sequence[tuple[str, str, int, float, int]]]
"""Per sink: name, breaker state, transient failures in a row, outage seconds, events waiting for it."""

#: Latency buckets (seconds) from 1 ms to 60 s: local publishes ack in milliseconds, a delivery that waited
#: for a sink retry or a consumer rebalance takes seconds, and anything past a minute is an incident anyway.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: Content type of :meth:`GatewayMetrics.render` (the classic Prometheus text format, version 0.0.4).
METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4


class GatewayMetrics:
    """Every metric one gateway exports, registered on its own :attr:`registry`."""

    __slots__ = (
        "_sinks",
        "accepted",
        "consumer_lag",
        "dead_lettered",
        "delivered",
        "delivery_latency",
        "duplicates",
        "info",
        "outbox_depth",
        "party",
        "publish_latency",
        "published",
        "quarantined",
        "readiness",
        "receipts_issued",
        "receipts_received",
        "redriven",
        "registry",
        "registry_applied",
        "registry_expires",
        "registry_refused",
        "registry_serial",
        "registry_stale",
        "registry_stale_verifications",
        "rejected",
        "signing_key_expiry",
        "sink_failures",
        "task_restarts",
        "unacknowledged",
        "undelivered",
    )

    def __init__(self, *, party: str, version: str = __version__) -> None:
        self.party = party
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        self.info = Info("xchg_gateway", "The gateway's party id and software version.", registry=r)
        self.info.info({"party": party, "version": version})

        # producer side
        self.published = Counter(
            "xchg_published_total", "Events published and acknowledged by the broker.", ["type"], registry=r
        )
        self.publish_latency = Histogram(
            "xchg_publish_latency_seconds",
            "Time from the publish() call to the broker's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "xchg_outbox_depth", "Events in the outbox not yet acknowledged by the broker.", registry=r
        )
        self.quarantined = Counter(
            "xchg_quarantined_total",
            "Adapter source rows that could not be mapped to an event and were set aside.",
            ["source", "reason"],
            registry=r,
        )

        # consumer side
        self.accepted = Counter(
            "xchg_accepted_total", "Consumed events that passed verification.", ["type"], registry=r
        )
        self.rejected = Counter(
            "xchg_rejected_total",
            "Consumed records that failed verification, by reason code.",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "xchg_dead_lettered_total",
            "Records written to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "xchg_duplicates_total",
            "Consumed events dropped as duplicates of an already handled id.",
            registry=r,
        )
        self.delivered = Counter(
            "xchg_delivered_total", "Events delivered to the agency's sink.", ["sink"], registry=r
        )
        self.sink_failures = Counter(
            "xchg_sink_failures_total", "Failed attempts to deliver an event to a sink.", ["sink"], registry=r
        )
        self.consumer_lag = Gauge(
            "xchg_consumer_lag",
            "Records between the committed offset and the end of the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "xchg_delivery_latency_seconds",
            "Time from the event's CloudEvents time to its delivery to the agency's sink.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # sink outages (gateway/bus/breaker.py): read from the subscriber at each scrape
        self._sinks: list[SinkStates] = []
        r.register(_SinkCollector(self._sinks))
        self.redriven = Counter(
            "xchg_redriven_total",
            "Dead letters handed back by `gateway dlq redrive`, by result.",
            ["result"],
            registry=r,
        )

        # delivery receipts (gateway/bus/receipts.py)
        self.receipts_issued = Counter(
            "xchg_receipts_issued_total",
            "Signed delivery receipts this gateway issued for events it finished, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.receipts_received = Counter(
            "xchg_receipts_received_total",
            "Delivery receipts for this gateway's own events, matched to its outbox, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.unacknowledged = Gauge(
            "xchg_unacknowledged_events",
            "Own events published longer ago than receipts.unacknowledged_after_seconds that still lack a "
            "receipt from a recipient they expect one from.",
            registry=r,
        )
        self.undelivered = Gauge(
            "xchg_undelivered_events",
            "Own events a recipient reported rejected or dead-lettered (and has not since delivered), by the "
            "outcome it reported.",
            ["outcome"],
            registry=r,
        )

        # the signed registry in force (gateway/runtime/trust.py, docs/REGISTRY.md)
        self.registry_serial = Gauge(
            "xchg_registry_serial", "Serial of the registry version in force (0: none).", registry=r
        )
        self.registry_expires = Gauge(
            "xchg_registry_expiry_timestamp_seconds",
            "When the registry version in force expires (POSIX seconds).",
            registry=r,
        )
        self.registry_stale = Gauge(
            "xchg_registry_stale", "1 while the registry version in force is past its expiry.", registry=r
        )
        self.registry_applied = Counter(
            "xchg_registry_applied_total", "Registry versions verified and put in force.", registry=r
        )
        self.registry_refused = Counter(
            "xchg_registry_refused_total",
            "Registry versions refused (not trusted), by reason code.",
            ["reason"],
            registry=r,
        )
        self.registry_stale_verifications = Counter(
            "xchg_registry_stale_verifications_total",
            "Records verified while the registry version in force was past its expiry.",
            registry=r,
        )

        # supervision (gateway/runtime/supervisor.py)
        self.task_restarts = Counter(
            "xchg_task_restarts_total",
            "Restarts of a long-running task (sender, consumer, a source) after it raised.",
            ["task"],
            registry=r,
        )

        # operations (gateway/runtime/ops.py): what alert rules need besides the counters above
        self.readiness = Gauge(
            "xchg_readiness_check",
            "1 while a readiness check passes, 0 while it fails (as of the last /readyz or status sample).",
            ["check"],
            registry=r,
        )
        self.signing_key_expiry = Gauge(
            "xchg_signing_key_expiry_timestamp_seconds",
            "When the gateway's signing key expires or is revoked (Unix time; absent: never).",
            ["kid"],
            registry=r,
        )

    def watch_sinks(self, states: SinkStates) -> None:
        """Export the sinks' breaker states from ``states()`` (the subscriber's) at every scrape."""
        self._sinks[:] = [states]

    def sink_states(self) -> list[tuple[str, str, int, float, int]]:
        """The watched sinks' states (name, state, failures in a row, outage seconds, waiting events)."""
        return [row for states in self._sinks for row in states()]

    def observe_delivery(self, event_time: datetime, *, now: datetime | None = None) -> float:
        """Record the latency of an event delivered ``now``; returns the seconds observed.

        ``event_time`` is the CloudEvents ``time`` (whole seconds, set by another agency's clock), so small
        negative differences are clock skew: they count as 0 rather than being dropped.
        """
        delivered = now or datetime.now(UTC)
        seconds = max(0.0, (delivered - event_time).total_seconds())
        self.delivery_latency.observe(seconds)
        return seconds

    def render(self) -> bytes:
        """This gateway's metrics in the Prometheus text format (:data:`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _SinkCollector(Collector):
    """``xchg_sink_state{sink,state}`` (1 for the current state), ``xchg_sink_circuit_open{sink}`` (1 unless
    closed), ``xchg_sink_consecutive_failures{sink}``,
    ``xchg_sink_outage_seconds{sink}`` and ``xchg_sink_waiting_events{sink}``, computed at scrape time (an
    open breaker turns half-open with time, not with an event)."""

    def __init__(self, sources: list[SinkStates]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = [row for states in self._sources for row in states()]
        state = GaugeMetricFamily(
            "xchg_sink_state",
            "Circuit breaker state of each sink (1 for the current one).",
            labels=["sink", "state"],
        )
        failures = GaugeMetricFamily(
            "xchg_sink_consecutive_failures",
            "Transient delivery failures in a row, per sink.",
            labels=["sink"],
        )
        outage = GaugeMetricFamily(
            "xchg_sink_outage_seconds",
            "Seconds since the first failure of the sink's current outage (0 when it is up).",
            labels=["sink"],
        )
        waiting = GaugeMetricFamily(
            "xchg_sink_waiting_events",
            "Events at the head of a paused partition waiting for the sink.",
            labels=["sink"],
        )
        circuit = GaugeMetricFamily(
            "xchg_sink_circuit_open",
            "1 while the sink's circuit breaker is open or half-open (its system is down), else 0.",
            labels=["sink"],
        )
        for name, current, in_a_row, seconds, heads in rows:
            circuit.add_metric([name], 0.0 if current == "closed" else 1.0)
            for candidate in SINK_STATES:
                state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
            failures.add_metric([name], float(in_a_row))
            outage.add_metric([name], seconds)
            waiting.add_metric([name], float(heads))
        yield from (state, circuit, failures, outage, waiting)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
