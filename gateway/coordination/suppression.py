"""Small-count suppression with complementary suppression, for tables of counts of persons.

Rules (docs/COORDINATION.md, "Statistics"; the Counter Trafficking Data Collaborative publishes with
k = 11):

* **Primary**: every count from 1 to 10 is suppressed, totals included. Zero is published as 0 (the project's
  convention for counts of persons, as in ``suppressedCount``).
* **Complementary**: a suppressed cell must not be recoverable from the published cells and totals. The
  table with its margins is an (m+1) x (n+1) grid in which every row and every column (totals included)
  is one linear equation. A suppressed cell cannot be recovered if it lies on a *cycle* of suppressed
  cells (alternating along rows and columns, margins included) all of whose values are at least 1: adding
  +d and -d alternately around the cycle keeps every equation, and keeps every value non-negative for
  d in [-1, 1], so at least three values remain possible for each cell on it. For every suppressed cell
  that is on no such cycle (a *bridge* of the graph of suppressed cells), the cheapest path of cells
  closing a cycle through it is suppressed as well (Dijkstra; cost = the value, so small cells are given
  up first; zeros cannot hide anything and are never chosen). Repeated until no bridge is left.
* A one-dimensional table is one equation: it needs at least two suppressed cells (or none).
* ``lock_total``: the grand total is shared by several tables of one statistics event; it is never chosen as
  a complementary cell (it is suppressed only when it is itself 1 to 10), so every table agrees on it.

The property test (tests/unit/coordination/test_suppression.py) checks this with an independent attacker: a
linear program (HiGHS, via scipy) computes the smallest and largest value each suppressed cell can take
given everything published, over 10,000+ synthetic cases; no suppressed cell may be pinned to one value.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MIN_CELL", "SUPPRESSED", "CountTable", "PublishedTable", "suppress"]

MIN_CELL: Final = 11
SUPPRESSED: Final = "suppressed"
Cell = int | str


@dataclass(frozen=True, slots=True)
class CountTable:
    """Counts of persons: ``counts[row][column]``; ``rows`` is None for a one-dimensional table (one row)."""

    id: str
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    rows: tuple[str, ...] | None = None
    row_dimension: str | None = None
    column_dimension: str | None = None


@dataclass(frozen=True, slots=True)
class PublishedTable:
    id: str
    columns: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]
    total: Cell
    rows: tuple[str, ...] | None = None
    row_totals: tuple[Cell, ...] | None = None
    column_totals: tuple[Cell, ...] | None = None
    row_dimension: str | None = None
    column_dimension: str | None = None
    suppressed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.row_dimension:
            out["row_dimension"] = self.row_dimension
        if self.column_dimension:
            out["column_dimension"] = self.column_dimension
        if self.rows is not None:
            out["rows"] = list(self.rows)
        out["columns"] = list(self.columns)
        out["cells"] = [list(row) for row in self.cells]
        if self.row_totals is not None:
            out["row_totals"] = list(self.row_totals)
        if self.column_totals is not None:
            out["column_totals"] = list(self.column_totals)
        out["total"] = self.total
        return out


def _primary(value: int) -> bool:
    return 1 <= value < MIN_CELL


def suppress(table: CountTable, *, lock_total: bool = False) -> PublishedTable:
    """The publishable form of ``table`` (see the module docstring)."""
    if table.rows is None:
        return _suppress_1d(table, lock_total=lock_total)
    return _suppress_2d(table, lock_total=lock_total)


def _suppress_1d(table: CountTable, *, lock_total: bool) -> PublishedTable:
    counts = list(table.counts[0]) if table.counts else [0] * len(table.columns)
    values = [*counts, sum(counts)]  # the total is the last "cell" of the one equation
    total_index = len(values) - 1
    hidden = {i for i, v in enumerate(values) if _primary(v)}
    if len(hidden) == 1:
        candidates = [
            (v, i)
            for i, v in enumerate(values)
            if i not in hidden and v >= 1 and not (lock_total and i == total_index)
        ]
        if candidates:
            hidden.add(min(candidates)[1])
    cells = tuple(SUPPRESSED if i in hidden else v for i, v in enumerate(values))
    return PublishedTable(
        id=table.id,
        columns=table.columns,
        cells=(cells[:-1],),
        total=cells[-1],
        column_dimension=table.column_dimension,
        suppressed=len(hidden),
    )


def _suppress_2d(table: CountTable, *, lock_total: bool) -> PublishedTable:
    m, n = len(table.counts), len(table.columns)
    grid = [[*row, sum(row)] for row in table.counts]
    grid.append([sum(grid[i][j] for i in range(m)) for j in range(n + 1)])
    locked = {(m, n)} if lock_total and not _primary(grid[m][n]) else set()
    hidden = {(i, j) for i in range(m + 1) for j in range(n + 1) if _primary(grid[i][j])}
    while True:
        bridge = next((cell for cell in sorted(hidden) if not _on_cycle(cell, hidden)), None)
        if bridge is None:
            break
        path = _cheapest_path(grid, hidden, locked, bridge)
        if path is None:  # cannot protect it: withhold every non-zero cell but the locked total
            hidden |= {
                (i, j) for i in range(m + 1) for j in range(n + 1) if grid[i][j] >= 1 and (i, j) not in locked
            }
            break
        hidden |= path

    def cell(i: int, j: int) -> Cell:
        return SUPPRESSED if (i, j) in hidden else grid[i][j]

    return PublishedTable(
        id=table.id,
        rows=table.rows,
        columns=table.columns,
        cells=tuple(tuple(cell(i, j) for j in range(n)) for i in range(m)),
        row_totals=tuple(cell(i, n) for i in range(m)),
        column_totals=tuple(cell(m, j) for j in range(n)),
        total=cell(m, n),
        row_dimension=table.row_dimension,
        column_dimension=table.column_dimension,
        suppressed=len(hidden),
    )


def _on_cycle(edge: tuple[int, int], hidden: set[tuple[int, int]]) -> bool:
    """Is ``edge`` (row, column) on a cycle of the bipartite graph whose edges are ``hidden``?"""
    start, goal = ("r", edge[0]), ("c", edge[1])
    adjacency: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for i, j in hidden:
        if (i, j) == edge:
            continue
        adjacency.setdefault(("r", i), []).append(("c", j))
        adjacency.setdefault(("c", j), []).append(("r", i))
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        if node == goal:
            return True
        for nxt in adjacency.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return False


def _cheapest_path(
    grid: Sequence[Sequence[int]],
    hidden: set[tuple[int, int]],
    locked: set[tuple[int, int]],
    edge: tuple[int, int],
) -> set[tuple[int, int]] | None:
    """The cells of the cheapest row-column path from ``edge``'s row to its column, avoiding ``edge``."""
    rows, cols = len(grid), len(grid[0])
    start, goal = ("r", edge[0]), ("c", edge[1])
    counter = itertools.count()
    best: dict[tuple[str, int], float] = {start: 0.0}
    previous: dict[tuple[str, int], tuple[tuple[str, int], tuple[int, int]]] = {}
    queue: list[tuple[float, int, tuple[str, int]]] = [(0.0, next(counter), start)]
    while queue:
        cost, _, node = heapq.heappop(queue)
        if node == goal:
            path = set()
            while node != start:
                node, cell = previous[node]
                path.add(cell)
            return path
        if cost > best.get(node, float("inf")):
            continue
        side, index = node
        neighbours = (
            [(("c", j), (index, j)) for j in range(cols)]
            if side == "r"
            else [(("r", i), (i, index)) for i in range(rows)]
        )
        for nxt, cell in neighbours:
            if cell == edge or cell in locked:
                continue
            value = grid[cell[0]][cell[1]]
            if cell in hidden:
                step = 0.001  # already suppressed: free, but prefer short cycles
            elif value >= 1:
                step = float(value)
            else:
                continue  # a zero hides nothing
            total = cost + step
            if total < best.get(nxt, float("inf")):
                best[nxt] = total
                previous[nxt] = (node, cell)
                heapq.heappush(queue, (total, next(counter), nxt))
    return None
