"""Monitored statistics of one period from the coordination store: tables of counts (suppressed), response
times, SOP compliance and shelter occupancy; exported as the ``alert.statistics`` payload (JSON), CSV and a
self-contained HTML report with bar charts (inline SVG, no script).

What is counted (a case is counted once per table):

* ``arrivals-by-return-post``: cases whose return journey ended (repatriation plan ``completed``) at a
  return post in the period;
* ``open-cases-by-stage``: cases not closed at the end of the period, by the furthest stage they reached;
* ``cases-by-sex-and-age-band``, ``cases-by-exploitation-and-country``, ``cases-by-citizenship``: cases first
  referred in the period, by the variables the Counter Trafficking Data Collaborative publishes (from the
  optional statistical profiles; these three share their grand total, which is locked);
* ``sop-compliance``: SOP step instances due in the period by step and outcome (on time, late, still
  overdue); a rate is published only where at least 11 were due and both counts are published;
* response times: per referred party, 50th and 90th percentile (nearest rank) of the hours from a referral to
  the referred party's first response, only where at least 11 responses were given;
* shelters: capacity, peak occupancy and fewest free beds from the capacity alerts of the period (facility
  figures, as alert.shelter-capacity publishes them).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from gateway.coordination.projection import AGE_BANDS, RANKS
from gateway.coordination.store import Store
from gateway.coordination.suppression import MIN_CELL, SUPPRESSED, CountTable, PublishedTable, suppress

__all__ = [
    "HATCH_DEFS",
    "STAT_TYPE",
    "Period",
    "Statistics",
    "bar_chart",
    "compute",
    "month_of",
    "statistics_alert_id",
]

STAT_TYPE: Final = "id.trafficking.alert.statistics"
_SEXES: Final = ("Feminine", "Masculine", "Other", "Unknown")
_AGES: Final = (*(f"{lo}+" if hi >= 200 else f"{lo}-{hi}" for lo, hi in AGE_BANDS), "Unknown")
_OPEN_STAGES: Final = tuple(
    stage for stage, rank in sorted(RANKS.items(), key=lambda x: x[1]) if stage != "closure"
)
_OUTCOMES: Final = ("on-time", "late", "overdue")
_HATCH: Final = "xchg-suppressed"


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    """Exclusive."""

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m")

    def bounds(self) -> tuple[float, float]:
        return (_epoch(self.start), _epoch(self.end))


def month_of(day: date) -> Period:
    start = day.replace(day=1)
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return Period(start, end)


def statistics_alert_id(party: str, period: Period) -> str:
    return f"STAT-{party.upper().replace('.', '-')}-{period.label}"[:64]


def _epoch(day: date) -> float:
    return datetime.combine(day, datetime.min.time(), UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Statistics:
    party: str
    period: Period
    generated_at: datetime
    tables: tuple[PublishedTable, ...]
    response_times: tuple[dict[str, Any], ...]
    compliance: tuple[dict[str, Any], ...]
    shelters: tuple[dict[str, Any], ...]

    def payload(self) -> dict[str, Any]:
        """The ``alert.statistics`` 1.0 payload."""
        data: dict[str, Any] = {
            "alert_id": statistics_alert_id(self.party, self.period),
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "generated_at": self.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "min_cell": MIN_CELL,
            "tables": [t.to_json() for t in self.tables],
        }
        for key in ("response_times", "compliance", "shelters"):
            if getattr(self, key):
                data[key] = list(getattr(self, key))
        return data

    def digest(self) -> str:
        """Content digest of the figures (not the generation time): republish only when they change."""
        body = self.payload()
        body.pop("generated_at")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["period", "table", "row", "column", "value"])
        for table in self.tables:
            rows = table.rows or ("",)
            for i, row in enumerate(rows):
                for j, column in enumerate(table.columns):
                    writer.writerow([self.period.label, table.id, row, column, table.cells[i][j]])
                if table.row_totals is not None:
                    writer.writerow([self.period.label, table.id, row, "total", table.row_totals[i]])
            if table.column_totals is not None:
                for j, column in enumerate(table.columns):
                    writer.writerow([self.period.label, table.id, "total", column, table.column_totals[j]])
            writer.writerow([self.period.label, table.id, "total", "total", table.total])
        return out.getvalue()

    def to_html(self) -> str:
        """A report page with one bar chart per table (suppressed cells drawn hatched, not as numbers)."""
        parts = [
            "<!doctype html><html lang='en'><meta charset='utf-8'>",
            f"<title>Statistics {html.escape(self.party)} {self.period.label}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.s{color:#999}</style>",
            f"<h1>{html.escape(self.party)}: {self.period.label}</h1>",
            f"<p>Counts of persons below {MIN_CELL} and the cells that would reveal them are shown as "
            "<em>suppressed</em>.</p>",
            HATCH_DEFS,
        ]
        for table in self.tables:
            parts.append(f"<h2>{html.escape(table.id)}</h2>")
            parts.append(bar_chart(table))
            parts.append(_html_table(table))
        if self.shelters:
            parts.append(
                "<h2>Shelter occupancy against capacity</h2><table><tr><th>shelter</th><th>beds</th>"
                "<th>peak occupied</th><th>fewest free</th></tr>"
            )
            for s in self.shelters:
                parts.append(
                    f"<tr><td>{html.escape(s['shelter_id'])}</td><td>{s['capacity_beds']}</td>"
                    f"<td>{s['peak_occupied_beds']}</td><td>{s['min_available_beds']}</td></tr>"
                )
            parts.append("</table>")
        parts.append("</html>\n")
        return "".join(parts)


#: The hatch a suppressed cell's bar is drawn with (:func:`bar_chart`); once per HTML page that shows bars.
HATCH_DEFS: Final = (
    f"<svg width='0' height='0' aria-hidden='true'><defs><pattern id='{_HATCH}' width='6' height='6' "
    "patternUnits='userSpaceOnUse'><path d='M0 6L6 0' stroke='#999'/></pattern></defs></svg>"
)


def bar_chart(table: PublishedTable) -> str:
    """``table`` as a horizontal bar chart (inline SVG, no script): one bar per cell, a suppressed cell as
    a hatched bar labelled ``suppressed``, never a number. The page must hold :data:`HATCH_DEFS` once."""
    labels = [(f"{r} / {c}" if table.rows else c) for r in (table.rows or ("",)) for c in table.columns]
    values = [v for row in table.cells for v in row]
    top = max([v for v in values if isinstance(v, int)] + [MIN_CELL])
    height = 18 * len(values) + 10
    bars = []
    for k, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + 18 * k
        if isinstance(value, int):
            width, fill, text = 300 * value / top, "#4a7ab5", str(value)
        else:
            width, fill, text = 300 * MIN_CELL / top, f"url(#{_HATCH})", SUPPRESSED
        bars.append(
            f"<text x='0' y='{y + 12}' font-size='11'>{html.escape(label)}</text>"
            f"<rect x='220' y='{y}' width='{width:.1f}' height='14' fill='{fill}'/>"
            f"<text x='{225 + width:.1f}' y='{y + 12}' font-size='11'>{text}</text>"
        )
    return (
        f"<svg width='620' height='{height}' viewBox='0 0 620 {height}' role='img' "
        f"aria-label='{html.escape(table.id, quote=True)}'>"
        f"{''.join(bars)}</svg>"
    )


def _html_table(table: PublishedTable) -> str:
    def td(value: Any) -> str:
        return f"<td class='s'>{SUPPRESSED}</td>" if value == SUPPRESSED else f"<td>{value}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for i, label in enumerate(table.rows or ("",)):
        total = td(table.row_totals[i]) if table.row_totals is not None else ""
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(td(v) for v in table.cells[i])}{total}</tr>")
    footer = ""
    if table.column_totals is not None:
        footer = f"<tr><th>total</th>{''.join(td(v) for v in table.column_totals)}{td(table.total)}</tr>"
    else:
        footer = f"<tr><th>total</th>{td(table.total)}</tr>"
    extra = "<th>total</th>" if table.row_totals is not None else ""
    return f"<table><tr><th></th>{head}{extra}</tr>{''.join(rows)}{footer}</table>"


async def compute(store: Store, party: str, period: Period, *, now: datetime | None = None) -> Statistics:
    """Everything in the module docstring, for ``period``, from ``store``."""
    start, end = period.bounds()

    def query(run: Callable[..., Any]) -> dict[str, Any]:
        return {
            "arrivals": run(
                "SELECT place, COUNT(DISTINCT subject) FROM xc_events WHERE stage = 'arrival'"
                " AND at >= ? AND at < ? AND place IS NOT NULL GROUP BY place",
                (start, end),
            ).fetchall(),
            "stages": run(
                "SELECT subject, MAX(stage_rank) FROM xc_events WHERE kind = 'case' AND at < ?"
                " AND stage_rank IS NOT NULL GROUP BY subject",
                (end,),
            ).fetchall(),
            "profiles": run(
                "SELECT sex, age_band, citizenship, exploitation, exploitation_country FROM xc_profiles"
                " WHERE first_at >= ? AND first_at < ?",
                (start, end),
            ).fetchall(),
            "instances": run(
                "SELECT step, state, due, resolved_at FROM xc_instances WHERE due >= ? AND due < ?",
                (start, end),
            ).fetchall(),
            "responses": run(
                "SELECT r.party, r.event_time, MIN(s.event_time) FROM xc_events r JOIN xc_events s"
                " ON s.subject = r.subject AND s.stage = 'response' AND s.source = r.party"
                " AND s.event_time >= r.event_time WHERE r.stage = 'referral' AND r.event_time >= ?"
                " AND r.event_time < ? AND r.party IS NOT NULL GROUP BY r.source, r.event_id,"
                " r.party, r.event_time",
                (start, end),
            ).fetchall(),
            "capacity": run(
                "SELECT place, facts FROM xc_events WHERE stage = 'capacity' AND at >= ? AND at < ?",
                (start, end),
            ).fetchall(),
        }

    rows = await store.call(query)
    tables = [
        _one_dimension("arrivals-by-return-post", "return_post", dict(rows["arrivals"])),
        _one_dimension(
            "open-cases-by-stage",
            "stage",
            Counter(_stage_name(rank) for _, rank in rows["stages"] if rank != RANKS["closure"]),
            order=_OPEN_STAGES,
        ),
    ]
    profiles = rows["profiles"]
    tables.append(
        _two_dimensions(
            "cases-by-sex-and-age-band",
            "sex",
            "age_band",
            Counter((p[0], p[1]) for p in profiles),
            _SEXES,
            _AGES,
        )
    )
    tables.append(
        _two_dimensions(
            "cases-by-exploitation-and-country",
            "exploitation",
            "exploitation_country",
            Counter((p[3], p[4]) for p in profiles),
        )
    )
    tables.append(
        _one_dimension(
            "cases-by-citizenship", "citizenship", Counter(p[2] for p in profiles), lock_total=True
        )
    )
    outcomes: Counter[tuple[str, str]] = Counter()
    for step, state, due, resolved_at in rows["instances"]:
        if state == "met" or (state == "late" and resolved_at is not None and resolved_at <= due):
            outcomes[(step, "on-time")] += 1
        elif state == "late":
            outcomes[(step, "late")] += 1
        elif state == "overdue":
            outcomes[(step, "overdue")] += 1
    compliance_table = _two_dimensions("sop-compliance", "step", "outcome", outcomes, None, _OUTCOMES)
    tables.append(compliance_table)
    return Statistics(
        party=party,
        period=period,
        generated_at=(now or datetime.now(UTC)).astimezone(UTC),
        tables=tuple(tables),
        response_times=_response_times(rows["responses"]),
        compliance=_compliance(compliance_table),
        shelters=_shelters(rows["capacity"]),
    )


def _stage_name(rank: int) -> str:
    return next(stage for stage, r in RANKS.items() if r == rank)


def _one_dimension(
    table_id: str,
    dimension: str,
    counts: Mapping[str, int],
    *,
    order: Sequence[str] | None = None,
    lock_total: bool = False,
) -> PublishedTable:
    columns = tuple(order) if order is not None else tuple(sorted(counts)) or ("none",)
    table = CountTable(
        table_id, columns, (tuple(int(counts.get(c, 0)) for c in columns),), column_dimension=dimension
    )
    return suppress(table, lock_total=lock_total)


def _two_dimensions(  # noqa: PLR0917 - a table is its id, dimensions, counts and labels
    table_id: str,
    row_dimension: str,
    column_dimension: str,
    counts: Mapping[tuple[str, str], int],
    rows: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> PublishedTable:
    row_labels = tuple(rows) if rows is not None else tuple(sorted({r for r, _ in counts})) or ("none",)
    column_labels = (
        tuple(columns) if columns is not None else tuple(sorted({c for _, c in counts})) or ("none",)
    )
    table = CountTable(
        table_id,
        column_labels,
        tuple(tuple(int(counts.get((r, c), 0)) for c in column_labels) for r in row_labels),
        rows=row_labels,
        row_dimension=row_dimension,
        column_dimension=column_dimension,
    )
    return suppress(table, lock_total=table_id.startswith("cases-by-"))


def _nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _response_times(rows: Sequence[Sequence[Any]]) -> tuple[dict[str, Any], ...]:
    hours: dict[str, list[float]] = defaultdict(list)
    for party, referred, answered in rows:
        if answered is not None:
            hours[party].append((answered - referred) / 3600)
    result = []
    for party in sorted(hours):
        values = hours[party]
        entry: dict[str, Any] = {
            "party": party,
            "responses": len(values) if len(values) >= MIN_CELL else SUPPRESSED,
        }
        if len(values) >= MIN_CELL:
            entry["p50_hours"] = round(_nearest_rank(values, 0.5), 1)
            entry["p90_hours"] = round(_nearest_rank(values, 0.9), 1)
        result.append(entry)
    return tuple(result)


def _compliance(table: PublishedTable) -> tuple[dict[str, Any], ...]:
    result = []
    assert table.rows is not None  # noqa: S101 - a two-dimensional table
    assert table.row_totals is not None  # noqa: S101 - same
    on_time = table.columns.index("on-time")
    for i, step in enumerate(table.rows):
        met, total = table.cells[i][on_time], table.row_totals[i]
        if isinstance(met, int) and isinstance(total, int) and total >= MIN_CELL:
            result.append({"step_id": step, "rate": round(met / total, 3)})
    return tuple(result)


def _shelters(rows: Sequence[Sequence[Any]]) -> tuple[dict[str, Any], ...]:
    by_shelter: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for place, facts in rows:
        if place:
            by_shelter[place].append(json.loads(facts))
    result = []
    for shelter in sorted(by_shelter):
        snapshots = [f for f in by_shelter[shelter] if isinstance(f.get("capacity_beds"), int)]
        if not snapshots:
            continue
        capacity = max(int(f["capacity_beds"]) for f in snapshots)
        peak = max(int(f.get("occupied_beds", 0)) for f in snapshots)
        entry = {
            "shelter_id": shelter,
            "capacity_beds": capacity,
            "peak_occupied_beds": peak,
            "min_available_beds": min(int(f.get("available_beds", 0)) for f in snapshots),
        }
        if capacity:
            entry["peak_occupancy"] = round(min(10.0, peak / capacity), 3)
        result.append(entry)
    return tuple(result)
