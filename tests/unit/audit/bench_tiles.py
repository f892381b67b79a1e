"""Append throughput of :class:`gateway.audit.tiles.TileLog` (not collected by pytest; run by hand).

    .venv/bin/python -m tests.unit.audit.bench_tiles --entries 1000000 --batch 1000 --size 128

Prints the append rate, the time of one inclusion and one consistency proof at the end, the time to reopen
(read-only) and to re-verify everything (``check``), and the disk use. ``--no-fsync`` measures the CPU and
file-creation cost without durability (never use that mode in production).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from gateway.audit.tiles import TileLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128, help="bytes per entry (>= 8)")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="parent directory for the temporary log")
    args = parser.parse_args()
    filler = os.urandom(args.size - 8)
    entries = [filler + i.to_bytes(8, "big") for i in range(args.entries)]
    directory = Path(tempfile.mkdtemp(dir=args.dir)) / "log"
    try:
        started = time.perf_counter()
        with TileLog.open(directory, durable=not args.no_fsync) as log:
            for first in range(0, args.entries, args.batch):
                log.append(entries[first : first + args.batch])
            elapsed = time.perf_counter() - started
            mark = time.perf_counter()
            log.inclusion_proof(args.entries // 3)
            log.consistency_proof(args.entries // 2)
            proofs = time.perf_counter() - mark
        mark = time.perf_counter()
        with TileLog.open(directory, read_only=True) as log:
            reopen = time.perf_counter() - mark
            mark = time.perf_counter()
            log.check()
            check = time.perf_counter() - mark
        used = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        print(
            f"entries={args.entries} batch={args.batch} size={args.size}B fsync={not args.no_fsync}: "
            f"{elapsed:.2f} s, {args.entries / elapsed:,.0f} entries/s; 2 proofs {proofs * 1000:.1f} ms; "
            f"reopen {reopen * 1000:.1f} ms; check {check:.2f} s; disk {used / 2**20:.1f} MiB"
        )
    finally:
        shutil.rmtree(directory.parent)


if __name__ == "__main__":
    main()
