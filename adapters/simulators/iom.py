"""SIMULATOR of IOM's case system (its referral intake), which is not public. For tests and the demo only.

A small aiohttp server on a loopback port accepting what the ``iom-htcds`` sink sends:
``POST /api/v1/referrals`` with an HTCDS-shaped JSON referral and an ``Idempotency-Key``. It records each
referral once (a repeated key gets ``409 Conflict``, which the sink counts as delivered), can fail the next N
requests with ``503``, and keeps the received documents for tests to inspect (:attr:`referrals`).
Also :func:`write_htcds_export`: a synthetic IOM export in the HTCDS v2.0 column layout (XLSX or CSV) with the
seed article's assistance (hygiene kits, psychoeducation) and its 2,500-hygiene-kit distribution to Pos
Pemulangan Pontianak. Every name and number is invented.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.iom.mapping import IomMapping, htcds_columns
from adapters.simulators.server import SimulatorServer
from gateway.runtime.dropfolder import write_atomically

__all__ = [
    "IomCaseSystemSimulator",
    "ReceivedReferral",
    "export_columns",
    "sample_rows",
    "write_htcds_export",
]


@dataclass(frozen=True, slots=True)
class ReceivedReferral:
    """One referral as first received (per idempotency key)."""

    idempotency_key: str
    event_id: str
    body: dict[str, Any]


class IomCaseSystemSimulator(SimulatorServer):
    """``async with IomCaseSystemSimulator() as iom:`` accepts referrals at ``iom.url``."""

    path = "/api/v1/referrals"

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.referrals: list[ReceivedReferral] = []
        self.consent_changes: list[dict[str, Any]] = []
        """Consent changes received (first delivery of each key), erasure requests included."""
        self.erased: list[str] = []
        """Case ids whose referrals were deleted on an erasure request."""
        self.attempts: list[str] = []
        """Idempotency key of every POST, repeats and failures included, in arrival order."""

    @property
    def url(self) -> str:
        return f"{self.origin}{self.path}"

    def by_case(self) -> dict[str, dict[str, Any]]:
        """The latest referral body per case id."""
        return {str(r.body.get("case_id")): r.body for r in self.referrals}

    def counts(self) -> Counter[str]:
        """Distinct referrals per event id (the simulator deduplicates; above 1 would be a bug)."""
        return Counter(r.event_id for r in self.referrals)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        self.attempts.append(key)
        failing = self._unavailable()
        if failing is not None:
            return failing
        if not key:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        if self._is_repeat(key):
            return web.json_response({"status": "duplicate"}, status=409)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict) or "case_id" not in body:
            return web.json_response({"error": "not an HTCDS referral"}, status=422)
        self._accept(key)
        xchg: dict[str, Any] = body["xchg"] if isinstance(body.get("xchg"), dict) else {}
        if xchg.get("record") == "consent-change":
            self.consent_changes.append(body)
            if xchg.get("erasure_requested") is True:  # delete what we hold about the case
                case_id = body["case_id"]
                self.referrals = [r for r in self.referrals if r.body.get("case_id") != case_id]
                self.erased.append(str(case_id))
            return web.json_response({"status": "recorded"}, status=201)
        self.referrals.append(ReceivedReferral(key, request.headers.get("X-Xchg-Event-Id", ""), body))
        return web.json_response({"status": "recorded"}, status=201)


# ---- synthetic HTCDS exports ---------------------------------------------------------------------------


def export_columns(mapping: IomMapping | None = None) -> list[str]:
    """The header of an IOM export: the HTCDS v2.0 columns in template order, then IOM's operational ones."""
    mapping = mapping or IomMapping.load()
    return [*htcds_columns(), *mapping.operational]


def sample_rows() -> list[dict[str, Any]]:
    """The seed article's IOM records (Pontianak, 26 August 2020), as HTCDS export rows.

    Two assistance rows carry the person's HTCDS columns, as a real export would; the adapter must not
    publish them. Dates are Python dates so an XLSX gets real date cells.
    """
    import datetime as dt  # noqa: PLC0415 - local: only the sample needs it

    return [
        {
            "prs_FirstName": "Budi", "prs_SecondName": "Sampel", "prs_Gender": "Masculine",
            "prs_Citizenship": "ID", "vic_TraffickingStatus": "ActualVictimOfTrafficking",
            "cas_Status": "Active", "spl_Type": "Health", "con_Consent": "true",
            "record_type": "assistance", "case_id": "KBRI-KCH-2020-000123", "assistance_type": "Hygiene kit",
            "assistance_date": dt.date(2020, 8, 26), "quantity": 1, "unit": "kit",
            "location_id": "Pos Pemulangan Pontianak", "delivery_mode": "In person",
            "programme_code": "iom-critical-covid19-response", "on_behalf_of": "Kemensos",
        },
        {
            "prs_FirstName": "Dewi", "prs_SecondName": "Sampel", "prs_Gender": "Feminine",
            "vic_TraffickingStatus": "ActualVictimOfTrafficking", "cas_Status": "Active",
            "spl_Type": "Labour Exploitation Rehabilitation", "con_Consent": "true",
            "record_type": "assistance", "case_id": "KBRI-KCH-2020-000124",
            "assistance_type": "Psychoeducation", "assistance_date": dt.date(2020, 9, 2), "quantity": 3,
            "unit": "sessions",
            "location_id": "RPTC Pontianak", "delivery_mode": "Group session",
        },
        {
            "record_type": "supply", "alert_id": "ALR-IOM-2020-000045", "direction": "Distribution",
            "supply_status": "Delivered", "item": "Hygiene kit",
            "kit_contents": "Cloth mask; Hand sanitizer; Toothpaste; Toothbrush; Information leaflet",
            "quantity": 2500, "location_id": "Pos Pemulangan Pontianak",
            "assistance_date": dt.date(2020, 8, 26), "to_party": "Kemensos", "requested_by": "Kemensos",
            "programme_code": "iom-critical-covid19-response",
        },
        {
            "prs_FirstName": "Rudi", "prs_SecondName": "Fiktif", "cas_Status": "Active",
            "record_type": "case", "case_id": "KBRI-KCH-2020-000125",
        },
    ]  # fmt: skip


def write_htcds_export(
    target: Path,
    rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    columns: Sequence[str] | None = None,
    sheet_title: str = "HTCDS",
) -> Path:
    """Write ``rows`` as an IOM export at ``target`` (``.xlsx`` or ``.csv``) in HTCDS column order, using the
    drop convention: written as ``.<name>.tmp`` beside it, then renamed, so a watching source never reads a
    half-written file."""
    header = list(columns) if columns is not None else export_columns()
    data = list(rows) if rows is not None else sample_rows()
    if target.suffix.lower() == ".xlsx":
        from openpyxl import Workbook  # type: ignore[import-untyped]  # noqa: PLC0415 - untyped, only here

        workbook = Workbook()
        sheet = workbook.active
        sheet.title = sheet_title
        sheet.append(header)
        for row in data:
            sheet.append([row.get(name) for name in header])
        content = io.BytesIO()
        workbook.save(content)
        write_atomically(target, content.getvalue())
    else:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        for row in data:
            writer.writerow(["" if row.get(name) is None else str(row[name]) for name in header])
        write_atomically(target, text.getvalue().encode("utf-8"))
    return target
