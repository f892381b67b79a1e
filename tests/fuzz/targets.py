"""Fuzz targets: one function per parser a hostile input reaches, each taking bytes and checking invariants.

Shared by the bounded property tests (``tests/fuzz/test_properties.py``, hypothesis, in the default suite)
and the long run (``python -m tests.fuzz.long_run``: a seeded mutation engine, or atheris when installed).
A target raises :class:`FuzzFailure` (or any exception: the harness reports it with the input) when an
invariant breaks; "the input was refused with a reason code" is success. The invariants, per target:

* ``record`` — the Kafka record path (headers, key, value, topic) mutated from a real signed event: the
  verifier returns Accepted or Rejected with a documented reason, never raises; a rejected record's
  dead-letter record fits its bound.
* ``kemensos_csv`` / ``iom_csv`` — a Kemensos CSV drop / an IOM HTCDS CSV: every row ends as an event to
  publish, a rejection with a reason code, or skipped; the reader raises only its file-level problem.
* ``xlsx`` — an IOM workbook mutated from a real export: read_sheet and its rows raise only FileProblem.
* ``kemlu`` — a Kemlu case API response: it is a page (or "unavailable"), each item is published,
  skipped or quarantined, and no ``updated_at`` moves the cursor beyond now plus the skew.
* ``registry`` / ``time`` — a registry TOML document / an RFC 3339 text: a value, or ``registry.invalid``
  / a time reason code.
* ``registry_version`` — a signed registry version (DSSE envelope bytes) offered to a chain with version 1 in
  force: an outcome, never an exception, and nothing applied but the untouched signed version 2.

Nothing here needs a broker; the subscriber's loop over fuzzed records is a property test of its own.
"""

from __future__ import annotations

import asyncio
import functools
import io
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from adapters.iom.reader import FileProblem, read_sheet
from adapters.kemensos import CsvDropSource, KemensosMapping
from adapters.kemlu import KemluCaseApiSource, KemluMapping
from adapters.kemlu.source import PollResult, _parse_page, _Unavailable
from adapters.simulators.iom import sample_rows, write_htcds_export
from gateway.bus.deadletter import DeadLetterLimits, dead_letter_record, record_size
from gateway.contract.envelope import Envelope
from gateway.contract.instants import parse_instant
from gateway.contract.policy import topic_for
from gateway.contract.registry import Registry
from gateway.contract.registry_chain import Anchor, RegistryChain
from gateway.contract.registry_changes import draft_from, initial_document
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.verify import Accepted, Rejected
from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import DropEvent, DropRejection
from gateway.sandbox.maintainers import maintainer_set, new_maintainers, signed_version
from tests.world import World, example

__all__ = ["TARGETS", "FuzzFailure", "Mutator", "seeds"]

KCH = "kemlu.kbri-kuching"
_REASONS: Final = frozenset(Reason)


class FuzzFailure(AssertionError):
    """An invariant of a target does not hold for an input."""


