"""Audit log replay: how fast an auditor re-derives a tile log's root from its entries, on one and all cores.

Run: ``.venv/bin/python -m bench.audit_replay`` (full: 100,000 and 1,000,000 entries) or ``--quick``.
Writes ``bench/results/audit_replay.json``.

1. Build: a durable :class:`gateway.audit.tiles.TileLog` (fsync per batch) gets ``--entries`` synthetic
   leaves of ~900 bytes each (shaped like the notary's JSON leaves: digests, CloudEvents attributes, a
   ``dssematerial``), appended in batches of 4,096.
2. Replay of the first N entries, for each N in ``--sizes``, with 1 worker and with one worker per core, each
   replay in fresh processes: read every entry bundle, recompute every leaf hash (SHA-256 of 0x00 || entry),
   hash each full tile of 256 leaves up to its root and compare it with the stored level-1 tile hash, then
   fold the tile roots and the last partial tile with :class:`gateway.audit.merkle.MerkleAccumulator` into
   the tree root and compare it with ``TileLog.root_at(N)``. Workers take contiguous runs of whole tiles, so
   their results combine exactly (RFC 6962 splits a tree of 256*m leaves at multiples of 256).

The full ``gateway audit verify`` (checkpoints, cosignatures, every leaf decoded and, with records, every
record re-verified) is measured by ``bench/audit_verify.py``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from bench._common import (
    argument_parser,
    machine,
    median,
    print_table,
    self_cpu_seconds,
    self_peak_rss_mb,
    write_results,
)
from gateway.audit import merkle
from gateway.audit.layout import TILE_WIDTH, tile_root
from gateway.audit.tiles import TileLog

_BATCH: Final = 4096
_DSSE: Final = "eyJwYXlsb2FkIjoi" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9w" * 6


def synthetic_leaf(index: int) -> bytes:
    """A ~900-byte canonical JSON leaf, distinct per index (no real data)."""
    digest = hashlib.sha256(index.to_bytes(8, "big")).hexdigest()
    leaf = {
        "data_sha256": digest,
        "dataschema": "urn:id.trafficking:schema:case.referral:1.0",
        "dssematerial": _DSSE,
        "format": "xchg-audit-leaf/v1",
        "id": f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-a{digest[17:20]}-{digest[20:32]}",
        "kid": "kemlu.kbri-kuching-sig-2026a",
        "offset": index // 4,
        "partition": index % 4,
        "reason": None,
        "record_sha256": hashlib.sha256(digest.encode()).hexdigest(),
        "source": "kemlu.kbri-kuching",
        "time": "2026-11-28T06:00:00Z",
        "timestamp": 1_795_000_000_000 + index,
        "timestamp_type": "create",
        "topic": "xchg.kemlu.kbri-kuching.case.v1",
        "type": "id.trafficking.case.referral",
        "verdict": "accepted",
    }
    return json.dumps(leaf, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Part:
    """What one replay worker found for its run of tiles."""

    tile_roots: list[bytes]
    tail: list[bytes]  # leaf hashes of the final partial tile (last worker only)
    entries: int
    mismatched_tiles: int
    cpu_seconds: float
    peak_rss_mb: float


def replay_part(directory: str, size: int, first_tile: int, end_tile: int) -> Part:
    """Recompute the leaf hashes of tiles ``[first_tile, end_tile)`` of the tree of ``size`` entries."""
    cpu = self_cpu_seconds()
    log = TileLog.open(directory, read_only=True, durable=False)
    sha256 = hashlib.sha256
    full_tiles = size // TILE_WIDTH
    roots: list[bytes] = []
    tail: list[bytes] = []
    mismatched = entries = 0
    leaves: list[bytes] = []
    start = first_tile * TILE_WIDTH
    stop = min(size, end_tile * TILE_WIDTH)
    tile = first_tile
    for entry in log.iter_entries(start, stop):
        leaves.append(sha256(b"\x00" + entry).digest())
        entries += 1
        if len(leaves) == TILE_WIDTH:
            root = tile_root(leaves)
            if root != log.hash_at(8, tile):  # the stored hash of this tile (level-1 tile entry)
                mismatched += 1
            roots.append(root)
            leaves = []
            tile += 1
    if leaves:
        if tile != full_tiles:
            raise RuntimeError("a partial tile before the end of the tree")
        tail = leaves
    return Part(roots, tail, entries, mismatched, self_cpu_seconds() - cpu, self_peak_rss_mb())


def _warm(_: int) -> int:
    return os.getpid()


def _combine(size: int, parts: Sequence[Part]) -> bytes:
    """The root of ``size`` leaves from the tile roots (in order) and the final partial tile's leaf hashes."""
    tiles = merkle.MerkleAccumulator()
    for part in parts:
        for root in part.tile_roots:
            tiles.append_leaf_hash(root)  # a tile root plays the leaf of the tree of tiles
    tail = merkle.MerkleAccumulator()
    for part in parts:
        for value in part.tail:
            tail.append_leaf_hash(value)
    peaks = [*tiles.peaks, *tail.peaks]  # size = 256*m + r: tile-level peaks, then leaf-level peaks
    return merkle.MerkleAccumulator.from_peaks(size, peaks).root()


