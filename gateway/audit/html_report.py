"""``gateway audit report``: the audit's verdict as a document an auditor who is not an engineer can read.

Input: the JSON report of ``gateway audit verify`` (:meth:`gateway.audit.report.AuditReport.to_json`, format
``xchg-audit-report/v2``), so a report can be rendered again from a kept JSON file. Output: one
self-contained HTML file (inline CSS, no script, no font, image or anything else fetched from anywhere),
laid out for the screen and for printing (``@page`` A4, tables that do not break inside a row), in Bahasa
Indonesia or English. Optionally a PDF of the same HTML, made by WeasyPrint (:func:`write_pdf`): a
well-kept HTML/CSS-to-PDF library that needs no browser, only Pango, installed by the ``pdf`` extra.

Every sentence comes from one message catalogue, ``report_catalogue.toml`` next to this module (one table
per message, one key per language); this module holds markup only. What the document says: the verdict in
plain words; what was checked (entries, the period the records span, the records and the registry); the
keys and checkpoints trusted; each finding grouped by reason code with what it means and what to do, and
where (entry, Kafka position, checkpoint, file, the differing fields); counts per party; the notary's
verdicts. Times are ISO 8601 in the chosen time zone, with its offset. Nothing in the JSON report is
personal data (positions, digests, codes, party ids, public keys), and nothing else is added here.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any, Final

from gateway.audit.report import REPORT_FORMAT
from gateway.errors import GatewayError, Reason
from gateway.settings import load_toml

__all__ = ["LANGUAGES", "Catalogue", "render_html", "write_pdf"]

CATALOGUE_FILE: Final = Path(__file__).with_name("report_catalogue.toml")
LANGUAGES: Final = ("en", "id")
_LISTED: Final = 100
"""Locations listed per reason; the rest are counted."""


class Catalogue:
    """The report's messages: ``text(key, lang, **fields)`` and ``finding(reason, part, lang)``."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.languages: dict[str, str] = dict(document.get("languages", {}))
        self.texts: dict[str, dict[str, str]] = {k: dict(v) for k, v in document.get("text", {}).items()}
        self.findings: dict[str, dict[str, dict[str, str]]] = {
            reason: {part: dict(texts) for part, texts in parts.items()}
            for reason, parts in document.get("finding", {}).items()
        }

    @classmethod
    def load(cls, path: Path = CATALOGUE_FILE) -> Catalogue:
        return _load(path)

    def messages(self) -> Iterable[tuple[str, Mapping[str, str]]]:
        """Every message as (name, {language: text}), for checks of the catalogue itself."""
        for key, texts in self.texts.items():
            yield f"text.{key}", texts
        for reason, parts in self.findings.items():
            for part, texts in parts.items():
                yield f"finding.{reason}.{part}", texts

    def text(self, key: str, lang: str, **fields: Any) -> str:
        return _fill(self.texts[key][lang], fields)

    def finding(self, reason: str, part: str, lang: str) -> str:
        entry = self.findings.get(reason) or self.findings["other"]
        return entry[part][lang]


@cache
def _load(path: Path) -> Catalogue:
    return Catalogue(load_toml(path, what="report catalogue"))


def _fill(template: str, fields: Mapping[str, Any]) -> str:
    return string.Formatter().vformat(template, (), dict(fields))


def _e(value: object) -> str:
    """Escaped text (every value from the report goes through here)."""
    return html.escape("" if value is None else str(value), quote=True)


