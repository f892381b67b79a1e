"""The ``[coordination]`` table of a gateway configuration (docs/CONFIGURATION.md), read with ``Table``.

Absent table: no coordination store, no SOP engine, no statistics (the gateway only moves messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.coordination.sop import DEFAULT_SOP
from gateway.settings import Table

__all__ = ["CoordinationConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinationConfig:
    store: str = "sqlite"
    """``sqlite`` (a file under the data folder) or ``postgresql`` (``dsn_file``)."""
    path: Path = Path("coordination.db")
    dsn_file: Path | None = None
    sop: Path | None = DEFAULT_SOP
    """The SOP document; None: no SOP engine (timeline and statistics only)."""
    sop_alerts: bool = False
    """Publish ``alert.sop-overdue``: set it in ONE gateway per SOP (the coordinating party's)."""
    tick_seconds: float = 60.0
    profiles: bool = False
    """Keep the coarse statistical profile of referred cases (docs/PRIVACY.md)."""
    statistics: bool = False
    """Publish ``alert.statistics`` for every completed month."""
    report_dir: Path | None = None
    """Write ``statistics-<period>.{json,csv,html}`` here for every completed month."""
    retention_days: int = 5 * 365
    flush_ms: float = 20.0
    """Group commit of the timeline: events are committed at most this long after they were accepted or
    published (0: each before the next, at about half the throughput; docs/PERFORMANCE.md). A crash loses
    at most this window from the timeline, never from the exchange or the agency systems."""

    @classmethod
    def from_table(cls, table: Table, *, data_dir: Path) -> CoordinationConfig:
        store = table.string("store", "sqlite", choices=("sqlite", "postgresql"))
        path = table.path("path", None) or data_dir / "coordination.db"
        dsn_file = table.path("dsn_file", None)
        if store == "postgresql" and dsn_file is None:
            raise table.fail(
                "dsn_file", "required for store = 'postgresql' (a file holding the connection string)"
            )
        sop_value = table.raw("sop")
        sop: Path | None = DEFAULT_SOP
        if sop_value == "":
            sop = None
        elif sop_value is not None:
            sop = table.path("sop")
        config = cls(
            store=store,
            path=path,
            dsn_file=dsn_file,
            sop=sop,
            sop_alerts=table.boolean("sop_alerts", False),
            tick_seconds=table.number("tick_seconds", 60.0, positive=True),
            profiles=table.boolean("profiles", False),
            statistics=table.boolean("statistics", False),
            report_dir=table.path("report_dir", None),
            retention_days=table.integer("retention_days", 5 * 365, low=1, high=100 * 365),
            flush_ms=table.number("flush_ms", 20.0, low=0, high=10_000),
        )
        table.refuse_unknown()
        return config
