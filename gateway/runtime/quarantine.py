"""What a drop folder's quarantine report says to the clerk who dropped the file, in Indonesian and English.

Every drop folder (:mod:`gateway.runtime.dropfolder`: JSON Lines, Kemensos CSV, IOM HTCDS) writes, for a
file with rejected records, ``quarantine/<done name>.rejected.jsonl`` (one object per record: where, the
reason code, a technical detail in English) and, beside it, ``<done name>.rejected.txt``: the same records
as sentences a clerk can act on, Bahasa Indonesia first, then English. Each JSON object also carries
``explanation: {"id": ..., "en": ...}``. The words come from the console catalogue
(``console_catalogue.toml``, :meth:`gateway.runtime.catalogue.Catalogue.explain`: by the source's problem
code, else the reason code, else its family), never from code; like the rest of the report they quote no
value of the record, only the row or line, the column name and the codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from gateway.runtime.catalogue import Catalogue

__all__ = ["REPORT_LANGUAGES", "Rejection", "explained", "text_report"]

#: The order of the languages in the text report: Indonesian first, for the clerks who read it.
REPORT_LANGUAGES: Final = ("id", "en")


class Rejection(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def problem(self) -> str | None: ...
    @property
    def field(self) -> str | None: ...


def explained(
    record: Mapping[str, Any], rejection: Rejection, catalogue: Catalogue | None = None
) -> dict[str, Any]:
    """``record`` (a source's quarantine object) with ``explanation: {lang: sentence}`` added."""
    words = catalogue or Catalogue.load()
    return {
        **record,
        "explanation": {
            lang: words.explain(rejection.reason, rejection.problem, lang) for lang in REPORT_LANGUAGES
        },
    }


def text_report(
    file: str,
    record_word: str,
    rejections: Sequence[tuple[int | None, Rejection]],
    catalogue: Catalogue | None = None,
) -> str:
    """The ``.rejected.txt`` report of one file: per language, a title and one paragraph per record."""
    words = catalogue or Catalogue.load()
    parts: list[str] = []
    for lang in REPORT_LANGUAGES:
        parts.append(words.text("quarantine_title", lang, file=file, count=len(rejections)))
        parts.append("=" * 72)
        for number, rejection in rejections:
            if number is None:
                where = words.text("quarantine_whole_file", lang)
            else:
                where = words.text(
                    f"quarantine_{'row' if record_word == 'row' else 'line'}", lang, number=number
                )
            if rejection.field:
                where += ", " + words.text("quarantine_field", lang, field=rejection.field)
            code = words.text("quarantine_code", lang, reason=rejection.reason)
            parts.append(f"- {where} ({code}):\n  {words.explain(rejection.reason, rejection.problem, lang)}")
        parts.append("")
    return "\n".join(parts)
