"""Prometheus metrics of the case-coordination layer, on the gateway's own registry.

:class:`CoordinationMetrics` registers its series on the registry of the gateway it runs in (the runtime
passes ``GatewayMetrics.registry``, as the consent gate does for ``xchg_withheld_total``), so ``/metrics``
and the status page (:mod:`gateway.runtime.status`) show them with everything else. A :class:`Coordinator`
built without one (tests, tools) gets a private registry.

What they count, and when (docs/OPERATIONS_HTTP.md, "Metrics"):

* ``xchg_sop_steps_open{step}`` / ``xchg_sop_steps_overdue{step}``: SOP step instances not yet closed, and of
  them those past their deadline, recounted from the store after each commit that opened or closed a step
  and after each tick of the SOP engine (so they survive restarts and follow retention);
* ``xchg_sop_escalations_total{step}``: steps found overdue by the engine (once per step instance: the
  store's conditional ``open -> overdue`` update; with ``sop_alerts`` each gets an ``alert.sop-overdue``);
* ``xchg_sop_resolutions_total{step,outcome}``: steps closed, ``met`` (in time) or ``late``, counted after
  their transaction committed;
* ``xchg_statistics_published_total`` and ``xchg_statistics_period_timestamp_seconds`` /
  ``xchg_statistics_published_timestamp_seconds``: figures of a month published (the alert accepted by the
  outbox and/or the report files written), the start of the latest such month and when it happened.

Labels: ``step`` is a step id of the SOP document (a bounded set the ministry writes; every step of the
loaded SOP is declared at 0 so that rates and the page see it before it first moves) and ``outcome`` is
``met`` or ``late``. Never a case id, an alert id, a party of a case or any payload value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["OUTCOMES", "CoordinationMetrics"]

#: Values of the ``outcome`` label of ``xchg_sop_resolutions_total``.
OUTCOMES: Final = ("met", "late")


class CoordinationMetrics:
    """The coordination layer's metrics, registered on ``registry`` (see the module docstring)."""

    __slots__ = (
        "escalations",
        "overdue",
        "registry",
        "resolutions",
        "statistics_period",
        "statistics_published",
        "statistics_published_at",
        "steps",
        "unresolved",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.steps: set[str] = set()
        self.unresolved = Gauge(
            "xchg_sop_steps_open",
            "SOP step instances not yet closed (in time or overdue), by step of the SOP document.",
            ["step"],
            registry=r,
        )
        self.overdue = Gauge(
            "xchg_sop_steps_overdue",
            "SOP step instances past their deadline and not yet closed, by step.",
            ["step"],
            registry=r,
        )
        self.escalations = Counter(
            "xchg_sop_escalations_total",
            "SOP step instances found overdue by the SOP engine (escalated with alert.sop-overdue).",
            ["step"],
            registry=r,
        )
        self.resolutions = Counter(
            "xchg_sop_resolutions_total",
            "SOP step instances closed by their expected event, in time (met) or after the deadline (late).",
            ["step", "outcome"],
            registry=r,
        )
        self.statistics_published = Counter(
            "xchg_statistics_published_total",
            "Monthly suppressed statistics published (alert.statistics accepted and/or report files written)",
            registry=r,
        )
        self.statistics_period = Gauge(
            "xchg_statistics_period_timestamp_seconds",
            "Start of the month whose statistics were published last (Unix time; 0: none yet).",
            registry=r,
        )
        self.statistics_published_at = Gauge(
            "xchg_statistics_published_timestamp_seconds",
            "When statistics were last published (Unix time of the coordination clock; 0: none yet).",
            registry=r,
        )

    def declare(self, steps: Iterable[str]) -> None:
        """Create every series of ``steps`` at 0 (the steps of the loaded SOP document)."""
        for step in steps:
            self._declare(step)

    def _declare(self, step: str) -> None:
        if step in self.steps:
            return
        self.steps.add(step)
        self.unresolved.labels(step=step).set(0)
        self.overdue.labels(step=step).set(0)
        self.escalations.labels(step=step)
        for outcome in OUTCOMES:
            self.resolutions.labels(step=step, outcome=outcome)

    def set_unresolved(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Set the gauges from ``{(step, state): instances}`` of the unresolved states ``open`` and
        ``overdue`` (:meth:`gateway.coordination.store.Session.unresolved_counts`); absent steps are 0."""
        for step, _ in counts:
            self._declare(step)
        for step in self.steps:
            overdue = counts.get((step, "overdue"), 0)
            self.unresolved.labels(step=step).set(counts.get((step, "open"), 0) + overdue)
            self.overdue.labels(step=step).set(overdue)

    def escalated(self, step: str) -> None:
        self._declare(step)
        self.escalations.labels(step=step).inc()

    def resolved(self, step: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        self._declare(step)
        self.resolutions.labels(step=step, outcome=outcome).inc()

    def published(self, period_start: float, at: float) -> None:
        """Statistics of the month starting at ``period_start`` were published at ``at`` (Unix times)."""
        self.statistics_published.inc()
        self.statistics_period.set(period_start)
        self.statistics_published_at.set(at)
