"""The status page: what one gateway is doing, for the people who run it, in English and Bahasa Indonesia.

Served by the operations server (:mod:`gateway.runtime.ops`, same port, loopback by default) at ``status``:
plain server-rendered HTML, a stylesheet and one small script of our own (``static/status.js``: refresh the
page's content every :attr:`StatusPage.refresh_seconds`; nothing else). No CDN, no third-party code, no
absolute URL: every link and asset is relative, so the page works behind a reverse proxy under any path
prefix. Read-only: it has no form and no method but GET.

What it shows is what ``/metrics`` exports, read from the gateway's own registry at each request
(:func:`read_metrics`), so a metric another component adds (a sink's circuit state, unacknowledged events,
the registry's version) appears here as soon as it is exported under the names in :data:`OPTIONAL_METRICS`.
Every number that comes from a metric is in an element carrying ``data-metric`` (the sample name),
``data-labels`` (``name=value`` pairs, sorted) and ``data-value`` (the exact number), so a test or a script
can compare the page with ``/metrics``. Rates and the charts of the last hour come from :class:`History`, a
bounded ring of snapshots taken every ``interval`` seconds by the ops server's sampler (which also runs the
readiness checks, keeping ``xchg_readiness_check`` fresh for alerting).

Never on the page: an event id, a case id, a payload value, a file name. Labels are the bounded sets the
metrics allow (types, reason codes, sink and source names, topics, partitions, SOP step ids); readiness
details follow ``/readyz``'s rules (ids, counts and reason codes only). Every sentence comes from the console
catalogue (:mod:`gateway.runtime.catalogue`); the language is ``?lang=`` or else ``Accept-Language``.
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry

from gateway.coordination.statistics import Statistics
from gateway.runtime.catalogue import Catalogue
from gateway.runtime.status_sop import sop_section

__all__ = [
    "OPTIONAL_METRICS",
    "CheckpointInfo",
    "History",
    "MetricsSnapshot",
    "StatusFacts",
    "StatusPage",
    "StatusView",
    "collect_checkpoint",
    "read_metrics",
]

#: Metrics the page shows when some component exports them (issues 12 and 13 add them): sink circuit state
#: (1 = open), events sent and not yet acknowledged by a delivery receipt, the registry's version.
OPTIONAL_METRICS: Final = {
    "sink_open": "xchg_sink_circuit_open",
    "unacknowledged": "xchg_unacknowledged_events",
    "registry_version": "xchg_registry_serial",
}

#: Bound on the series kept per snapshot: labels are bounded sets, but a bug must not grow memory.
_MAX_SERIES: Final = 5000
_RATE_WINDOW: Final = 300.0
"""Seconds over which the page's per-minute rates are averaged."""

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]
MetricsSnapshot = dict[Key, float]
"""``{(sample name, sorted labels): value}`` of one moment (``_created`` and histogram buckets left out)."""


