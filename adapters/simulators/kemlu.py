"""SIMULATOR of the Kemlu citizen-protection case API (the embassies' case system is not public).

Not Kemlu software and not a model of its internals: a small aiohttp server on a loopback port that speaks
the interface ``adapters.kemlu`` is built against (docs/adapters/kemlu.md):

* ``GET /api/v1/cases?updated_since=<RFC 3339>&page=<n>&page_size=<k>[&mission=<m>]`` ->
  ``{"items": [...], "next_page": <n> | null}``: cases with ``updated_at >= updated_since``, oldest first
  (ties by case id);
* ``POST /api/v1/cases/<case_id>/updates``: records the update; ``Idempotency-Key`` required; a key seen
  before gets ``409 Conflict``; an unknown case ``404``.

Test controls: :meth:`add_case` / :meth:`update_case` change cases at run time (an update bumps ``version``
and ``updated_at``), :meth:`fail_next` answers the next N requests with ``503`` (an agency API that fails and
recovers). :func:`sarawak_cases` seeds the scenario: KBRI Kuching refers a group of Indonesian workers
trafficked to palm-oil plantations in Sarawak to Kemensos, and plans their return by road through the
Entikong border post to Pos Pemulangan Pontianak and RPTC Pontianak. Every name, number and date is invented.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from adapters.simulators.server import SimulatorServer

__all__ = ["CaseUpdate", "KemluCaseApiSimulator", "sarawak_cases"]

_MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class CaseUpdate:
    """One update POSTed to the simulator (first delivery of its idempotency key)."""

    case_id: str
    idempotency_key: str
    body: dict[str, Any]


def _consent(at: str) -> dict[str, Any]:
    return {
        "diberikan": True,
        "waktu": at,
        "lingkup": ["RUJUKAN", "BERBAGI_DATA", "PEMULANGAN", "MANAJEMEN_KASUS"],
        "oleh": "SENDIRI",
        "diinformasikan": ["TUJUAN", "PENGGUNAAN_DATA", "HAK_AKSES", "MASA_SIMPAN", "CARA_PENARIKAN"],
    }


_SARAWAK_TPPO = {
    "status_korban": "KORBAN_TPPO",
    "penentu_status": "KBRI",
    "jenis_eksploitasi": ["KERJA_PAKSA"],
    "sektor": "PERKEBUNAN",
    "cara_perekrutan": ["TEMAN", "MEDIA_SOSIAL"],
    "aplikasi": ["FACEBOOK"],
    "cara_kontrol": ["DOKUMEN_DITAHAN", "GAJI_DITAHAN", "JERAT_UTANG"],
}
_SARAWAK_ROUTE = [
    {
        "tahap": "PEREKRUTAN",
        "negara": "ID",
        "provinsi": "Kalimantan Barat",
        "kota": "Sambas",
        "tanggal": "2019-11-01",
    },
    {
        "tahap": "TRANSIT",
        "negara": "ID",
        "provinsi": "Kalimantan Barat",
        "kota": "Entikong",
        "tanggal": "2019-11-20",
    },
    {
        "tahap": "EKSPLOITASI",
        "negara": "MY",
        "provinsi": "Sarawak",
        "kota": "Bintulu",
        "tanggal": "2019-12-01",
    },
]
_SARAWAK_NETWORK = {
    "id_peringatan": "ALR-KCH-2020-000031",
    "versi": 1,
    "status": "AKTIF",
    "jenis": "PERDAGANGAN_ORANG",
    "rute_negara": ["ID", "MY"],
    "rute_provinsi": ["ID-KB", "MY-13"],
    "pos_lintas_batas": ["PLBN_ENTIKONG"],
    "modus": ["LOWONGAN_PALSU", "NON_PROSEDURAL", "JERAT_UTANG"],
    "cara_perekrutan": ["TEMAN", "MEDIA_SOSIAL"],
    "aplikasi": ["FACEBOOK", "WHATSAPP"],
    "jenis_eksploitasi": ["KERJA_PAKSA"],
    "sektor": ["PERKEBUNAN"],
    "cara_kontrol": ["DOKUMEN_DITAHAN", "GAJI_DITAHAN", "JERAT_UTANG"],
    "peran_pelaku": ["PEREKRUT", "MAJIKAN"],
    "jumlah_korban_terduga": 14,
    "pertama_teramati": "2019-11-01",
    "terakhir_teramati": "2020-08-05",
    "keyakinan": "TINGGI",
    "dilaporkan_ke_polisi": True,
}
_ENTIKONG_PLAN = {
    "status": "DIKONFIRMASI",
    "negara_keberangkatan": "MY",
    "kota_keberangkatan": "Kuching",
    "fasilitas_keberangkatan": "SHELTER_KBRI_KUCHING",
    "pos_lintas_batas": "PLBN_ENTIKONG",
    "negara_kedatangan": "ID",
    "titik_kedatangan": "POS_PEMULANGAN_PONTIANAK",
    "tujuan_lanjutan": "RPTC_PONTIANAK",
    "tanggal_berangkat": "2020-08-18",
    "tanggal_tiba": "2020-08-18",
    "moda": "DARAT",
    "perlu_pendamping": True,
    "pendamping": "IOM",
    "dokumen": "SPLP",
    "perlu_skrining": True,
    "skrining_selesai": True,
    "perlu_karantina": True,
}


def _worker(
    *,
    case_id: str,
    updated_at: str,
    first: str,
    last: str | None,
    gender: str,
    birthdate: str,
    splp: str,
    minor: bool = False,
) -> dict[str, Any]:
    wni: dict[str, Any] = {
        "nama_depan": first,
        "tanggal_lahir": birthdate,
        "jenis_kelamin": gender,
        "kewarganegaraan": ["ID"],
        "nomor_identitas": splp,
        "jenis_identitas": "SPLP",
        "bahasa_utama": "ind",
        "bahasa_kedua": "msa",
        "pendidikan_terakhir": "SMP",
        "telepon": "+447700900125",
        "alamat": {"kota": "Kabupaten Sambas", "provinsi": "Kalimantan Barat", "negara": "ID"},
    }
    if last:
        wni["nama_belakang"] = last
    item: dict[str, Any] = {
        "id_kasus": case_id,
        "mission": "kuching",
        "version": 1,
        "updated_at": updated_at,
        "tppo": True,
        "kategori": "TPPO",
        "status": "AKTIF",
        "wni": wni,
        "kesehatan": {
            "hasil_skrining": "LAYAK",
            "covid19": "NEGATIF",
            "jenis_tes": "RAPID_ANTIBODI",
            "tanggal_tes": "2020-08-12",
            "butuh_dukungan_psikososial": True,
        },
        "tppo_detail": copy.deepcopy(_SARAWAK_TPPO),
        "kronologi": copy.deepcopy(_SARAWAK_ROUTE),
        "pelaku": [
            {"peran": ["PEREKRUT"], "nama": "Pak Sampel (alias)", "hubungan": "KENALAN", "negara": "ID"},
            {"peran": ["MAJIKAN"], "organisasi": "Fictional Plantation Sdn Bhd", "hubungan": "TIDAK_KENAL"},
        ],
        "lokasi_saat_ini": {"negara": "MY", "fasilitas": "SHELTER_KBRI_KUCHING"},
        "rombongan": {"id_rombongan": "ALR-KCH-2020-000045", "jumlah": 14},
        "persetujuan": _consent("2020-08-07T10:30:00+08:00"),
        "dasar_hukum": "PERSETUJUAN",
        "rujukan": {
            "kepada": "KEMENSOS",
            "tembusan": ["IOM"],
            "tanggal": "2020-08-10",
            "alasan": "PEMULANGAN",
            "layanan": ["SHELTER", "PSIKOSOSIAL", "PEMULANGAN", "REINTEGRASI"],
            "prioritas": "MENDESAK",
        },
        "pemulangan": copy.deepcopy(_ENTIKONG_PLAN),
        "jaringan": copy.deepcopy(_SARAWAK_NETWORK),
    }
    if minor:
        item["anak"] = {
            "di_bawah_umur": True,
            "usia_ditaksir": True,
            "tanpa_pendamping": True,
            "wali": {"hubungan": "NEGARA", "lembaga": "KEMENSOS"},
        }
        item["persetujuan"]["oleh"] = "WALI"
    return item


def sarawak_cases() -> list[dict[str, Any]]:
    """The seeded scenario: four TPPO cases of KBRI Kuching (one a child), one non-TPPO Kuching case that
    must never leave the embassy, and one TPPO case of KBRI Kuala Lumpur (another mission)."""
    cases = [
        _worker(case_id="KBRI-KCH-2020-000123", updated_at="2020-08-10T09:00:00+08:00", first="Budi",
                last="Sampel", gender="L", birthdate="1994-02-11", splp="SPLP-0000123"),
        _worker(case_id="KBRI-KCH-2020-000124", updated_at="2020-08-10T09:05:00+08:00", first="Dewi",
                last="Sampel", gender="P", birthdate="2004-06-30", splp="SPLP-0000124", minor=True),
        _worker(case_id="KBRI-KCH-2020-000125", updated_at="2020-08-10T09:10:00+08:00", first="Rudi",
                last="Fiktif", gender="L", birthdate="1990-09-09", splp="SPLP-0000125"),
        _worker(case_id="KBRI-KCH-2020-000126", updated_at="2020-08-10T09:15:00+08:00", first="Sri",
                last=None, gender="P", birthdate="1998-12-24", splp="SPLP-0000126"),
    ]  # fmt: skip
    cases.append(
        {
            "id_kasus": "KBRI-KCH-2020-000130",
            "mission": "kuching",
            "version": 1,
            "updated_at": "2020-08-10T09:20:00+08:00",
            "tppo": False,  # a lost passport: citizen protection, not trafficking; it stays in the embassy
            "kategori": "DOKUMEN_HILANG",
            "status": "AKTIF",
            "wni": {"nama_depan": "Joko", "nama_belakang": "Contoh", "jenis_kelamin": "L"},
        }
    )
    kl = _worker(case_id="KBRI-KL-2020-000310", updated_at="2020-08-10T09:25:00+08:00", first="Ani",
                 last="Contoh", gender="P", birthdate="1992-01-15", splp="SPLP-0000310")  # fmt: skip
    kl["mission"] = "kuala-lumpur"
    kl["tppo_detail"]["sektor"] = "RUMAH_TANGGA"
    kl["pemulangan"] = None
    kl["jaringan"] = {**_SARAWAK_NETWORK, "id_peringatan": "ALR-KL-2020-000008", "jumlah_korban_terduga": 6}
    cases.append(kl)
    return cases


def _instant(value: str) -> datetime:
    """The instant of an ``updated_at``. One with no UTC form (``0001-01-01T00:00:00+01:00``, planted by a
    test) counts as the latest instant, so it is served with every page, as the misbehaving case API of
    issue 18 did."""
    local = datetime.fromisoformat(value.replace("Z", "+00:00"))
    try:
        return local.astimezone(UTC)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


class KemluCaseApiSimulator(SimulatorServer):
    """``async with KemluCaseApiSimulator() as api:`` serves the case API at ``api.url`` (a base URL)."""

    def __init__(self, cases: Iterable[Mapping[str, Any]] | None = None, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._cases: dict[str, dict[str, Any]] = {}
        self._last_stamp = datetime(2000, 1, 1, tzinfo=UTC)
        for case in sarawak_cases() if cases is None else cases:
            self.add_case(case)
        self.updates: list[CaseUpdate] = []
        self.erased: list[str] = []
        """Case ids whose exchange updates were deleted on an erasure request (``hapus_data``)."""
        self.update_attempts = 0
        self.gets: list[dict[str, str]] = []

    # ---- test controls ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.origin}/"

    @property
    def cases(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(case) for case in self._ordered()]

    def case(self, case_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._cases[case_id])

    def add_case(self, case: Mapping[str, Any]) -> dict[str, Any]:
        """Add (or replace) a case; ``version`` defaults to 1 and ``updated_at`` to now."""
        item = copy.deepcopy(dict(case))
        item.setdefault("version", 1)
        if "updated_at" not in item:
            item["updated_at"] = self._stamp()
        self._cases[str(item["id_kasus"])] = item
        return copy.deepcopy(item)

    def update_case(self, case_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into a case as the embassy system would: a new version, stamped now."""
        item = self._cases[case_id]
        _merge(item, changes)
        item["version"] = int(item.get("version", 0)) + 1
        item["updated_at"] = self._stamp()
        return copy.deepcopy(item)

    def _stamp(self) -> str:
        now = max(datetime.now(UTC), self._last_stamp + timedelta(microseconds=1))
        self._last_stamp = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _ordered(self) -> list[dict[str, Any]]:
        return sorted(
            self._cases.values(), key=lambda c: (_instant(str(c["updated_at"])), str(c["id_kasus"]))
        )

    # ---- HTTP -----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/cases", self._list)
        app.router.add_post("/api/v1/cases/{case_id}/updates", self._update)

    async def _list(self, request: web.Request) -> web.Response:
        self.gets.append(dict(request.query))
        failing = self._unavailable()
        if failing is not None:
            return failing
        try:
            since = _instant(request.query["updated_since"])
            page = int(request.query.get("page", "1"))
            size = int(request.query.get("page_size", "100"))
        except (KeyError, ValueError):
            return web.json_response({"error": "updated_since (RFC 3339), page and page_size"}, status=400)
        if page < 1 or not 1 <= size <= _MAX_PAGE_SIZE or since.tzinfo is None:
            return web.json_response({"error": "bad paging parameters"}, status=400)
        mission = request.query.get("mission")
        matching = [
            case
            for case in self._ordered()
            if _instant(str(case["updated_at"])) >= since
            and (mission is None or case.get("mission") == mission)
        ]
        start = (page - 1) * size
        items = matching[start : start + size]
        next_page = page + 1 if start + size < len(matching) else None
        return web.json_response({"items": items, "next_page": next_page})

    async def _update(self, request: web.Request) -> web.Response:
        self.update_attempts += 1
        failing = self._unavailable()
        if failing is not None:
            return failing
        key = request.headers.get("Idempotency-Key")
        if not key:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        case_id = request.match_info["case_id"]
        if case_id not in self._cases:
            return web.json_response({"error": "unknown case"}, status=404)
        if self._is_repeat(key):
            return web.json_response({"status": "duplicate"}, status=409)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict) or body.get("id_kasus") != case_id:
            return web.json_response({"error": "body must be an update of this case"}, status=422)
        self._accept(key)
        if body.get("jenis_pembaruan") == "PERUBAHAN_PERSETUJUAN" and body.get("hapus_data") is True:
            # erasure: drop what this system received about the case through the exchange
            self.updates = [u for u in self.updates if u.case_id != case_id]
            self.erased.append(case_id)
        self.updates.append(CaseUpdate(case_id, key, body))
        return web.json_response({"status": "recorded"}, status=201)
