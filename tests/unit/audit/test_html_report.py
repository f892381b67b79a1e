"""``gateway audit report``: the auditor's document — its structure, the language switch, the catalogue, times
with their zone, no personal data, self-contained, escaped, and a PDF of the same HTML.

The reports come from real audits: the synthetic run with its records (``_synthetic.py``, whose events carry
the schemas' example payloads: names, birth dates, places) and the demo's log (``tests/data/demo-notary``)
with one thing changed.
"""

from __future__ import annotations

import json
import re
import shutil
import zoneinfo
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.auditor import Auditor
from gateway.audit.html_report import LANGUAGES, Catalogue, render_html, write_pdf
from gateway.audit.layout import tile_path
from gateway.audit.report import FINDING_REASONS
from gateway.cli.main import main
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError
from tests.paths import DATA, REPO
from tests.unit.audit._synthetic import Run, build_run
from tests.world import example

DEMO = DATA / "demo-notary"
JAKARTA = zoneinfo.ZoneInfo("Asia/Jakarta")
UTC = zoneinfo.ZoneInfo("UTC")
SECTIONS = ("verdict", "checked", "trust", "findings", "parties", "verdicts", "about")
EXAMPLES = ("case.referral", "case.shelter-admission", "alert.supply")


class _Outline(HTMLParser):
    """Tags, ids, attributes and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "html":
            self.lang = values.get("lang")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _outline(page: str) -> _Outline:
    parser = _Outline()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def clean(run: Run) -> dict[str, Any]:
    """The JSON report of an audit of the run with its records."""
    verifier = EventVerifier(registry=run.world.registry, schemas=run.world.schemas)
    with Auditor(run.log_dir, notary_keys=[run.signer.verifier()], event_verifier=verifier) as auditor:
        auditor.load_stored_checkpoints()
        auditor.scan_log()
        auditor.check_records(run.records)
        auditor.finish_records("test dump")
        report = auditor.finish()
    assert report.ok, report.summary()
    return report.to_json()


@pytest.fixture
def failing(tmp_path: Path) -> dict[str, Any]:
    """The demo's log with a garbage tile beyond the tree and its checkpoint file deleted."""
    log = tmp_path / "log"
    shutil.copytree(DEMO / "log", log)
    (log / tile_path(0, 0, 30)).write_bytes(bytes(30 * 32))
    (log / "checkpoint").unlink()
    out = tmp_path / "report.json"
    assert main(
        ["audit", "verify", "--log", str(log), "--vkey", str(DEMO / "notary.vkey"), "--json", str(out)]
    )
    document: dict[str, Any] = json.loads(out.read_text())
    return document


# ---- structure and language ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_structure_of_a_passing_report(clean: dict[str, Any], lang: str) -> None:
    catalogue = Catalogue.load()
    page = render_html(clean, lang=lang, zone=UTC)
    outline = _outline(page)
    assert outline.lang == lang
    assert [i for i in outline.ids if i in SECTIONS] == list(SECTIONS)
    text = " ".join(outline.text)
    assert catalogue.text("verdict_ok", lang) in text
    assert catalogue.text("verdict_fail", lang) not in text
    assert catalogue.text("no_findings", lang) in text
    for party in ("kemensos", "kemlu.kbri-kuching", "iom"):
        assert party in text
    records = clean["records"]
    assert str(records["matched"]) in text
    assert clean["root"] in text
    assert all(key in text for key in clean["trust"]["notary_keys"])


def test_a_failing_report_explains_each_finding(failing: dict[str, Any]) -> None:
    catalogue = Catalogue.load()
    reasons = sorted({f["reason"] for f in failing["findings"]})
    assert reasons == ["log.beyond-tree", "log.checkpoint-missing"]
    for lang in LANGUAGES:
        page = render_html(failing, lang=lang, zone=JAKARTA)
        outline = _outline(page)
        text = " ".join(outline.text)
        assert catalogue.text("verdict_fail", lang) in text
        assert sorted(v for k, v in outline.attributes if k == "data-reason") == reasons
        for reason in reasons:
            for part in ("title", "meaning", "action"):
                assert catalogue.finding(reason, part, lang) in text
        assert tile_path(0, 0, 30) in text


def test_the_language_switch_changes_every_sentence(clean: dict[str, Any]) -> None:
    english, indonesian = (render_html(clean, lang=lang, zone=UTC) for lang in ("en", "id"))
    assert english != indonesian
    catalogue = Catalogue.load()
    for key in ("title", "checked_heading", "trust_heading", "parties_heading", "about_privacy"):
        assert catalogue.text(key, "en") in english
        assert catalogue.text(key, "en") not in indonesian
        assert catalogue.text(key, "id") in indonesian
        assert catalogue.text(key, "id") not in english
    with pytest.raises(GatewayError):
        render_html(clean, lang="fr", zone=UTC)


# ---- the catalogue ---------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def test_every_message_has_every_language_with_the_same_placeholders() -> None:
    catalogue = Catalogue.load()
    assert set(catalogue.languages) == set(LANGUAGES)
    problems = []
    for name, texts in catalogue.messages():
        if set(texts) != set(LANGUAGES):
            problems.append(f"{name}: languages {sorted(texts)}")
            continue
        fields = {lang: set(_PLACEHOLDER.findall(text)) for lang, text in texts.items()}
        if len({frozenset(f) for f in fields.values()}) != 1:
            problems.append(f"{name}: placeholders {fields}")
    assert problems == []