def _time(value: str | None, zone: tzinfo) -> str | None:
    """An ISO 8601 UTC time of the JSON report in ``zone``, with its offset (seconds precision)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(zone).isoformat(timespec="seconds")


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or "UTC")


class _Page:
    """The HTML of one report in one language."""

    def __init__(self, report: Mapping[str, Any], lang: str, zone: tzinfo, catalogue: Catalogue) -> None:
        self.report, self.lang, self.zone, self.catalogue = report, lang, zone, catalogue
        self.parts: list[str] = []

    def t(self, key: str, **fields: Any) -> str:
        """A catalogue text with escaped ``fields``, itself escaped."""
        return _e(self.catalogue.text(key, self.lang, **fields))

    def add(self, *markup: str) -> None:
        self.parts.extend(markup)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> None:
        """A table; ``headers`` are catalogue keys, ``rows`` already-escaped cells."""
        self.add(f'<table class="{css}"><thead><tr>')
        self.add(*(f"<th>{self.t(h)}</th>" for h in headers))
        self.add("</tr></thead><tbody>")
        for row in rows:
            self.add("<tr>", *(f"<td>{cell}</td>" for cell in row), "</tr>")
        self.add("</tbody></table>")

    # ---- sections ------------------------------------------------------------------------------------
    def render(self) -> str:
        report = self.report
        title = self.t("title")
        self.add(
            "<!DOCTYPE html>",
            f'<html lang="{_e(self.lang)}"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title><style>{_CSS}</style></head><body>",
            f'<header><h1>{title}</h1><p class="subtitle">{self.t("subtitle")}</p><dl class="meta">',
            f"<dt>{self.t('log_identity')}</dt><dd><code>{_e(report['origin'])}</code></dd>",
            f"<dt>{self.t('log_directory')}</dt><dd><code>{_e(report['log'])}</code></dd>",
            f"<dt>{self.t('audited_at')}</dt><dd>{_e(_time(report.get('audited_at'), self.zone))}</dd>",
            f'</dl><p class="note">{self.t("times_in", zone=_zone_name(self.zone))}</p></header>',
        )
        self.verdict()
        self.checked()
        self.trust()
        self.findings()
        self.parties()
        self.verdicts()
        self.add(
            f'<footer id="about"><h2>{self.t("about_heading")}</h2>',
            f"<p>{self.t('about_method', format=report.get('format', REPORT_FORMAT))}</p>",
            f"<p>{self.t('about_privacy')}</p></footer></body></html>",
        )
        return "\n".join(self.parts) + "\n"

    def verdict(self) -> None:
        report = self.report
        findings = len(report["findings"]) + sum(report.get("suppressed_findings", {}).values())
        tail, allowed = report.get("unsigned_tail", 0), report.get("trust", {}).get("allow_unsigned", 0)
        if not report["ok"]:
            word, css = self.t("verdict_fail"), "fail"
            text = self.t("verdict_fail_explained", count=findings)
        elif tail:
            word, css = self.t("verdict_ok"), "ok"
            text = self.t("verdict_ok_tail_explained", entries=report["log_size"], tail=tail, allowed=allowed)
        else:
            word, css = self.t("verdict_ok"), "ok"
            text = self.t("verdict_ok_explained", entries=report["log_size"])
        self.add(
            f'<section id="verdict" class="verdict {css}" data-ok="{str(report["ok"]).lower()}">',
            f'<h2>{self.t("verdict_heading")}</h2><p class="word">{word}</p><p>{text}</p>',
        )
        if report.get("records") is None:
            self.add(f'<p class="note">{self.t("records_not_compared")}</p>')
        self.add("</section>")

    def checked(self) -> None:
        report = self.report
        period = report.get("period") or {}
        first, last = (_time(period.get(k), self.zone) for k in ("first_record", "last_record"))
        items = [self.t("checked_log", entries=report["log_size"])]
        items.append(
            self.t("checked_period", first=first, last=last) if first else self.t("checked_period_none")
        )
        items.append(self.t("checked_signed", count=len(report["checkpoints"]), signed=report["signed_size"]))
        if report.get("unsigned_tail"):
            items.append(self.t("checked_unsigned", tail=report["unsigned_tail"]))
        items.append(self.t("checked_root", root=report["root"]))
        records = report.get("records")
        if records is not None:
            items.append(
                self.t(
                    "checked_records",
                    source=records["source"],
                    read=records["read"],
                    matched=records["matched"],
                    mismatched=records["mismatched"],
                    not_logged=records["not_logged"],
                    missing=records["leaves_without_record"],
                    pending=records["pending"],
                    expired=records["expired"],
                )
            )
        registry = report.get("registry")
        if registry:
            items.append(self.t("checked_registry", file=registry["file"], sha256=registry["sha256"]))
        self.add(f'<section id="checked"><h2>{self.t("checked_heading")}</h2><ul>')
        self.add(*(f"<li>{item}</li>" for item in items), "</ul></section>")

    def trust(self) -> None:
        report = self.report
        trust = report.get("trust", {})
        self.add(f'<section id="trust"><h2>{self.t("trust_heading")}</h2><p>{self.t("trust_intro")}</p>')
        self.add(f'<h3>{self.t("notary_keys")}</h3><ul class="keys">')
        self.add(*(f"<li><code>{_e(k)}</code></li>" for k in trust.get("notary_keys", [])), "</ul>")
        self.add(f'<h3>{self.t("cosigner_keys")}</h3><ul class="keys">')
        cosigners = trust.get("cosigners", [])
        self.add(*(f"<li><code>{_e(k)}</code></li>" for k in cosigners))
        if not cosigners:
            self.add(f"<li>{self.t('no_cosigners')}</li>")
        self.add("</ul>")
        quorum = trust.get("quorum", 0)
        self.add(f"<p>{self.t('quorum', quorum=quorum) if quorum else self.t('quorum_none')}</p>")
        if trust.get("allow_unsigned"):
            self.add(f"<p>{self.t('allow_unsigned', allowed=trust['allow_unsigned'])}</p>")
        if not report["checkpoints"]:
            self.add(f'<p class="bad">{self.t("no_checkpoint")}</p></section>')
            return
        rows = []
        for checkpoint in report["checkpoints"]:
            matches = checkpoint["matches_log"]
            reproduced = (
                self.t("yes") if matches else self.t("log_too_short") if matches is None else self.t("no")
            )
            cosigned = ", ".join(
                f"{_e(c['cosigner'])} ({_e(_time(c['time'], self.zone))})" for c in checkpoint["cosignatures"]
            )
            rows.append(
                [
                    _e(checkpoint["size"]),
                    f"<code>{_e(checkpoint['root'])}</code>",
                    "<br>".join(f"<code>{_e(s)}</code>" for s in checkpoint["sources"]),
                    reproduced if matches else f'<span class="bad">{reproduced}</span>',
                    cosigned or self.t("none"),
                ]
            )
        columns = ["col_size", "col_root", "col_found", "col_reproduced", "col_cosigned"]
        self.table(columns, rows, "checkpoints")
        self.add("</section>")

    def findings(self) -> None:
        report = self.report
        self.add(f'<section id="findings"><h2>{self.t("findings_heading")}</h2>')
        suppressed: dict[str, int] = dict(report.get("suppressed_findings", {}))
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for finding in report["findings"]:
            groups.setdefault(finding["reason"], []).append(finding)
        for reason in suppressed:
            groups.setdefault(reason, [])
        if not groups:
            self.add(f"<p>{self.t('no_findings')}</p></section>")
            return
        for reason, listed in groups.items():
            self.finding_group(reason, listed, suppressed.get(reason, 0))
        self.add("</section>")

    def finding_group(self, reason: str, listed: Sequence[Mapping[str, Any]], suppressed: int) -> None:
        catalogue, lang = self.catalogue, self.lang
        count = len(listed) + suppressed
        self.add(
            f'<article class="finding" data-reason="{_e(reason)}">',
            f"<h3>{_e(catalogue.finding(reason, 'title', lang))} <code>{_e(reason)}</code>"
            f' <span class="count">{self.t("finding_count", count=count)}</span></h3>',
            f"<p><strong>{self.t('meaning')}:</strong> {_e(catalogue.finding(reason, 'meaning', lang))}</p>",
            f"<p><strong>{self.t('action')}:</strong> {_e(catalogue.finding(reason, 'action', lang))}</p>",
        )
        if listed:
            rows = []
            for finding in listed[:_LISTED]:
                topic = finding["topic"]
                position = f"{topic}:{finding['partition']}:{finding['offset']}" if topic else None
                detail = _e(finding["detail"]) + "".join(
                    "<br>"
                    + self.t(
                        "differences",
                        field=d["field"],
                        logged=d["logged"] if d["logged"] is not None else "null",
                        recomputed=d["recomputed"] if d["recomputed"] is not None else "null",
                    )
                    for d in finding.get("differences", [])
                )
                rows.append(
                    [
                        _e(finding["leaf_index"]) if finding["leaf_index"] is not None else self.t("none"),
                        f"<code>{_e(position)}</code>" if position else self.t("none"),
                        _e(finding["checkpoint_size"])
                        if finding["checkpoint_size"] is not None
                        else self.t("none"),
                        f"<code>{_e(finding['source'])}</code>" if finding["source"] else self.t("none"),
                        detail,
                    ]
                )
            self.add(f"<h4>{self.t('locations')}</h4>")
            self.table(["col_leaf", "col_record", "col_checkpoint", "col_file", "col_detail"], rows, "where")
            if len(listed) > _LISTED:
                self.add(f'<p class="note">{self.t("more_findings", count=len(listed) - _LISTED)}</p>')
        if suppressed:
            self.add(f'<p class="note">{self.t("suppressed", count=suppressed)}</p>')
        self.add("</article>")

    def parties(self) -> None:
        parties: Mapping[str, Mapping[str, int]] = self.report.get("parties", {})
        self.add(
            f'<section id="parties"><h2>{self.t("parties_heading")}</h2><p>{self.t("parties_intro")}</p>'
        )
        if not parties:
            self.add(f"<p>{self.t('no_parties')}</p></section>")
            return
        rows = [
            [
                self.t("other_topics") if party == "*" else f"<code>{_e(party)}</code>",
                *(_e(counts[key]) for key in ("published", "accepted", "rejected", "dead_lettered")),
                _e(counts.get("findings", 0)),
            ]
            for party, counts in parties.items()
        ]
        columns = ["col_party", "col_published", "col_accepted", "col_rejected", "col_dead_lettered"]
        self.table([*columns, "col_findings"], rows, "parties")
        self.add("</section>")

    def verdicts(self) -> None:
        verdicts: Mapping[str, int] = self.report.get("verdicts", {})
        self.add(
            f'<section id="verdicts"><h2>{self.t("verdicts_heading")}</h2><p>{self.t("verdicts_intro")}</p>'
        )
        rows = [
            [self.t("accepted") if key == "accepted" else f"<code>{_e(key)}</code>", _e(count)]
            for key, count in sorted(verdicts.items(), key=lambda item: (item[0] != "accepted", item[0]))
        ]
        self.table(["col_verdict", "col_count"], rows, "verdicts")
        self.add("</section>")


def render_html(
    report: Mapping[str, Any], *, lang: str, zone: tzinfo, catalogue: Catalogue | None = None
) -> str:
    """The auditor's report of one JSON audit report, in ``lang`` (``en`` or ``id``), times in ``zone``."""
    if lang not in LANGUAGES:
        raise GatewayError(Reason.CONFIG_INVALID, f"report language {lang!r}: one of {', '.join(LANGUAGES)}")
    if report.get("format") != REPORT_FORMAT:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"not an audit report of format {REPORT_FORMAT}: {report.get('format')!r}"
        )
    return _Page(report, lang, zone, catalogue or Catalogue.load()).render()


