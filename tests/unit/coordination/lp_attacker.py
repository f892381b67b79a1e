"""An independent attacker for published statistics: a linear program (HiGHS, via scipy) that computes the
smallest and largest value every suppressed cell can take given everything published in one statistics
event (cells, row, column and grand totals; the ``cases-by-*`` tables share their grand total). It shares no
code with gateway/coordination/suppression.py: it reads the published JSON only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linprog

SUPPRESSED = "suppressed"
SHARED_TOTAL = "cases-by-"


def recovered_cells(tables: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of suppressed cells whose value is pinned to one number by the published figures."""
    variables: dict[str, int] = {}
    equations: list[tuple[dict[int, float], float]] = []  # sum(coef * x) = constant

    def term(name: str, value: Any, into: dict[int, float], sign: float) -> float:
        """Add ``sign * value`` to an equation: a variable when suppressed, else a constant (returned)."""
        if value == SUPPRESSED:
            index = variables.setdefault(name, len(variables))
            into[index] = into.get(index, 0.0) + sign
            return 0.0
        return sign * float(value)

    for table in tables:
        tid = table["id"]
        total_name = "shared-total" if tid.startswith(SHARED_TOTAL) else f"{tid}/total"
        cells = table["cells"]
        rows = table.get("rows")
        if rows is None:  # one equation: cells sum to the total
            coef: dict[int, float] = {}
            constant = sum(
                term(f"{tid}/{c}", v, coef, 1.0) for c, v in zip(table["columns"], cells[0], strict=True)
            )
            constant += term(total_name, table["total"], coef, -1.0)
            equations.append((coef, -constant))
            continue
        row_totals, column_totals = table["row_totals"], table["column_totals"]
        for i, row in enumerate(rows):
            coef = {}
            constant = sum(
                term(f"{tid}/{row}/{c}", v, coef, 1.0)
                for c, v in zip(table["columns"], cells[i], strict=True)
            )
            constant += term(f"{tid}/{row}/total", row_totals[i], coef, -1.0)
            equations.append((coef, -constant))
        for j, column in enumerate(table["columns"]):
            coef = {}
            constant = sum(term(f"{tid}/{r}/{column}", cells[i][j], coef, 1.0) for i, r in enumerate(rows))
            constant += term(f"{tid}/total/{column}", column_totals[j], coef, -1.0)
            equations.append((coef, -constant))
        for margin, labels in ((row_totals, rows), (column_totals, table["columns"])):
            coef = {}
            side = "total" if margin is row_totals else "total-col"
            names = [
                f"{tid}/{label}/total" if margin is row_totals else f"{tid}/total/{label}" for label in labels
            ]
            constant = sum(term(n, v, coef, 1.0) for n, v in zip(names, margin, strict=True))
            constant += term(total_name, table["total"], coef, -1.0)
            equations.append((coef, -constant))
            _ = side
    if not variables:
        return []
    a_eq = np.zeros((len(equations), len(variables)))
    b_eq = np.zeros(len(equations))
    for k, (coef, constant) in enumerate(equations):
        for index, value in coef.items():
            a_eq[k, index] = value
        b_eq[k] = constant
    names = sorted(variables, key=variables.__getitem__)
    pinned = []
    for name in names:
        c = np.zeros(len(variables))
        c[variables[name]] = 1.0
        low = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        high = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert low.status == 0, f"the published figures are inconsistent ({low.message})"
        if high.status == 3:  # unbounded above: certainly not pinned
            continue
        assert high.status == 0, high.message
        if -high.fun - low.fun < 0.5:
            pinned.append(f"{name} = {low.fun:.0f}")
    return pinned
