"""The status page's "Case coordination (SOP)" section: the coordination layer's metrics, and the charts of
the last completed month's (suppressed) statistics tables.

:func:`sop_section` is called by :mod:`gateway.runtime.status` with its page (the catalogue, number format
and metric marking of one rendering). It reads the series :class:`gateway.coordination.metrics.
CoordinationMetrics` exports: per SOP step the steps open and overdue (gauges), the escalations and the
resolutions in time or late (counters), the compliance that follows from them, a chart of the overdue steps
over the last hour (from the page's :class:`~gateway.runtime.status.History`), and when the monthly
statistics were last published; then one bar chart per statistics table of the last completed month
(``StatusView.statistics``: the same suppressed tables as the signed ``alert.statistics``, so no count of 1
to 10 persons is drawn). A gateway without a ``[coordination]`` table exports none of them: the section then
says there is nothing to show yet.

Compliance is ``met / (met + escalations)``: a step counts as complied with when it was closed in time, as
breached when the engine found it overdue (closed late since, or still open). Both are counters of this
process, so the figure covers the time since the gateway started (Prometheus computes it over any window,
docs/MONITORING.md). Labels are SOP step ids (the SOP document's, a bounded set); no case id, alert id or
payload value reaches the metrics, so none can reach this section.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.coordination.statistics import HATCH_DEFS, bar_chart
from gateway.coordination.suppression import MIN_CELL

if TYPE_CHECKING:
    from gateway.runtime.status import StatusView

__all__ = ["SOP_METRICS", "sop_section"]

#: The series the section reads (exported by gateway.coordination.metrics when coordination is configured).
SOP_METRICS: Final = {
    "open": "xchg_sop_steps_open",
    "overdue": "xchg_sop_steps_overdue",
    "escalations": "xchg_sop_escalations_total",
    "resolutions": "xchg_sop_resolutions_total",
    "published": "xchg_statistics_published_total",
    "period": "xchg_statistics_period_timestamp_seconds",
    "published_at": "xchg_statistics_published_timestamp_seconds",
}


class Page(Protocol):
    """What the section uses of the status page's renderer (``gateway.runtime.status._Page``)."""

    @property
    def view(self) -> StatusView: ...

    def t(self, key: str, **fields: Any) -> str: ...

    def has(self, key: str) -> bool: ...

    def number(self, value: float, decimals: int = 0) -> str: ...

    def metric(self, name: str, labels: Mapping[str, str], value: float, *, summed: bool = False) -> str: ...

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str: ...

    def svg(self, points: Sequence[tuple[float, float]], span: float) -> str: ...