def write_pdf(document: str, path: Path) -> None:
    """The HTML report as a PDF (WeasyPrint: HTML and CSS to PDF without a browser; the ``pdf`` extra)."""
    try:
        import weasyprint  # noqa: PLC0415 - optional: only for --pdf
    except ImportError as exc:  # not installed, or Pango missing (OSError subclasses are caught below)
        raise GatewayError(
            Reason.CONFIG_INVALID, "--pdf needs WeasyPrint: pip install 'xchg-gateway[pdf]'"
        ) from exc
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"--pdf: WeasyPrint cannot load Pango: {exc}") from exc
    weasyprint.HTML(string=document).write_pdf(path)


_CSS: Final = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Noto Sans", "Liberation Sans", Arial, sans-serif; font-size: 10.5pt;
  line-height: 1.45; color: #111; max-width: 60em; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.7em; margin: 0 0 .2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #999; padding-bottom: .15em; margin-top: 1.6em; }
h3 { font-size: 1.08em; margin: 1.1em 0 .3em; }
h4 { font-size: 1em; margin: .6em 0 .2em; }
.subtitle { color: #444; margin-top: 0; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: .92em;
  word-break: break-all; }
.note { color: #444; font-size: .95em; }
.verdict { border: 3px solid; padding: .2em 1em .6em; margin-top: 1.2em; }
.verdict.ok { border-color: #1b6e20; background: #eef7ee; }
.verdict.fail { border-color: #a11a1a; background: #fbeeee; }
.verdict .word { font-size: 1.6em; font-weight: bold; margin: .2em 0; }
.verdict.ok .word { color: #1b6e20; } .verdict.fail .word { color: #a11a1a; }
.bad { color: #a11a1a; font-weight: bold; }
table { border-collapse: collapse; width: 100%; margin: .4em 0 .8em; font-size: .93em; }
th, td { border: 1px solid #bbb; padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: #eee; }
table.parties td:not(:first-child), table.verdicts td:last-child { text-align: right; }
.finding { border-left: 4px solid #a11a1a; padding-left: .8em; margin: 1em 0; }
.finding .count { font-weight: normal; color: #444; }
ul.keys { list-style: none; padding-left: 0; }
footer { margin-top: 2em; }
@page { size: A4; margin: 16mm 14mm 18mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; }
  .verdict.ok, .verdict.fail { background: none; }
  thead { display: table-header-group; }
  tr, .verdict, h2, h3, h4 { break-inside: avoid; page-break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
}
"""
