"""The operator console's words in every language it speaks: one message catalogue, read from a TOML file.

Built as the auditor's report catalogue is (``gateway/audit/report_catalogue.toml``, issue 17): one table per
message, one key per language, side by side so a translator sees both; ``{name}`` placeholders filled in by
the caller. ``console_catalogue.toml`` next to this module holds the status page's texts
(:mod:`gateway.runtime.status`), the explanations of the quarantine reports' problem and reason codes
(:mod:`gateway.runtime.dropfolder` and the adapters' drop folders) and the glossary of the Indonesian terms
chosen, so every screen and report uses the same word for the same thing. Code holds no sentence.

:func:`negotiate` picks the language of a request: an explicit choice (``?lang=id``), else the best match
of ``Accept-Language`` (RFC 9110 section 12.5.4 quality values), else English.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

from gateway.settings import load_toml

__all__ = ["CATALOGUE_FILE", "DEFAULT_LANGUAGE", "LANGUAGES", "Catalogue", "negotiate"]

CATALOGUE_FILE: Final = Path(__file__).with_name("console_catalogue.toml")
LANGUAGES: Final = ("en", "id")
DEFAULT_LANGUAGE: Final = "en"


class Catalogue:
    """``text(key, lang, **fields)``; ``explain(reason, problem, lang)`` for a quarantine entry."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.languages: dict[str, str] = dict(document.get("languages", {}))
        self.glossary: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in document.get("glossary", {}).items()
        }
        self.texts: dict[str, dict[str, str]] = {k: dict(v) for k, v in document.get("text", {}).items()}
        self.problems: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in document.get("problem", {}).items()
        }
        self.reasons: dict[str, dict[str, str]] = {k: dict(v) for k, v in document.get("reason", {}).items()}

    @classmethod
    def load(cls, path: Path = CATALOGUE_FILE) -> Catalogue:
        return _load(path)

    def messages(self) -> Iterable[tuple[str, Mapping[str, str]]]:
        """Every message as (name, {language: text}), for checks of the catalogue itself."""
        for section, entries in (
            ("glossary", self.glossary), ("text", self.texts), ("problem", self.problems),
            ("reason", self.reasons),
        ):  # fmt: skip
            for key, texts in entries.items():
                yield f"{section}.{key}", texts

    def text(self, key: str, lang: str, **fields: Any) -> str:
        return string.Formatter().vformat(self.texts[key][lang], (), dict(fields))

    def explain(self, reason: str, problem: str | None, lang: str) -> str:
        """What a quarantine entry means and what to do, for a clerk: by the source's problem code when the
        catalogue has it, else by the reason code, else the reason's family (``schema``), else in general."""
        if problem is not None and problem in self.problems:
            return self.problems[problem][lang]
        if reason in self.reasons:
            return self.reasons[reason][lang]
        family = reason.partition(".")[0]
        return (self.reasons.get(family) or self.reasons["other"])[lang]


@cache
def _load(path: Path) -> Catalogue:
    return Catalogue(load_toml(path, what="console catalogue"))


def negotiate(choice: str | None, accept_language: str | None) -> str:
    """The language to answer in: ``choice`` when it is one we speak, else ``Accept-Language``'s best."""
    if choice in LANGUAGES:
        return str(choice)
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, item in enumerate((accept_language or "").split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().partition("-")[0]
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if not 0.0 < quality <= 1.0:
            continue
        if primary == "in":  # the withdrawn ISO 639 code for Indonesian, still sent by old Java clients
            primary = "id"
        if primary in LANGUAGES and quality - position * 1e-6 > best_q:
            best, best_q = primary, quality - position * 1e-6
    return best
