"""SIMULATOR of the Kemensos case system, and synthetic Kemensos CSV exports. For tests and the demo only.

Kemensos' case-management system is not public, so this stands in for it: a small aiohttp server on a
loopback port that accepts what the ``kemensos-case-system`` sink sends (``POST /kasus``, the native
record shape of :mod:`adapters.kemensos.sink`) and behaves the way a well-built agency API should:

* ``201`` the first time it sees an ``Idempotency-Key``, ``409 Conflict`` for a repeat (the sink counts a
  409 as delivered), ``400`` without a key or without a JSON object body;
* ``fail_next(n)``: the next ``n`` requests get ``503`` before anything is stored (a system that is down),
  to exercise the sink's retries;
* every request is recorded (:attr:`requests`, raw) and every accepted record kept once (:attr:`cases`,
  unique); ``GET /kasus`` lists the accepted records (for the demo).

It holds what the real system would hold, unsealed personal data included, so it only ever binds to a
loopback address. :func:`write_sample_drops` writes the CSV exports of the seed article's scenario (RPTC
Pontianak admitting workers returned from Sarawak through Entikong, its bed capacity, the group arriving
at Pos Pemulangan Pontianak) with invented people only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from adapters.kemensos.source import write_drop
from adapters.simulators.server import SimulatorServer

__all__ = [
    "SAMPLE_DROPS",
    "CaseRequest",
    "KemensosCaseSystemSimulator",
    "write_sample_drops",
]

_PATH: Final = "/kasus"


@dataclass(frozen=True, slots=True)
class CaseRequest:
    """One request as the simulator received it: its key, the status it answered and the parsed body."""

    idempotency_key: str | None
    status: int
    body: Mapping[str, Any] | None


class KemensosCaseSystemSimulator(SimulatorServer):
    """SIMULATOR: ``async with KemensosCaseSystemSimulator() as sim:`` serves ``sim.url`` (``.../kasus``)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.requests: list[CaseRequest] = []
        self.cases: dict[str, Mapping[str, Any]] = {}
        self.consent_changes: list[Mapping[str, Any]] = []
        """Consent changes received (``jenis_data = perubahan_persetujuan``), erasure requests included."""
        self.erased: list[str] = []
        """Case ids whose records were deleted on an erasure request (``hapus_data``)."""

    # ---- what tests and the demo read ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.origin}{_PATH}"

    @property
    def raw_count(self) -> int:
        """Every request received, failed and repeated ones included."""
        return len(self.requests)

    @property
    def unique_count(self) -> int:
        """Distinct records accepted (one per idempotency key)."""
        return len(self.cases)

    def statuses(self, key: str) -> list[int]:
        """The status answered to each request carrying ``key``, in arrival order."""
        return [r.status for r in self.requests if r.idempotency_key == key]

    # ---- server -------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(_PATH, self._post)
        app.router.add_get(_PATH, self._list)

    async def _post(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        failure = self._take_failure()
        if failure is not None:
            return self._answer(key, body, failure, {"status": "tidak-tersedia"})
        if not key or body is None:
            return self._answer(key, body, 400, {"status": "ditolak"})
        if self._is_repeat(key):
            return self._answer(key, body, 409, {"status": "sudah-diterima"})
        self._accept(key)
        if body.get("jenis_data") == "perubahan_persetujuan":
            self.consent_changes.append(body)
            if body.get("hapus_data") is True:  # erasure: delete every record of the case
                case_id = body.get("no_kasus")
                self.cases = {k: v for k, v in self.cases.items() if v.get("no_kasus") != case_id}
                self.erased.append(str(case_id))
            return self._answer(key, body, 201, {"status": "diterima"})
        self.cases[key] = body
        return self._answer(key, body, 201, {"status": "diterima"})

    def _answer(
        self, key: str | None, body: Mapping[str, Any] | None, status: int, reply: Any
    ) -> web.Response:
        self.requests.append(CaseRequest(key, status, body))
        return web.json_response(reply, status=status)

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response({"kasus": list(self.cases.values())})


#: The seed article's scenario as Kemensos CSV exports: file name -> (header, rows). Invented people only.
SAMPLE_DROPS: Final[Mapping[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]]] = {
    "kedatangan_2020-08-18.csv": (
        ("no_kedatangan", "pos", "tanggal_kedatangan", "jumlah", "asal_negara", "asal_wilayah",
         "pos_lintas_batas", "jenis_kepulangan", "moda", "kebutuhan", "koordinator", "pendamping", "status"),
        (
            ("KDT-PTK-2020-0045", "Pos Pemulangan Pontianak", "18/08/2020", "14", "Malaysia", "Sarawak",
             "PLBN Entikong", "campuran", "darat", "skrining-kesehatan;karantina;penampungan;hygiene-kit",
             "KBRI Kuching", "IOM", "aktif"),
            ("KDT-PTK-2020-0046", "Pos Pemulangan Pontianak", "20/08/2020", "6", "Malaysia", "Sarawak",
             "PLBN Entikong", "deportasi", "darat", "skrining-kesehatan;karantina", "KBRI Kuching", "",
             "aktif"),
        ),
    ),
    "penerimaan_2020-08-19.csv": (
        ("no_kasus", "nama", "jenis_kelamin", "tanggal_lahir", "kewarganegaraan", "id_rptc", "tanggal_masuk",
         "asal", "jenis_penerimaan", "karantina", "kondisi_kesehatan", "status_covid", "karantina_sampai",
         "anak", "tanpa_pendamping", "dirujuk_oleh"),
        (
            ("KBRI-KCH-2020-000123", "Siti Contoh", "P", "14/03/1996", "Indonesia", "RPTC-PTK",
             "19/08/2020 14:20", "Pos Pemulangan Pontianak", "pos-pemulangan", "y",
             "Luka ringan di tangan, sedang pulih.", "negatif", "01/09/2020", "t", "", "KBRI Kuching"),
            ("KBRI-KCH-2020-000124", "Budi Sampel", "L", "01/01/2004", "Indonesia", "RPTC-PTK",
             "2020-08-19T14:45:00+07:00", "Pos Pemulangan Pontianak", "rujukan", "y", "", "menunggu", "",
             "y", "y", ""),
        ),
    ),
    "kapasitas_2020-08-26.csv": (
        ("id_rptc", "waktu", "kapasitas", "terisi", "tersedia", "karantina_tersedia", "menerima",
         "menerima_kelompok"),
        (("RPTC-PTK", "26/08/2020 08:00", "60", "52", "4", "2", "y", "perempuan;laki-laki;anak"),),
    ),
    "keluar_2020-09-15.csv": (
        ("no_kasus", "nama", "id_rptc", "tanggal_masuk", "tanggal_keluar", "tujuan", "negara_tujuan",
         "provinsi_tujuan", "tindak_lanjut", "pihak_tindak_lanjut", "telepon", "kabupaten_kota", "provinsi"),
        (
            ("KBRI-KCH-2020-000123", "Siti Contoh", "RPTC-PTK", "19/08/2020 14:20", "15/09/2020 09:00",
             "keluarga", "Indonesia", "Kalimantan Barat", "y", "Kemensos", "+44 7700 900123",
             "Kabupaten Sambas", "Kalimantan Barat"),
        ),
    ),
}  # fmt: skip


def write_sample_drops(directory: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Write the :data:`SAMPLE_DROPS` (or those named) into ``directory/inbox/`` the atomic-rename way."""
    written = []
    for name in names or tuple(SAMPLE_DROPS):
        header, rows = SAMPLE_DROPS[name]
        written.append(write_drop(directory, name, header, rows))
    return written