def test_every_reason_an_audit_reports_is_explained() -> None:
    catalogue = Catalogue.load()
    missing = [
        f"{reason}.{part}"
        for reason in [*map(str, FINDING_REASONS), "other"]
        for part in ("title", "meaning", "action")
        if part not in catalogue.findings.get(reason, {})
    ]
    assert missing == []


# ---- times, privacy, self-containment --------------------------------------------------------------------


def _epoch_ms(document: dict[str, Any]) -> list[str]:
    from datetime import datetime  # noqa: PLC0415 - only here

    stamps = [document["audited_at"], *document["period"].values()]
    return [str(int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)) for s in stamps]


def test_times_are_iso_8601_in_the_chosen_zone(clean: dict[str, Any]) -> None:
    page = render_html(clean, lang="id", zone=JAKARTA)
    text = " ".join(_outline(page).text)
    shown = re.findall(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}", text)
    assert len(shown) >= 3  # audited, first and last record
    assert all(s.endswith("+07:00") for s in shown)
    assert "Asia/Jakarta" in text
    assert not any(ms in page for ms in _epoch_ms(clean))  # no epoch milliseconds


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_personal_data(run: Run, clean: dict[str, Any], tmp_path: Path) -> None:
    """Nothing of the events' payloads (names, places, dates in the examples the run's events carry) nor the
    case ids (record keys) reaches the report, in either language, nor its JSON."""
    parties = set(run.world.registry.parties)  # party ids (recipients in the payloads) are not personal
    payload = {
        s
        for name in EXAMPLES
        for s in _strings(example(name, "1.0")[0][1])
        if len(s) >= 5 and s not in parties
    }
    keys = {r.key.decode() for r in run.records if r.key}
    assert any(" " in s for s in payload)  # the examples really hold names and free text
    for lang in LANGUAGES:
        page = render_html(clean, lang=lang, zone=UTC)
        assert sorted(s for s in payload | keys if s in page) == []
    assert sorted(s for s in payload | keys if s in json.dumps(clean)) == []


def test_self_contained_and_escaped(clean: dict[str, Any]) -> None:
    hostile = {**clean, "ok": False}
    hostile["findings"] = [
        {
            "reason": "tlog.corrupt",
            "detail": '<script>alert(1)</script> "quoted"',
            "leaf_index": 1,
            "topic": "xchg.<b>x</b>.case.v1",
            "partition": 0,
            "offset": 0,
            "checkpoint_size": None,
            "source": "<img src=x>",
            "differences": [],
        }
    ]
    page = render_html(hostile, lang="en", zone=UTC)
    outline = _outline(page)
    assert {"script", "link", "img", "iframe", "object", "b"}.isdisjoint(outline.tags)
    assert not [v for k, v in outline.attributes if k in {"src", "href"}]
    lowered = page.lower()
    for fetched in ("http://", "https://", "@import", "url(", "@font-face"):
        assert fetched not in lowered
    assert "&lt;script&gt;" in page


def test_a_pdf_of_the_same_report(clean: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "report.pdf"
    write_pdf(render_html(clean, lang="id", zone=JAKARTA), target)
    data = target.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    assert len(data) > 5000  # laid-out pages with an embedded font subset, not an empty shell


# ---- the command line ------------------------------------------------------------------------------------


def test_cli_report_direct_and_from_a_kept_json(tmp_path: Path) -> None:
    log, vkey = DEMO / "log", DEMO / "notary.vkey"
    kept, direct, again = tmp_path / "kept.json", tmp_path / "direct.html", tmp_path / "again.html"
    common = ["--lang", "id", "--timezone", "Asia/Jakarta"]
    args = [
        "audit",
        "report",
        "--log",
        str(log),
        "--vkey",
        str(vkey),
        "--json",
        str(kept),
        "--out",
        str(direct),
    ]
    assert main([*args, *common]) == 0
    assert main(["audit", "report", "--from-json", str(kept), "--out", str(again), *common]) == 0
    assert again.read_text() == direct.read_text()
    assert '<html lang="id">' in direct.read_text()
    assert (
        main(["audit", "report", "--from-json", str(kept), "--out", str(again), "--timezone", "Mars/Base"])
        == 2
    )
    assert main(["audit", "report", "--out", str(again)]) == 2  # neither a log nor a kept report


def test_committed_example_is_a_current_report() -> None:
    """docs/audit-report-example.*.html is regenerated by docs/make-audit-report-example.sh (from the demo):
    it must carry every section and the current catalogue's headings."""
    catalogue = Catalogue.load()
    for lang in LANGUAGES:
        page = (REPO / "docs" / f"audit-report-example.{lang}.html").read_text(encoding="utf-8")
        outline = _outline(page)
        assert outline.lang == lang
        assert [i for i in outline.ids if i in SECTIONS] == list(SECTIONS)
        text = " ".join(outline.text)
        for key in (
            "verdict_heading",
            "checked_heading",
            "trust_heading",
            "parties_heading",
            "about_privacy",
        ):
            assert catalogue.text(key, lang) in text
        assert "https://" not in page
        assert "<script" not in page