@dataclass
class Replay:
    entries: int
    workers: int
    seconds: float
    entries_per_second: float
    cpu_seconds: float
    peak_rss_mb_per_worker: list[float]
    root_ok: bool
    mismatched_tiles: int


def replay(directory: Path, size: int, workers: int) -> Replay:
    """Replay the first ``size`` entries with ``workers`` fresh processes; check the root."""
    tiles = -(-size // TILE_WIDTH)
    bounds = [round(tiles * i / workers) for i in range(workers + 1)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pool.map(_warm, range(workers))  # start the workers (and their imports) before the clock does
        start = time.perf_counter()
        parts = pool.starmap(replay_part, [(str(directory), size, bounds[i], bounds[i + 1])
                                           for i in range(workers)])  # fmt: skip
        root = _combine(size, parts)
        seconds = time.perf_counter() - start
    with TileLog.open(directory, read_only=True, durable=False) as log:
        expected = log.root_at(size)
    entries = sum(p.entries for p in parts)
    if entries != size:
        raise RuntimeError(f"replayed {entries} entries, expected {size}")
    return Replay(size, workers, seconds, size / seconds, sum(p.cpu_seconds for p in parts),
                  [p.peak_rss_mb for p in parts], root == expected,
                  sum(p.mismatched_tiles for p in parts))  # fmt: skip


def build(directory: Path, count: int) -> dict[str, float]:
    """Append ``count`` synthetic leaves durably in batches; returns the append rate."""
    start = time.perf_counter()
    with TileLog.open(directory, durable=True) as log:
        for first in range(0, count, _BATCH):
            log.append([synthetic_leaf(i) for i in range(first, min(count, first + _BATCH))])
        size = log.size
    seconds = time.perf_counter() - start
    return {"entries": size, "seconds": seconds, "entries_per_second": size / seconds,
            "bytes_on_disk": sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="replay sizes (default 100,000 1,000,000)")
    parser.add_argument("--repetitions", type=int, help="replays per size and worker count (default 3)")
    parser.add_argument("--directory", type=Path, help="build the log here and keep it (default: temporary)")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or ([1_000, 3_000] if args.quick else [100_000, 1_000_000]))
    repetitions = args.repetitions or (1 if args.quick else 3)
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    facts = machine()
    directory = args.directory or Path(tempfile.mkdtemp(prefix="xchg-bench-tlog-"))
    try:
        built = build(directory / "log", sizes[-1])
        rate, mib = built["entries_per_second"], built["bytes_on_disk"] / 2**20
        print(
            f"built {built['entries']:,} entries in {built['seconds']:.1f} s ({rate:,.0f}/s, {mib:,.0f} MiB)"
        )
        results: dict[str, list[Replay]] = {}
        for _ in range(repetitions):
            for size in sizes:
                for workers in counts:
                    outcome = replay(directory / "log", size, workers)
                    results.setdefault(f"{size}/{workers}", []).append(outcome)
    finally:
        if args.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for key, outcomes in results.items():
        rate = median(o.entries_per_second for o in outcomes)
        rss = max(max(o.peak_rss_mb_per_worker) for o in outcomes)
        ok = all(o.root_ok and not o.mismatched_tiles for o in outcomes)
        first = outcomes[0]
        medians[key] = {"entries": first.entries, "workers": first.workers, "entries_per_second": rate,
                        "max_worker_peak_rss_mb": rss, "root_ok": ok}  # fmt: skip
        rows.append([first.entries, first.workers, rate, median(o.cpu_seconds for o in outcomes), rss,
                     "yes" if ok else "NO"])  # fmt: skip
    print_table(f"replay: recompute leaf hashes, tile roots and the root (median of {repetitions})",
                ["entries", "workers", "entries/s", "CPU s", "peak RSS MiB per worker", "root matches"],
                rows)  # fmt: skip
    path = write_results("audit_replay", {
        "benchmark": "audit_replay", "quick": args.quick, "machine": facts, "build": built,
        "repetitions": repetitions, "medians": medians,
        "all": {key: [asdict(o) for o in outcomes] for key, outcomes in results.items()},
    })  # fmt: skip
    print(f"\nwrote {path}")
    if not all(m["root_ok"] for m in medians.values()):
        raise SystemExit("a replay did not reproduce the stored root")


if __name__ == "__main__":
    main()