def read_metrics(registry: CollectorRegistry) -> MetricsSnapshot:
    """Every sample of ``registry`` as ``/metrics`` shows it, except ``_created`` and ``_bucket`` samples."""
    snapshot: MetricsSnapshot = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            if len(snapshot) >= _MAX_SERIES:
                return snapshot
            snapshot[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return snapshot


def _select(snapshot: Mapping[Key, float], name: str) -> list[tuple[dict[str, str], float]]:
    return sorted(
        ((dict(labels), value) for (sample, labels), value in snapshot.items() if sample == name),
        key=lambda item: sorted(item[0].items()),
    )


def _total(snapshot: Mapping[Key, float], name: str) -> float | None:
    values = [value for (sample, _), value in snapshot.items() if sample == name]
    return sum(values) if values else None


class History:
    """Snapshots of the last ``span`` seconds, one per ``interval`` (a bounded ring), for rates and charts.

    ``clock`` is monotonic seconds (injected in tests)."""

    def __init__(
        self, *, interval: float = 15.0, span: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval <= 0 or span < interval:
            raise ValueError("interval must be positive and at most span")
        self.interval = interval
        self.span = span
        self._clock = clock
        self._points: deque[tuple[float, MetricsSnapshot]] = deque(maxlen=int(span / interval) + 1)

    def record(self, snapshot: MetricsSnapshot) -> None:
        self._points.append((self._clock(), snapshot))

    def __len__(self) -> int:
        return len(self._points)

    def rate(self, name: str, labels: Labels | None = None, window: float = _RATE_WINDOW) -> float | None:
        """Per-minute increase of counter ``name`` (one series, or all summed) over the last ``window``
        seconds of snapshots; None with fewer than two. A counter reset (restart) counts from zero."""
        points = list(self._points)
        if len(points) < 2:
            return None
        newest_at = points[-1][0]
        inside = [p for p in points if newest_at - p[0] <= window + 1e-9]
        if len(inside) < 2:
            inside = points[-2:]
        increase = 0.0
        for (_, before), (_, after) in itertools.pairwise(inside):
            increase += _increase(before, after, name, labels)
        seconds = inside[-1][0] - inside[0][0]
        return increase / seconds * 60.0 if seconds > 0 else None

    def chart(self, name: str, *, counter: bool) -> list[tuple[float, float]]:
        """``(seconds before now, value)`` points of the last ``span``: per-minute rates of a counter between
        consecutive snapshots, or a gauge summed over its labels."""
        points = list(self._points)
        if not points:
            return []
        now = points[-1][0]
        if not counter:
            return [(now - at, _total(snap, name) or 0.0) for at, snap in points]
        result = []
        for (at0, before), (at1, after) in itertools.pairwise(points):
            if at1 > at0:
                result.append((now - at1, _increase(before, after, name, None) / (at1 - at0) * 60.0))
        return result


def _increase(before: MetricsSnapshot, after: MetricsSnapshot, name: str, labels: Labels | None) -> float:
    total = 0.0
    for key, value in after.items():
        if key[0] != name or (labels is not None and key[1] != labels):
            continue
        old = before.get(key, 0.0)
        total += value - old if value >= old else value  # a reset: the process restarted
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """The notary's latest signed checkpoint as the status page shows it (no signature lines)."""

    origin: str
    size: int
    root: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusFacts:
    """What the page shows that is not a metric: the signing key's validity and the registry."""

    kid: str = ""
    key_valid_until: datetime | None = None
    registry_parties: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusView:
    """Everything one rendering needs (built per request by the ops server)."""

    party: str
    version: str
    now: datetime
    snapshot: MetricsSnapshot
    history: History
    facts: StatusFacts
    checks: Sequence[tuple[str, bool, str]]
    failing_tasks: Sequence[Mapping[str, object]]
    checkpoint: CheckpointInfo | bool | None = False
    """The notary's checkpoint; ``None`` when the notary did not answer; ``False`` when none is configured."""
    refresh_seconds: int = 15
    statistics: Statistics | None = None
    """The last completed period's suppressed statistics tables (charted in the SOP section), if any."""


@dataclass(slots=True)
class StatusPage:
    """Renders :class:`StatusView` as HTML in one language, every sentence from ``catalogue``."""

    catalogue: Catalogue = field(default_factory=Catalogue.load)

    def render(self, view: StatusView, lang: str, *, fragment: bool = False) -> str:
        page = _Page(view, lang, self.catalogue)
        body = page.content()
        if fragment:
            return body
        return page.document(body)


# ---- rendering ---------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _labels_attr(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class _Page:
    def __init__(self, view: StatusView, lang: str, catalogue: Catalogue) -> None:
        self.view, self.lang, self.catalogue = view, lang, catalogue
        self.parts: list[str] = []

    # -- helpers
    def t(self, key: str, **fields: Any) -> str:
        return _e(self.catalogue.text(key, self.lang, **fields))

    def has(self, key: str) -> bool:
        return key in self.catalogue.texts

    def number(self, value: float, decimals: int = 0) -> str:
        text = f"{value:,.{decimals}f}"
        if self.lang == "id":  # Indonesian: "." groups thousands, "," marks decimals
            text = text.translate({ord(","): ".", ord("."): ","})
        return text

    def metric(self, name: str, labels: Mapping[str, str], value: float, *, summed: bool = False) -> str:
        """A number taken from ``/metrics``, marked so it can be compared with it (``data-sum``: the sum of
        every series of ``name``)."""
        shown = self.number(value, 0 if float(value).is_integer() else 2)
        total = ' data-sum="1"' if summed else ""
        return (
            f'<span class="num" data-metric="{_e(name)}" data-labels="{_e(_labels_attr(labels))}"{total} '
            f'data-value="{float(value)!r}">{shown}</span>'
        )

    def counted(self, name: str, labels: Mapping[str, str], values: Mapping[str, float], key: str) -> str:
        """``values[key]`` marked as a metric, or a plain 0 when that series does not exist (yet)."""
        return self.metric(name, labels, values[key]) if key in values else "0"

    def rate(self, value: float | None) -> str:
        return "&#8212;" if value is None else _e(self.number(value, 1))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
        if not rows:
            return f'<p class="empty">{self.t("empty_table")}</p>'
        head = "".join(f"<th>{self.t(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    # -- the document
    def document(self, content: str) -> str:
        view = self.view
        other = [code for code in self.catalogue.languages if code != self.lang]
        switch = " ".join(
            f'<a href="?lang={_e(code)}" hreflang="{_e(code)}" lang="{_e(code)}" data-lang="{_e(code)}">'
            f"{_e(self.catalogue.languages[code])}</a>"
            for code in other
        )
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="{_e(self.lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{self.t('title', party=view.party)}</title>"
            '<link rel="stylesheet" href="static/status.css">'
            '<script src="static/status.js" defer></script></head>'
            f'<body data-refresh="{view.refresh_seconds}" data-lang="{_e(self.lang)}">'
            f"<header><h1>{self.t('title', party=view.party)}</h1>"
            f'<p class="subtitle">{self.t("subtitle")}</p>'
            f'<nav class="lang">{self.t("language")}: '
            f"<strong>{_e(self.catalogue.languages[self.lang])}</strong>"
            f" | {switch}</nav></header>"
            f'<main id="content">{content}</main>'
            f"<footer><p>{self.t('read_only')}</p><p>"
            + self.t("raw_links", metrics="@@metrics@@", ready="@@readyz@@", health="@@healthz@@")
            .replace("@@metrics@@", '<a href="metrics">/metrics</a>')
            .replace("@@readyz@@", '<a href="readyz">/readyz</a>')
            .replace("@@healthz@@", '<a href="healthz">/healthz</a>')
            + "</p></footer></body></html>\n"
        )

    def content(self) -> str:
        view = self.view
        when = view.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        self.parts.append(
            f'<p class="generated">{self.t("generated", time=when, seconds=view.refresh_seconds)}</p>'
        )
        self.state()
        self.cards()
        self.identity()
        self.charts()
        self.types()
        self.sinks()
        self.dead_letters()
        self.lag()
        self.quarantine()
        self.parts.append(sop_section(self))  # case coordination (gateway/runtime/status_sop.py)
        self.checks()
        self.tasks()
        return "".join(self.parts)

    # -- sections
    def state(self) -> None:
        view = self.view
        failed = [c for c in view.checks if not c[1]]
        ready = not failed
        alive = not view.failing_tasks
        ready_text = self.t("ready") if ready else self.t("not_ready")
        alive_text = self.t("alive") if alive else self.t("failing")
        explained = self.t("ready_explained") if ready else self.t("not_ready_explained", count=len(failed))
        self.parts.append(
            f'<section class="state {"ok" if ready and alive else "bad"}" id="state">'
            f"<h2>{self.t('state_heading')}</h2>"
            f'<p class="badges"><span class="badge {"ok" if ready else "bad"}" '
            f'data-ready="{str(ready).lower()}">'
            f"{ready_text}</span> "
            f'<span class="badge {"ok" if alive else "bad"}" data-alive="{str(alive).lower()}">'
            f"{alive_text}</span></p>"
            f"<p>{explained}</p></section>"
        )

    def cards(self) -> None:
        snap = self.view.snapshot
        cards: list[tuple[str, str]] = []

        def card(key: str, name: str) -> None:
            total = _total(snap, name)
            if total is None and name not in OPTIONAL_METRICS.values():
                total = 0.0  # this version's metric, no series yet (a labelled counter nothing has counted)
            shown = (
                f'<span class="na">{self.t("not_exported")}</span>'
                if total is None
                else self.metric(name, {}, total, summed=True)
            )
            cards.append((key, shown))

        card("card_outbox", "xchg_outbox_depth")
        card("card_unacknowledged", OPTIONAL_METRICS["unacknowledged"])
        card("card_lag", "xchg_consumer_lag")
        card("card_dead_letters", "xchg_dead_lettered_total")
        card("card_published", "xchg_published_total")
        card("card_accepted", "xchg_accepted_total")
        card("card_delivered", "xchg_delivered_total")
        card("card_quarantined", "xchg_quarantined_total")
        self.parts.append(
            '<section class="cards">'
            + "".join(
                f'<div class="card"><div class="label">{self.t(k)}</div><div class="value">{v}</div></div>'
                for k, v in cards
            )
            + "</section>"
        )

    def identity(self) -> None:
        view, facts = self.view, self.view.facts
        rows: list[tuple[str, str]] = [
            (self.t("party"), f"<code>{_e(view.party)}</code>"),
            (self.t("software_version"), _e(view.version)),
            (self.t("signing_key"), f"<code>{_e(facts.kid)}</code>"),
        ]
        if facts.key_valid_until is None:
            rows.append((self.t("key_valid_until"), self.t("key_no_expiry")))
        else:
            days = math.floor((facts.key_valid_until - view.now).total_seconds() / 86400)
            until = facts.key_valid_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            rows.append((self.t("key_valid_until"), f"{_e(until)} ({self.t('days_left', days=days)})"))
        rows.append((self.t("registry"), self.t("registry_parties", count=facts.registry_parties)))
        version = _select(view.snapshot, OPTIONAL_METRICS["registry_version"])
        rows.append(
            (
                self.t("registry_version"),
                self.metric(OPTIONAL_METRICS["registry_version"], version[0][0], version[0][1])
                if version
                else f'<span class="na">{self.t("not_exported")}</span>',
            )
        )
        checkpoint = view.checkpoint
        if checkpoint is False:
            shown = self.t("checkpoint_not_configured")
        elif checkpoint is None or checkpoint is True:
            shown = self.t("checkpoint_unavailable")
        else:
            shown = self.t(
                "checkpoint_value", size=self.number(checkpoint.size), root=checkpoint.root[:16] + "..."
            )
        rows.append((self.t("checkpoint"), shown))
        body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        self.parts.append(
            f'<section id="identity"><h2>{self.t("identity_heading")}</h2>'
            f'<table class="facts"><tbody>{body}</tbody></table></section>'
        )

    def charts(self) -> None:
        history = self.view.history
        charts = [
            ("chart_published", "xchg_published_total", True),
            ("chart_accepted", "xchg_accepted_total", True),
            ("chart_dead_lettered", "xchg_dead_lettered_total", True),
            ("chart_outbox", "xchg_outbox_depth", False),
            ("chart_lag", "xchg_consumer_lag", False),
        ]
        figures = []
        for key, name, counter in charts:
            points = history.chart(name, counter=counter)
            figures.append(
                f'<figure class="chart" data-chart="{_e(name)}"><figcaption>{self.t(key)}</figcaption>'
                f"{self.svg(points, history.span)}</figure>"
            )
        self.parts.append(
            f'<section id="charts"><h2>{self.t("charts_heading")}</h2>'
            f'<div class="charts">{"".join(figures)}</div></section>'
        )

    def svg(self, points: Sequence[tuple[float, float]], span: float) -> str:
        width, height, pad = 300, 80, 4
        if len(points) < 2:
            return f'<p class="empty">{self.t("chart_empty")}</p>'
        peak = max(value for _, value in points)
        top = peak if peak > 0 else 1.0
        coords = " ".join(
            f"{pad + (width - 2 * pad) * (1 - min(ago, span) / span):.1f},"
            f"{height - pad - (height - 2 * pad) * value / top:.1f}"
            for ago, value in sorted(points, key=lambda p: -p[0])
        )
        latest = points[-1][1] if points[-1][0] <= points[0][0] else points[0][1]
        caption = self.t(
            "chart_latest",
            value=self.number(latest, 0 if latest.is_integer() else 1),
            peak=self.number(peak, 0 if peak.is_integer() else 1),
        )
        return (
            f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{caption}"><rect class="frame" x="0" y="0" width="{width}" height="{height}"/>'
            f'<polyline class="line" points="{coords}"/></svg><p class="chart-note">{caption}</p>'
        )

    def types(self) -> None:
        view = self.view
        out = {labels["type"]: value for labels, value in _select(view.snapshot, "xchg_published_total")}
        into = {labels["type"]: value for labels, value in _select(view.snapshot, "xchg_accepted_total")}
        rows = []
        for event_type in sorted(set(out) | set(into)):
            labels = {"type": event_type}
            key = (("type", event_type),)
            rows.append(
                [
                    f"<code>{_e(event_type)}</code>",
                    self.metric("xchg_published_total", labels, out[event_type])
                    if event_type in out
                    else "0",
                    self.rate(view.history.rate("xchg_published_total", key)),
                    self.metric("xchg_accepted_total", labels, into[event_type])
                    if event_type in into
                    else "0",
                    self.rate(view.history.rate("xchg_accepted_total", key)),
                ]
            )
        minutes = int(_RATE_WINDOW // 60)
        self.parts.append(
            f'<section id="types"><h2>{self.t("types_heading")}</h2>'
            + self.table(["event_type", "out_total", "out_rate", "in_total", "in_rate"], rows)
            + f'<p class="note">{self.t("rate_window", minutes=minutes)}</p></section>'
        )

    def sinks(self) -> None:
        view = self.view
        delivered = {
            labels["sink"]: value for labels, value in _select(view.snapshot, "xchg_delivered_total")
        }
        failures = {
            labels["sink"]: value for labels, value in _select(view.snapshot, "xchg_sink_failures_total")
        }
        circuit = {
            labels.get("sink", ""): value
            for labels, value in _select(view.snapshot, OPTIONAL_METRICS["sink_open"])
        }
        rows = []
        for sink in sorted(set(delivered) | set(failures) | set(circuit)):
            labels = {"sink": sink}
            key = (("sink", sink),)
            if circuit.get(sink, 0.0) >= 1:
                state, css = self.t("sink_open"), "bad"
            elif (view.history.rate("xchg_sink_failures_total", key) or 0) > 0 and not (
                view.history.rate("xchg_delivered_total", key) or 0
            ):
                state, css = self.t("sink_failing"), "bad"
            elif delivered.get(sink, 0) + failures.get(sink, 0) == 0:
                state, css = self.t("sink_idle"), "idle"
            else:
                state, css = self.t("sink_ok"), "ok"
            rows.append(
                [
                    f"<code>{_e(sink)}</code>",
                    self.counted("xchg_delivered_total", labels, delivered, sink),
                    self.counted("xchg_sink_failures_total", labels, failures, sink),
                    f'<span class="badge {css}">{state}</span>',
                ]
            )
        self.parts.append(
            f'<section id="sinks"><h2>{self.t("sinks_heading")}</h2>'
            + self.table(["sink", "delivered", "failures", "sink_state"], rows)
            + "</section>"
        )

    def _by_label(self, section: str, heading: str, name: str, label_keys: Sequence[str]) -> None:
        rows = [
            [*(f"<code>{_e(labels.get(k, ''))}</code>" for k in label_keys), self.metric(name, labels, value)]
            for labels, value in _select(self.view.snapshot, name)
        ]
        headers = [{"reason": "reason", "source": "source", "topic": "topic", "partition": "partition"}[k]
                   for k in label_keys]  # fmt: skip
        self.parts.append(
            f'<section id="{section}"><h2>{self.t(heading)}</h2>'
            + self.table([*headers, "count" if name != "xchg_consumer_lag" else "lag"], rows)
            + "</section>"
        )

    def dead_letters(self) -> None:
        self._by_label("dead-letters", "dead_letters_heading", "xchg_dead_lettered_total", ["reason"])

    def lag(self) -> None:
        self._by_label("lag", "lag_heading", "xchg_consumer_lag", ["topic", "partition"])

    def quarantine(self) -> None:
        self._by_label("quarantine", "quarantine_heading", "xchg_quarantined_total", ["source", "reason"])

    def checks(self) -> None:
        rows = [
            [
                f"<code>{_e(name)}</code>",
                f'<span class="badge {"ok" if ok else "bad"}">'
                f"{self.t('passed') if ok else self.t('failed')}</span>",
                f'<span lang="en">{_e(detail)}</span>',
            ]
            for name, ok, detail in self.view.checks
        ]
        self.parts.append(
            f'<section id="checks"><h2>{self.t("checks_heading")}</h2>'
            + self.table(["check", "result", "detail"], rows)
            + "</section>"
        )

    def tasks(self) -> None:
        rows = [
            [
                f"<code>{_e(labels.get('task', ''))}</code>",
                self.metric("xchg_task_restarts_total", labels, value),
            ]
            for labels, value in _select(self.view.snapshot, "xchg_task_restarts_total")
        ]
        self.parts.append(
            f'<section id="tasks"><h2>{self.t("tasks_heading")}</h2>'
            + self.table(["task", "restarts"], rows)
            + "</section>"
        )


async def collect_checkpoint(fetch: Callable[[], Awaitable[bytes]]) -> CheckpointInfo | None:
    """Parse the first three lines of a C2SP checkpoint note (origin, size, base64 root); None if it fails."""
    try:
        note = await fetch()
        origin, size, root = note.decode("utf-8").split("\n")[:3]
        return CheckpointInfo(origin=origin, size=int(size), root=root)
    except Exception:  # noqa: BLE001 - the notary being away or answering nonsense is shown, not raised
        return None