class Mutator:
    """Turns fuzzer bytes into decisions (like atheris' FuzzedDataProvider, but ours, so every engine and
    hypothesis drive the targets alike)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._data):
            return 0
        value = self._data[self._at]
        self._at += 1
        return value

    def integer(self, upper: int) -> int:
        """0..upper-1 (0 when the input is used up)."""
        if upper <= 1:
            return 0
        return (self.byte() << 8 | self.byte()) % upper

    def take(self, size: int) -> bytes:
        chunk = self._data[self._at : self._at + size]
        self._at += len(chunk)
        return chunk

    def rest(self) -> bytes:
        chunk = self._data[self._at :]
        self._at = len(self._data)
        return chunk

    def mutate(self, seed: bytes) -> bytes:
        """``seed`` with a few edits driven by the input: flip, insert, delete, truncate, splice, repeat."""
        value = bytearray(seed)
        for _ in range(1 + self.integer(6)):
            op = self.integer(7)
            at = self.integer(len(value) + 1)
            if op == 0 and value:
                value[min(at, len(value) - 1)] ^= 1 << self.integer(8)
            elif op == 1:
                value[at:at] = self.take(1 + self.integer(16))
            elif op == 2:
                del value[at : at + 1 + self.integer(64)]
            elif op == 3:
                del value[at:]
            elif op == 4:
                value[at:at] = _INTERESTING[self.integer(len(_INTERESTING))]
            elif op == 5 and value:
                end = min(len(value), at + 1 + self.integer(32))
                value[at:at] = value[at:end] * (1 + self.integer(8))
            else:
                value[at : at + 1] = b""
        return bytes(value)


_INTERESTING: Final[tuple[bytes, ...]] = (
    b"0001-01-01T00:00:00+01:00", b"9999-12-31T23:59:59-01:00", b"0999-01-01T00:00:00Z", b"\x00",
    b"\xc2\x85", b"\xff\xfe", b'"', b",", b";", b"\r\n", b"\n", b"=HYPERLINK(\"x\")", b"+cmd|' /C calc'!A0",
    b"<!DOCTYPE x [<!ENTITY e \"e\">]>", b"{", b"}", b"[", b"]", b"1e309", b"-0", b"9" * 40, b"null",
    b"true", b"\\u0000", b"\\ud800", b"PK\x03\x04",
)  # fmt: skip


# ---- seeds (real inputs to mutate) ---------------------------------------------------------------------


@functools.cache
def _world() -> World:
    return World.build()


@functools.cache
def seeds() -> dict[str, list[bytes]]:
    """Real, valid inputs per target (built once): what the mutations start from."""
    world = _world()
    records = []
    for name in ("alert.network", "alert.group-arrival"):
        payload = example(name, "1.0")[0][1]
        event = world.event(f"id.trafficking.{name}", payload, by=KCH)
        records.append(_encode_record(event))
    kemensos_csv = [
        b"no_kasus,nama,jenis_kelamin,id_rptc,tanggal_masuk,asal,jenis_penerimaan,karantina,status_covid,"
        b"karantina_sampai,anak,dirujuk_oleh\r\nKBRI-KCH-2020-000123,Siti Contoh,P,RPTC-PTK,19/08/2020 14:20,"
        b"PP-PTK,pos-pemulangan,y,negatif,01/09/2020,t,KBRI Kuching\r\n",
    ]
    iom = io.StringIO()
    write_rows = [",".join(["record_type", "case_id", "assistance_type", "assistance_date", "quantity"])]
    write_rows.append("assistance,KBRI-KCH-2020-000123,Hygiene kit,2020-08-26,1")
    iom.write("\n".join(write_rows) + "\n")
    kemlu = [Path(__file__).resolve().parents[1].joinpath("data/agencies/kemlu/cases-page.json").read_bytes()]
    registry = [Path(__file__).resolve().parents[2].joinpath("deploy/registry.example.toml").read_bytes()]
    times = [b"2026-01-01T00:00:00Z", b"2026-12-31T23:59:59.999999999+07:00"]
    return {
        "record": records,
        "kemensos_csv": kemensos_csv,
        "iom_csv": [iom.getvalue().encode()],
        "xlsx": [_xlsx_seed()],
        "kemlu": kemlu,
        "registry": registry,
        "registry_version": list(_registry_versions()[:2]),
        "time": times,
    }


def _xlsx_seed() -> bytes:
    import tempfile  # noqa: PLC0415 - seed building only

    with tempfile.TemporaryDirectory() as folder:
        path = write_htcds_export(Path(folder) / "seed.xlsx", sample_rows())
        return path.read_bytes()


# A record is serialised for mutation as: key \x1e value \x1e name=value\x1f name=value...
def _encode_record(event: Envelope) -> bytes:
    record = event.to_kafka()
    headers = b"\x1f".join(name.encode() + b"=" + value for name, value in record.headers)
    return record.key + b"\x1e" + record.value + b"\x1e" + headers


def _decode_record(raw: bytes) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    parts = raw.split(b"\x1e", 2)
    key = parts[0] if parts[0] != b"-" else None
    value = parts[1] if len(parts) > 1 else None
    headers = []
    for item in parts[2].split(b"\x1f") if len(parts) > 2 and parts[2] else []:
        name, _, text = item.partition(b"=")
        headers.append((name.decode("utf-8", "replace"), text))
    return key, value, headers


# ---- targets ---------------------------------------------------------------------------------------------


def record_target(data: bytes) -> None:
    world = _world()
    mutator = Mutator(data)
    seed = seeds()["record"][mutator.integer(len(seeds()["record"]))]
    key, value, headers = _decode_record(mutator.mutate(seed))
    topic = (topic_for(KCH, "alert", 1), topic_for("iom", "alert", 1), "xchg.x")[mutator.integer(3)]
    verdict = _verifier(world).verify_kafka(value, headers, key, topic=topic)
    if isinstance(verdict, Rejected):
        if verdict.reason not in _REASONS:
            raise FuzzFailure(f"unknown reason {verdict.reason!r}")
        bound = DeadLetterLimits(max_request_bytes=8192 + mutator.integer(65536)).max_record_bytes
        letter = dead_letter_record(
            key=key, value=value, headers=headers, reason=str(verdict.reason), detail=verdict.detail,
            origin=(topic, 0, 1), by="kemensos", at="2026-01-01T00:00:00Z", max_bytes=bound,
        )  # fmt: skip
        if record_size(letter.key, letter.value, letter.headers) > bound:
            raise FuzzFailure("dead-letter record over its bound")
    elif not isinstance(verdict, Accepted):
        raise FuzzFailure(f"verdict of type {type(verdict).__name__}")


@functools.cache
def _verifier(world: World) -> Any:
    return world.verifier("kemensos")


@functools.cache
def _kemensos() -> CsvDropSource:
    return CsvDropSource(Path("/nonexistent"), KemensosMapping.load())


def kemensos_csv_target(data: bytes) -> None:
    mutator = Mutator(data)
    content = mutator.mutate(seeds()["kemensos_csv"][0])
    source = _kemensos()
    kind = source.mapper.mapping.kind_of("penerimaan_2020-08-19.csv")
    assert kind is not None
    for number, record in source._rows(kind, "0" * 64, content):
        _check_record(number, record)


def _check_record(number: object, record: object) -> None:
    if not (number is None or isinstance(number, int)):
        raise FuzzFailure(f"record number {number!r}")
    if isinstance(record, DropRejection):
        if record.reason not in {str(r) for r in _REASONS}:
            raise FuzzFailure(f"unknown reason {record.reason!r}")
    elif not (record is None or isinstance(record, DropEvent)):
        raise FuzzFailure(f"record of type {type(record).__name__}")


def iom_csv_target(data: bytes) -> None:
    _read_iom(".csv", Mutator(data).mutate(seeds()["iom_csv"][0]))


def xlsx_target(data: bytes) -> None:
    _read_iom(".xlsx", Mutator(data).mutate(seeds()["xlsx"][0]))


def _read_iom(suffix: str, content: bytes) -> None:
    import tempfile  # noqa: PLC0415

    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(content)
        handle.flush()
        try:
            sheet = read_sheet(Path(handle.name), max_bytes=1024 * 1024)
            for number, record in sheet.records():
                if not isinstance(number, int) or not all(isinstance(v, str) for v in record.values()):
                    raise FuzzFailure("a row that is not (number, {column: text})")
        except FileProblem as problem:
            if problem.reason not in _REASONS:
                raise FuzzFailure(f"unknown reason {problem.reason!r}") from None


class _Publish:
    async def __call__(self, event_type: str, data: Mapping[str, Any], **kwargs: Any) -> Any:
        if data.get("case_id") == "KBRI-KCH-2020-000124":
            raise GatewayError(Reason.SCHEMA_INVALID, "refused")
        return None


@functools.cache
def _kemlu() -> KemluCaseApiSource:
    import tempfile  # noqa: PLC0415

    from yarl import URL  # noqa: PLC0415

    now = datetime(2026, 6, 1, tzinfo=UTC)
    return KemluCaseApiSource(
        base_url=URL("http://127.0.0.1:9"), mission="kuching", party=KCH,
        state_dir=Path(tempfile.mkdtemp(prefix="xchg-fuzz-kemlu-")), mapping=KemluMapping.load(),
        now=lambda: now, on_quarantine=lambda *_: None,
    )  # fmt: skip


def kemlu_target(data: bytes) -> None:
    source = _kemlu()
    raw = Mutator(data).mutate(seeds()["kemlu"][0])
    try:
        items, _next_page = _parse_page(raw)
    except _Unavailable:
        return
    latest = source.window.latest(source._now())
    result = PollResult()
    for item in items[:50]:
        updated = asyncio.run(source._handle_item(item, _Publish(), result))
        if updated is not None and updated[0] > latest:
            raise FuzzFailure("an updated_at beyond now plus the skew would move the cursor")
    source.quarantine_file.unlink(missing_ok=True)  # keep the scratch folder small over a long run


def registry_target(data: bytes) -> None:
    raw = Mutator(data).mutate(seeds()["registry"][0])
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):
        return
    try:
        Registry.from_mapping(document)
    except GatewayError as exc:
        if exc.reason is not Reason.REGISTRY_INVALID:
            raise FuzzFailure(f"registry error {exc.reason}") from None


@functools.cache
def _registry_versions() -> tuple[bytes, bytes, Anchor]:
    """A signed version 1 (2 of 3) and its successor version 2 (signed by another 2 of 3), and the anchor."""
    maintainers = new_maintainers()
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first = signed_version(
        initial_document(_world().registry, maintainer_set(maintainers, 2), now=now), maintainers[:2]
    )
    second = signed_version(draft_from(first, now=now + timedelta(hours=1)), maintainers[1:])
    return first.to_bytes(), second.to_bytes(), Anchor.of(first)


def registry_version_target(data: bytes) -> None:
    """A mutated version 2 offered to a chain with version 1 in force: an outcome, never an exception; and
    whatever is applied has exactly version 2's signed document (no mutation forges a new version)."""
    first, second, anchor = _registry_versions()
    mutator = Mutator(data)
    raw = mutator.mutate(second if mutator.byte() % 4 else first)
    chain = RegistryChain(anchor)
    if chain.update(first).status != "applied":
        raise FuzzFailure("the seed version 1 was not applied")
    outcome = chain.update(raw)
    if outcome.accepted != (outcome.reason is None):
        raise FuzzFailure("an outcome both accepted and with a reason (or neither)")
    if outcome.status == "applied":
        assert outcome.version is not None
        if outcome.version.digest != RegistryVersion.parse(second).digest:
            raise FuzzFailure("a mutated registry version was applied")


def time_target(data: bytes) -> None:
    mutator = Mutator(data)
    text = mutator.mutate(seeds()["time"][mutator.integer(2)]).decode("utf-8", "replace")
    try:
        instant = parse_instant(text)
    except GatewayError as exc:
        if exc.reason not in (Reason.CE_INVALID_ATTRIBUTE, Reason.TIME_OUT_OF_RANGE):
            raise FuzzFailure(f"time error {exc.reason}") from None
        return
    if instant.tzinfo is None:
        raise FuzzFailure("naive datetime")


#: Name -> target, in the order the long run cycles through them.
TARGETS: Final[Mapping[str, Callable[[bytes], None]]] = {
    "record": record_target,
    "kemensos_csv": kemensos_csv_target,
    "iom_csv": iom_csv_target,
    "xlsx": xlsx_target,
    "kemlu": kemlu_target,
    "registry": registry_target,
    "registry_version": registry_version_target,
    "time": time_target,
}
