"""The full ``gateway audit verify``: a real notary log of signed events, checked end to end by the CLI.

Run: ``.venv/bin/python -m bench.audit_verify`` (full: 100,000 and 1,000,000 entries) or ``--quick``.
Writes ``bench/results/audit_verify.json``.

1. Build, once (cached in ``--cache DIR``, default ``bench/results/audit-verify-cache``, ~4.5 GB for the
   full sizes; reused while its manifest matches): a sandbox registry
   (:func:`gateway.sandbox.deployment.create_sandbox`), then N distinct events signed by KBRI Kuching with
   :func:`gateway.contract.sign.build_event` — alternately an ``alert.network`` (clear) and a
   ``case.referral`` sealed for Kemensos, ~1 KB payloads from ``bench._common`` — as Kafka records on three
   partitions of each topic, signed in a process pool. Each record's leaf is computed with the notary's own
   function (:func:`gateway.audit.leaf.leaf_for_record`) and appended to a
   :class:`gateway.audit.tiles.TileLog` in batches of 1,000 with a checkpoint signed after each batch (the
   notary's defaults ``batch_size`` and ``checkpoint.entries``), in the notary's layout
   (:class:`gateway.audit.notary.CheckpointStore`). The records go to a records dump
   (:func:`gateway.audit.records.write_records_dump`): no broker is needed. Each smaller size is built from
   the same stream (the same first events), as its own log and dump.
2. Verify: ``python -m gateway.cli.main audit verify --log LOG --vkey VKEY --registry REGISTRY --records DUMP
   --workers W --json REPORT``, one subprocess per size and W in (1, number of cores); and the log alone
   (no ``--records``: the worker count does not apply). Measured: wall time; CPU = user + system of the
   command and its worker processes (``wait4``: workers are its children); peak RSS = ``VmHWM`` of the
   command and of each worker, sampled from ``/proc`` every 0.1 s (``ru_maxrss`` is useless here: Linux
   carries the benchmark's own size into a child it spawns). Every report must say OK with every record
   matched, else the benchmark fails.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from bench._common import (
    ALERT_TYPE,
    PUBLISHER,
    READER,
    REFERRAL_TYPE,
    RESULTS,
    ROOT,
    alert_payload,
    argument_parser,
    machine,
    print_table,
    process_peak_rss_mb,
    referral_payload,
    write_results,
)
from gateway.audit.checkpoint import Checkpoint, deployment_origin
from gateway.audit.leaf import ConsumedRecord, leaf_for_record
from gateway.audit.notary import CheckpointStore
from gateway.audit.note import Ed25519Signer, sign_note
from gateway.audit.tiles import TileLog
from gateway.contract.keys import SigningKey
from gateway.contract.policy import event_topic
from gateway.contract.registry import Registry
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.schemas import SchemaStore
from gateway.contract.sign import EventSigner, build_event
from gateway.contract.verify import EventVerifier
from gateway.sandbox.deployment import REGISTRY_FILE, create_sandbox

_FORMAT: Final = "xchg-bench-audit-verify-cache/v2"  # v2: signed registry.json
_BATCH: Final = 1000
"""Entries per append and per signed checkpoint (the notary's ``batch_size`` and ``checkpoint.entries``)."""
_CHUNK: Final = 2000
"""Events signed per task of the build pool."""
_PARTITIONS: Final = 3
_ORIGIN: Final = deployment_origin("bench")
_KID: Final = f"{PUBLISHER}-sig-sandbox"
_SAMPLE_SECONDS: Final = 0.1


# ---- build -----------------------------------------------------------------------------------------------


@dataclass
class Cache:
    """The built logs and dumps, one per size, and what verifying them needs."""

    directory: Path
    sizes: list[int]
    seconds: float = 0.0
    reused: bool = False
    bytes_on_disk: dict[str, int] = field(default_factory=dict)

    @property
    def registry(self) -> Path:
        return self.directory / "sandbox" / REGISTRY_FILE

    @property
    def signing_key(self) -> Path:
        return self.directory / "sandbox" / PUBLISHER / "keys" / f"{_KID}.pem"

    @property
    def vkey(self) -> Path:
        return self.directory / "notary.vkey"

    def log(self, size: int) -> Path:
        return self.directory / f"log-{size}"

    def dump(self, size: int) -> Path:
        return self.directory / f"records-{size}.jsonl"


def build(directory: Path, sizes: Sequence[int], workers: int) -> Cache:
    """Build the logs and dumps of ``sizes`` in ``directory``, or reuse them if its manifest matches."""
    cache = Cache(directory, sorted(sizes))
    manifest_path = directory / "manifest.json"
    wanted = {"format": _FORMAT, "sizes": cache.sizes, "batch": _BATCH}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text("utf-8"))
        if {key: manifest.get(key) for key in wanted} == wanted:
            cache.reused, cache.seconds = True, float(manifest["seconds"])
            cache.bytes_on_disk = manifest["bytes_on_disk"]
            return cache
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    start = time.perf_counter()
    create_sandbox(directory / "sandbox", [PUBLISHER, READER], bootstrap_servers=["localhost:9092"])
    notary = Ed25519Signer(_ORIGIN, SigningKey.generate())
    cache.vkey.write_text(str(notary.verifier().vkey()) + "\n", "utf-8")
    _write_logs(cache, notary, workers)
    cache.seconds = time.perf_counter() - start
    cache.bytes_on_disk = {
        path.name: _disk_bytes(path)
        for path in sorted(directory.iterdir())
        if path.name.startswith(("log-", "records-"))
    }
    manifest = {**wanted, "seconds": cache.seconds, "bytes_on_disk": cache.bytes_on_disk}
    manifest_path.write_text(json.dumps(manifest), "utf-8")  # last: a manifest means a complete cache
    return cache


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _write_logs(cache: Cache, notary: Ed25519Signer, workers: int) -> None:
    """Sign the events in a pool; in event order, write each one's dump line and append its leaf to every
    log still short of its size, signing a checkpoint after each batch (as the notary does)."""
    largest = cache.sizes[-1]
    logs = {size: TileLog.open(cache.log(size), durable=False) for size in cache.sizes}
    stores = {
        size: CheckpointStore(cache.log(size), origin=_ORIGIN, verifiers=[notary.verifier()], durable=False)
        for size in cache.sizes
    }
    dumps = {size: cache.dump(size).open("wb") for size in cache.sizes}
    tasks = [(first, min(_CHUNK, largest - first)) for first in range(0, largest, _CHUNK)]
    batch: list[bytes] = []
    written = 0
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(
            workers, initializer=_start_builder, initargs=(cache.registry, cache.signing_key)
        ) as pool:
            for chunk in pool.imap(_build_chunk, tasks):
                for line, entry in chunk:
                    written += 1
                    for size, handle in dumps.items():
                        if written <= size:
                            handle.write(line)
                    batch.append(entry)
                    if len(batch) == _BATCH or written == largest:
                        _append(logs, stores, notary, batch, written)
                        batch = []
                print(f"\r  built {written:,}/{largest:,} events", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        for log in logs.values():
            log.close()
        for handle in dumps.values():
            handle.close()


def _append(
    logs: dict[int, TileLog],
    stores: dict[int, CheckpointStore],
    notary: Ed25519Signer,
    entries: list[bytes],
    written: int,
) -> None:
    """Append a batch to every log it belongs to and sign that log's new checkpoint."""
    for size, log in logs.items():
        if written - len(entries) >= size:
            continue
        log.append(entries[: size - log.size])
        note = sign_note(Checkpoint(_ORIGIN, log.size, log.root()).to_note_body(), [notary])
        stores[size].save(note, log.size)


@dataclass(frozen=True, slots=True)
class _Builder:
    """One build process's signer, registry, schemas, verifier and payload templates."""

    signer: EventSigner
    registry: Registry
    schemas: SchemaStore
    verifier: EventVerifier
    alert: bytes
    referral: bytes


_builder: _Builder | None = None


def _start_builder(registry_path: Path, key_path: Path) -> None:
    global _builder  # noqa: PLW0603 - one set-up per build process
    registry, schemas = RegistryVersion.parse(registry_path.read_bytes()).registry, SchemaStore.load()
    signer = EventSigner(party=PUBLISHER, kid=_KID, key=SigningKey.load(key_path))
    # Templates: the payloads of bench._common differ only by their id (fixed width below 1,000,000).
    _builder = _Builder(
        signer,
        registry,
        schemas,
        EventVerifier(registry=registry, schemas=schemas),
        orjson.dumps(alert_payload(0)),
        orjson.dumps(referral_payload(0)),
    )


def _build_chunk(task: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """Events ``first .. first+count-1``: (records-dump line, leaf entry) each. Event i is an alert (even
    i) or a referral (odd i), on partition (i // 2) % 3 of its topic, at offset (i // 2) // 3."""
    if _builder is None:
        raise RuntimeError("build process not started")
    b = _builder
    first, count = task
    out: list[tuple[bytes, bytes]] = []
    for i in range(first, first + count):
        now = datetime.now(UTC)
        recipients: tuple[str, ...] = ()
        if i % 2 == 0:  # a clear alert
            event_type = ALERT_TYPE
            data = orjson.loads(b.alert) | {"alert_id": f"ALR-KCH-2020-{i:06d}"}
        else:  # a referral sealed for the reader
            event_type, recipients = REFERRAL_TYPE, (READER,)
            data = orjson.loads(b.referral) | {"case_id": f"KBRI-KCH-2020-{i:06d}"}
        event = build_event(signer=b.signer, registry=b.registry, schemas=b.schemas, event_type=event_type,
                            data=data, recipients=recipients, now=now)  # fmt: skip
        kafka = event.to_kafka()
        record = ConsumedRecord(
            topic=event_topic(event.source, b.schemas.get(event.dataschema)),
            partition=(i // 2) % _PARTITIONS,
            offset=(i // 2) // _PARTITIONS,
            timestamp=int(now.timestamp() * 1000),
            key=kafka.key,
            value=kafka.value,
            headers=tuple(kafka.headers),
        )
        out.append((orjson.dumps(record.to_json()) + b"\n", leaf_for_record(record, b.verifier).encode()))
    return out


# ---- verify ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``gateway audit verify`` subprocess."""

    entries: int
    records: bool
    workers: int | None
    """``--workers`` (None: the log alone, where it does not apply)."""
    seconds: float
    entries_per_second: float
    cpu_seconds: float
    main_peak_rss_mb: float
    worker_peak_rss_mb: list[float]
    total_peak_rss_mb: float
    """The command's peak plus each worker's (an upper bound of the whole tree at any one moment)."""
    exit_code: int
    ok: bool
    matched: int | None


def verify(cache: Cache, size: int, workers: int | None, report: Path) -> Run:
    """Run the CLI once on the log of ``size`` entries (with its records unless ``workers`` is None)."""
    command = [
        sys.executable,
        "-m",
        "gateway.cli.main",
        "audit",
        "verify",
        "--log",
        str(cache.log(size)),
        "--vkey",
        str(cache.vkey),
        "--registry",
        str(cache.registry),
        "--json",
        str(report),
    ]
    if workers is not None:
        command += ["--records", str(cache.dump(size)), "--workers", str(workers)]
    report.unlink(missing_ok=True)
    peaks: dict[int, float] = {}
    stop = threading.Event()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    sampler = threading.Thread(target=_sample, args=(process.pid, peaks, stop), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = code = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    main_peak = peaks.pop(process.pid, math.nan)
    workers_peak = sorted(peaks.values(), reverse=True)
    document: dict[str, Any] = json.loads(report.read_text("utf-8")) if report.is_file() else {}
    records = document.get("records")
    matched = records["matched"] if records else None
    ok = code == 0 and document.get("ok") is True and document.get("log_size") == size
    ok = ok and matched == (size if workers is not None else None)
    return Run(
        size,
        workers is not None,
        workers,
        seconds,
        size / seconds,
        usage.ru_utime + usage.ru_stime,
        main_peak,
        workers_peak,
        main_peak + sum(workers_peak),
        code,
        ok,
        matched,
    )


def _sample(pid: int, peaks: dict[int, float], stop: threading.Event) -> None:
    """Keep the ``VmHWM`` of ``pid`` and its descendants until ``stop`` (VmHWM only grows)."""
    while not stop.wait(_SAMPLE_SECONDS):
        for member in _tree(pid):
            peak = process_peak_rss_mb(member)
            if not math.isnan(peak):  # NaN: gone meanwhile
                peaks[member] = max(peaks.get(member, 0.0), peak)


def _tree(pid: int) -> Iterator[int]:
    yield pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in children:
        yield from _tree(int(child))


# ---- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="log sizes (default 100,000 1,000,000)")
    parser.add_argument("--cache", type=Path, help="where the logs are built and kept for the next run")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or ([600, 1_500] if args.quick else [100_000, 1_000_000]))
    cores = os.cpu_count() or 1
    counts: list[int | None] = [None, *sorted({1, cores})]
    facts = machine()
    name = "audit-verify-cache-quick" if args.quick else "audit-verify-cache"
    cache_dir = args.cache or Path(os.environ.get("XCHG_BENCH_RESULTS") or RESULTS) / name
    cache = build(cache_dir, sizes, cores)
    mib = sum(cache.bytes_on_disk.values()) / 2**20
    print(
        f"{'reused' if cache.reused else 'built'} {cache_dir}: logs of {', '.join(f'{s:,}' for s in sizes)} "
        f"entries ({cache.seconds:,.0f} s to build, {mib:,.0f} MiB)"
    )
    runs: list[Run] = []
    for workers in counts:
        for size in sizes:
            outcome = verify(cache, size, workers, cache_dir / "report.json")
            runs.append(outcome)
            what = "log only" if workers is None else f"log + records, {workers} worker(s)"
            print(f"  {size:,} entries, {what}: {outcome.entries_per_second:,.0f}/s", file=sys.stderr)
    load_at_end = os.getloadavg()
    rows = [
        [
            r.entries,
            "log + records" if r.records else "log only",
            "-" if r.workers is None else r.workers,
            r.seconds,
            r.entries_per_second,
            r.cpu_seconds,
            r.main_peak_rss_mb,
            max(r.worker_peak_rss_mb, default=math.nan),
            r.total_peak_rss_mb,
            "yes" if r.ok else "NO",
        ]
        for r in runs
    ]
    print_table(
        "gateway audit verify, one run each",
        [
            "entries",
            "checks",
            "workers",
            "wall s",
            "entries/s",
            "CPU s",
            "main peak RSS MiB",
            "worker peak RSS MiB",
            "sum of peaks MiB",
            "OK",
        ],
        rows,
    )
    print(f"load average: start {facts['load_average_at_start']}, end {load_at_end}")
    path = write_results(
        "audit_verify",
        {
            "benchmark": "audit_verify",
            "quick": args.quick,
            "machine": facts,
            "load_average_at_end": load_at_end,
            "build": {
                "cache": str(cache_dir),
                "reused": cache.reused,
                "seconds": cache.seconds,
                "bytes_on_disk": cache.bytes_on_disk,
                "checkpoint_every": _BATCH,
            },
            "runs": [asdict(r) for r in runs],
        },
    )
    print(f"\nwrote {path}")
    if not all(r.ok for r in runs):
        raise SystemExit("an audit did not verify the log and its records cleanly")


if __name__ == "__main__":
    main()
