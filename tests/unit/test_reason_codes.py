"""``docs/REASON_CODES.md`` and :class:`gateway.errors.Reason` list the same codes, both ways.

The codes are an interface: operators read them in DLQ headers, metrics labels and audit reports and look
them up in the document. The document writes every code in backticks, in the pipeline table's "Code" column
(sometimes several in one cell, ``a`` / ``b``) and in the paragraphs after it; a code is a lowercase
namespace, a dot and a lowercase, hyphenated name (``sig.missing``, ``checkpoint.origin-mismatch``). Other
backticked text there (attribute names, file paths, ``seal.*``, ``limits.outbox_max_backlog``) has another
shape and is not taken for a code.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.errors import Reason
from tests.paths import REPO

DOCUMENT: Final = REPO / "docs" / "REASON_CODES.md"
_BACKTICKED: Final = re.compile(r"`([^`\n]+)`")
_CODE: Final = re.compile(r"[a-z][a-z0-9]*\.[a-z0-9]+(?:-[a-z0-9]+)*")


def documented_codes(text: str) -> set[str]:
    """Every backticked reason code in ``text`` (Markdown)."""
    return {token for token in _BACKTICKED.findall(text) if _CODE.fullmatch(token)}


def test_every_reason_is_documented_and_every_documented_code_is_a_reason() -> None:
    documented = documented_codes(DOCUMENT.read_text(encoding="utf-8"))
    defined = {str(reason) for reason in Reason}
    undocumented = sorted(defined - documented)
    unknown = sorted(documented - defined)
    assert (undocumented, unknown) == ([], []), (
        f"Reason codes missing from {DOCUMENT.relative_to(REPO)}: {undocumented or 'none'}; "
        f"codes written in {DOCUMENT.relative_to(REPO)} that gateway.errors.Reason does not define: "
        f"{unknown or 'none'}"
    )


def test_reason_values_are_unique() -> None:
    """Two members with one value would make the second an alias that ``list(Reason)`` never shows."""
    assert len(Reason.__members__) == len(list(Reason))


def test_the_parser_finds_codes_in_table_cells_and_prose_and_nothing_else() -> None:
    """The check itself: what the document's two formats hold is found, other backticked text is not."""
    table = (
        "| 7 | key validity | `key.not-yet-valid` / `key.expired` / `key.revoked` | the key was not valid |\n"
        "|   |              | `ce.time-in-future` | event `time` is more than the allowed clock skew |\n"
    )
    prose = (
        "Runtime: `sink.failed` (see `gateway/errors.py`), `outbox.full` (`limits.outbox_max_backlog`),\n"
        "the checks above (`authz.type-not-permitted`, `seal.*`), `xchg_rejected_total{reason=...}`, `1.0`.\n"
    )
    assert documented_codes(table) == {"key.not-yet-valid", "key.expired", "key.revoked", "ce.time-in-future"}
    assert documented_codes(prose) == {"sink.failed", "outbox.full", "authz.type-not-permitted"}
