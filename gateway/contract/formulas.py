"""Spreadsheet formulas in event data (CSV injection): flagged in the signed event, neutralised on output.

Why: the agencies' systems are spreadsheets (Kemensos' registers, IOM's HTCDS workbooks). A cell typed as
``=HYPERLINK("http://…","click")`` or ``+cmd|' /C calc'!A0`` in one agency's export used to reach another
agency's spreadsheet verbatim, where opening it runs the formula. Following OWASP's CSV-injection guidance,
a string *value* that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(:data:`FORMULA_PREFIXES`) is a formula cell:

* **Flagged in the event, under the signature.** :func:`gateway.contract.sign.build_event` lists the
  formula cells of the *clear* data as the ``formulacells`` extension: the JSON Pointers (RFC 6901) of those
  values as one JSON array, e.g. ``["/location_id","/notes/0"]``, or ``"*"`` when the list would be longer
  than :data:`MAX_LISTED` characters. It names the extension in ``signedextattrs``, so the flag is signed
  like ``partitionkey``. Sealed fields are never listed in clear (a pointer would tell which sealed field
  starts with ``+``, a phone number say): recipients find those after opening them.
* **Checked by every consumer.** :class:`gateway.contract.verify.EventVerifier` recomputes the list from the
  clear data; a ``formulacells`` that differs is ``ce.invalid-attribute`` (a producer cannot hide a formula
  behind the flag). :attr:`~gateway.contract.verify.Accepted.formula_cells` gives a recipient the pointers of
  every formula cell it can see, sealed fields included, whether or not the producer flagged them.
* **Neutralised for spreadsheet-bound output.** :func:`neutralise` prefixes each formula cell with a single
  quote (``'=HYPERLINK(…)``), OWASP's recommendation: spreadsheet programs show the text and do not evaluate
  it. Sinks apply it when configured to (``formulas = "neutralise"`` on webhook sinks, for an agency system
  that writes spreadsheets); by default they pass values unchanged and send the pointers in an
  ``X-Xchg-Formula-Cells`` header, so the agency system can decide.

Numbers are JSON numbers, not strings, so ``-5`` as a number is never a formula cell; ``"-5"`` as a string
is (a spreadsheet evaluates it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import orjson

__all__ = [
    "FORMULA_EXTENSION",
    "FORMULA_PREFIXES",
    "MAX_LISTED",
    "flag_value",
    "formula_pointers",
    "is_formula",
    "neutralise",
]

#: What a string value begins with to be a formula cell (OWASP, CSV injection).
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
#: The signed CloudEvents extension that lists the formula cells of the clear data.
FORMULA_EXTENSION: Final = "formulacells"
#: Longer lists are written as ``"*"`` ("some; recompute"), keeping the attribute bounded.
MAX_LISTED: Final = 4096


def is_formula(value: object) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def formula_pointers(value: Any) -> list[str]:
    """The RFC 6901 JSON Pointers of every formula cell in ``value``, in document order."""
    return list(_walk(value, ""))


def _walk(value: Any, pointer: str) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{pointer}/{_escape(str(key))}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            yield from _walk(item, f"{pointer}/{index}")
    elif is_formula(value):
        yield pointer


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def flag_value(pointers: Sequence[str]) -> str | None:
    """The ``formulacells`` attribute value for ``pointers`` (None: no formula cell, no extension)."""
    if not pointers:
        return None
    text = orjson.dumps(sorted(pointers)).decode("utf-8")
    return text if len(text) <= MAX_LISTED else "*"


def neutralise(value: Any) -> Any:
    """A copy of ``value`` with every formula cell prefixed by ``'`` (OWASP): shown, never evaluated."""
    if isinstance(value, Mapping):
        return {key: neutralise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [neutralise(item) for item in value]
    if is_formula(value):
        return "'" + value
    return value