def _by_step(snapshot: Mapping[tuple[str, Any], float], name: str, **where: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (sample, labels), value in snapshot.items():
        label = dict(labels)
        if sample == name and "step" in label and all(label.get(k) == v for k, v in where.items()):
            found[label["step"]] = value
    return found


def sop_section(page: Page) -> str:
    """The section's HTML (``<section id="coordination">``)."""
    snapshot = page.view.snapshot
    names = {sample for sample, _ in snapshot}
    heading = f"<h2>{page.t('sop_heading')}</h2>"
    if not names & set(SOP_METRICS.values()):
        return (
            f'<section id="coordination">{heading}<p class="empty">{page.t("empty_table")}</p>'
            f'<p class="note">{page.t("sop_not_configured")}</p></section>'
        )
    unresolved = _by_step(snapshot, SOP_METRICS["open"])
    overdue = _by_step(snapshot, SOP_METRICS["overdue"])
    escalations = _by_step(snapshot, SOP_METRICS["escalations"])
    met = _by_step(snapshot, SOP_METRICS["resolutions"], outcome="met")
    late = _by_step(snapshot, SOP_METRICS["resolutions"], outcome="late")

    def cell(name: str, values: Mapping[str, float], step: str, **labels: str) -> str:
        if step not in values:
            return "0"
        return page.metric(name, {"step": step, **labels}, values[step])

    rows = []
    for step in sorted(set(unresolved) | set(overdue) | set(escalations) | set(met) | set(late)):
        rows.append(
            [
                f"<code>{_e(step)}</code>",
                cell(SOP_METRICS["open"], unresolved, step),
                cell(SOP_METRICS["overdue"], overdue, step),
                cell(SOP_METRICS["escalations"], escalations, step),
                cell(SOP_METRICS["resolutions"], met, step, outcome="met"),
                cell(SOP_METRICS["resolutions"], late, step, outcome="late"),
                _compliance(page, met.get(step, 0.0), escalations.get(step, 0.0)),
            ]
        )
    table = page.table(
        ["sop_step", "sop_open", "sop_overdue", "sop_escalations", "sop_met", "sop_late", "sop_compliance"],
        rows,
    )
    summary = page.t(
        "sop_summary",
        overdue="@@overdue@@",
        open="@@open@@",
        compliance="@@compliance@@",
    )
    summary = (
        summary.replace("@@overdue@@", _summed(page, "overdue", overdue))
        .replace("@@open@@", _summed(page, "open", unresolved))
        .replace("@@compliance@@", _compliance(page, sum(met.values()), sum(escalations.values())))
    )
    history = page.view.history
    chart = (
        f'<figure class="chart" data-chart="{SOP_METRICS["overdue"]}">'
        f"<figcaption>{page.t('sop_chart_overdue')}</figcaption>"
        f"{page.svg(history.chart(SOP_METRICS['overdue'], counter=False), history.span)}</figure>"
    )
    return (
        f'<section id="coordination">{heading}<p class="sop-summary">{summary}</p>{table}'
        f'<p class="note">{page.t("sop_compliance_note")}</p>'
        f'<div class="charts">{chart}</div>{_statistics(page)}</section>'
    )


def _summed(page: Page, key: str, values: Mapping[str, float]) -> str:
    return page.metric(SOP_METRICS[key], {}, sum(values.values()), summed=True)


def _compliance(page: Page, met: float, escalations: float) -> str:
    due = met + escalations
    if due <= 0:
        return "&#8212;"
    share = 100.0 * met / due
    return _e(page.number(share, 0 if share.is_integer() else 1)) + "&#8239;%"


def _statistics(page: Page) -> str:
    snapshot = page.view.snapshot
    count = snapshot.get((SOP_METRICS["published"], ()), 0.0)
    period = snapshot.get((SOP_METRICS["period"], ()), 0.0)
    at = snapshot.get((SOP_METRICS["published_at"], ()), 0.0)
    if count <= 0 or period <= 0:
        shown = page.t("sop_statistics_none")
    else:
        shown = page.t(
            "sop_statistics_value",
            period=datetime.fromtimestamp(period, UTC).strftime("%Y-%m"),
            time=datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M"),
            count="@@count@@",
        ).replace("@@count@@", page.metric(SOP_METRICS["published"], {}, count))
    return f'<p class="sop-statistics">{page.t("sop_statistics")}: {shown}</p>{_statistics_charts(page)}'


def _statistics_charts(page: Page) -> str:
    """The last completed period's tables as bar charts: suppressed counts, never below 11 (a suppressed cell
    is a hatched bar labelled as such). Titles from the catalogue; a table it does not name shows its id."""
    stats = page.view.statistics
    if stats is None or not stats.tables:
        return ""
    figures = []
    for table in stats.tables:
        key = f"stat_{table.id}"
        title = page.t(key) if page.has(key) else _e(table.id)
        figures.append(
            f'<figure class="chart bars" data-table="{_e(table.id)}"><figcaption>{title}</figcaption>'
            f"{bar_chart(table)}</figure>"
        )
    caption = page.t("sop_statistics_charts", period=stats.period.label, minimum=MIN_CELL)
    return f'<p class="note">{caption}</p>{HATCH_DEFS}<div class="charts">{"".join(figures)}</div>'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
