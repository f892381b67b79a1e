"""The tamper campaign: many mutations of real logs, each audited, tallied by class and by the reason codes
that caught it. ``test_tamper_campaign.py`` runs a sample in the default suite; the whole campaign (and the
issue's 260,000-entry case) is run by hand:

    .venv/bin/python -m tests.unit.audit.campaign [--large 260000] [--every 1]

Logs: the demo's real log (``tests/data/demo-notary``, log only), the synthetic run of ``_synthetic.py``
(300 records with their dump: log *and* records) and, with ``--large N``, an N-entry log signed every
10,000 entries (log only). A mutation is *caught* when the audit is not OK, and *caught by its class* when
one of its expected reason codes is among the findings. Every class names what it changes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.audit.auditor import Auditor
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.layout import CHECKPOINT_FILE, CHECKPOINT_HISTORY, entries_path, tile_path
from gateway.audit.leaf import ConsumedRecord, Leaf
from gateway.audit.note import (
    CosignatureV1Signer,
    Ed25519Signer,
    Note,
    NoteSignature,
    sign_note,
    verifier_from_vkey,
)
from gateway.audit.report import AuditReport
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness
from gateway.contract.keys import SigningKey
from gateway.contract.verify import EventVerifier
from tests.paths import DATA
from tests.unit.audit._synthetic import Run, build_run, write_log

__all__ = ["Mutation", "Tally", "demo_mutations", "large_mutations", "run_campaign", "synthetic_mutations"]

DEMO = DATA / "demo-notary"


@dataclass(frozen=True)
class Mutation:
    """One change to a copy of a log (``change(log_dir)``), optionally with other records; the reason codes
    any one of which shows it."""

    kind: str
    name: str
    change: Callable[[Path], None]
    expected: frozenset[str]
    records: Sequence[ConsumedRecord] | None = None


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    caught: Counter[str] = field(default_factory=Counter)
    by_class: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)

    def add(self, mutation: Mutation, report: AuditReport) -> None:
        reasons = {str(f.reason) for f in report.findings} | set(report.suppressed)
        self.tried[mutation.kind] += 1
        self.codes.setdefault(mutation.kind, Counter()).update(reasons)
        if not report.ok:
            self.caught[mutation.kind] += 1
        if reasons & mutation.expected:
            self.by_class[mutation.kind] += 1
        else:
            self.missed.append(f"{mutation.kind}: {mutation.name} -> {sorted(reasons) or 'OK'}")

    def table(self) -> str:
        lines = [f"{'class':<34} {'tried':>6} {'caught':>7} {'by class':>9}  codes seen (mutations)"]
        for kind in self.tried:
            codes = ", ".join(f"{code} {n}" for code, n in sorted(self.codes[kind].items()))
            lines.append(
                f"{kind:<34} {self.tried[kind]:>6} {self.caught[kind]:>7} {self.by_class[kind]:>9}  {codes}"
            )
        total = sum(self.tried.values())
        lines.append(
            f"{'total':<34} {total:>6} {sum(self.caught.values()):>7} {sum(self.by_class.values()):>9}"
        )
        return "\n".join(lines)


# ---- helpers ---------------------------------------------------------------------------------------------


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _entries(log_dir: Path) -> list[bytes]:
    with TileLog.open(log_dir, read_only=True) as log:
        return list(log.iter_entries())


def _rebuild(log_dir: Path, entries: Sequence[bytes]) -> None:
    """Rewrite the log consistently (tiles, state) with ``entries``, keeping the signed checkpoints: what an
    attacker with disk access but without the notary's key can do."""
    saved = log_dir.parent / (log_dir.name + ".checkpoints")
    saved.mkdir()
    shutil.copytree(log_dir / CHECKPOINT_HISTORY, saved / CHECKPOINT_HISTORY)
    if (log_dir / CHECKPOINT_FILE).exists():
        shutil.copy2(log_dir / CHECKPOINT_FILE, saved / CHECKPOINT_FILE)
    shutil.rmtree(log_dir)
    with TileLog.open(log_dir, durable=False) as log:
        if entries:
            log.append(list(entries))
    shutil.copytree(saved / CHECKPOINT_HISTORY, log_dir / CHECKPOINT_HISTORY)
    if (saved / CHECKPOINT_FILE).exists():
        shutil.copy2(saved / CHECKPOINT_FILE, log_dir / CHECKPOINT_FILE)
    shutil.rmtree(saved)


def _forged(entry: bytes) -> bytes:
    leaf = Leaf.decode(entry)
    return replace(leaf, data_sha256=hashlib.sha256(b"forged" + entry).hexdigest()).encode()


def _leftovers(log_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(log_dir).as_posix()
        for p in (log_dir / "tile").rglob("*")
        if p.is_file() and ".p/" in p.as_posix()
    )


def _signed_sizes(log_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (log_dir / CHECKPOINT_HISTORY).iterdir() if p.name.isdigit())


def _sample(count: int, every: int) -> range:
    return range(0, count, max(1, every))


STRAY = (
    "tile/0/000.p/011",
    "tile/0/0.p/18",
    "tile/0/000.p/18.tmp",
    "tile/entries/000.p/256",
    "tile/7/foo",
    "tile/README",
    "tile/0/x000/000",
    "tile/entries/000.p/0",
)


# ---- mutation classes ------------------------------------------------------------------------------------


def log_mutations(log_dir: Path, *, every: int, vkey: str) -> Iterator[Mutation]:
    """The classes every log shows (the log alone, no records): the old ones and issue 17's."""
    entries = _entries(log_dir)
    size = len(entries)
    signed = _signed_sizes(log_dir)
    notary = verifier_from_vkey(vkey)
    for i in _sample(size, every):
        yield Mutation(
            "entry altered in place",
            f"entry {i}",
            lambda d, i=i: _write_entry_in_place(d, entries, i),
            frozenset({"tlog.corrupt"}),
        )
        yield Mutation(
            "entry deleted (rebuilt)",
            f"entry {i}",
            lambda d, i=i: _rebuild(d, entries[:i] + entries[i + 1 :]),
            frozenset({"checkpoint.root-mismatch", "checkpoint.beyond-log"}),
        )
    yield Mutation(
        "log truncated (rebuilt)",
        f"to {size // 2}",
        lambda d: _rebuild(d, entries[: size // 2]),
        frozenset({"checkpoint.beyond-log"}),
    )
    for s in signed:
        yield Mutation(
            "checkpoint altered",
            f"checkpoints/{s}",
            lambda d, s=s: _alter_checkpoint(d / CHECKPOINT_HISTORY / str(s)),
            frozenset({"note.signature-invalid"}),
        )
    yield Mutation(
        "checkpoint by another key",
        "--checkpoint forged",
        lambda d: (d / CHECKPOINT_HISTORY / "99999999").write_bytes(_forged_checkpoint(notary.name)),
        frozenset({"note.unverified"}),
    )
    # issue 17: unsigned content
    yield Mutation(
        "checkpoint file deleted",
        "checkpoint",
        lambda d: (d / CHECKPOINT_FILE).unlink(),
        frozenset({"log.checkpoint-missing"}),
    )
    for keep in signed[:-1]:
        yield Mutation(
            "checkpoints above N deleted",
            f"keep <= {keep}",
            lambda d, keep=keep: _drop_checkpoints_above(d, keep),
            frozenset({"log.unsigned-tail"}),
        )
    for i in _sample(size, every):
        keep = max(s for s in signed if s <= i)  # the checkpoint before entry i: i is in the unsigned tail
        yield Mutation(
            "unsigned tail rewritten",
            f"entry {i}, checkpoints <= {keep}",
            lambda d, i=i, keep=keep: _rewrite_unsigned(d, entries, i, keep),
            frozenset({"log.unsigned-tail"}),
        )
    # issue 17: files under tile/
    for level in (0, 1, 2):
        beyond = tile_path(level, (size >> (8 * (level + 1))) + 1, 1)
        yield Mutation(
            "garbage tile beyond the tree",
            beyond,
            lambda d, beyond=beyond: _write(d / beyond, bytes(32)),
            frozenset({"log.beyond-tree"}),
        )
    yield Mutation(
        "garbage bundle beyond the tree",
        "entries beyond",
        lambda d: _write(d / entries_path(size // 256 + 1, 3), b"\x00\x01a\x00\x01b\x00\x01c"),
        frozenset({"log.beyond-tree"}),
    )
    for name in STRAY:
        yield Mutation(
            "stray or misnamed file",
            name,
            lambda d, name=name: _write(d / name, b"x"),
            frozenset({"log.stray-file"}),
        )
    for leftover in _leftovers(log_dir):
        yield Mutation(
            "partial tile or bundle altered",
            leftover,
            lambda d, leftover=leftover: _flip(d / leftover, 3),
            frozenset({"log.leftover-mismatch", "tlog.corrupt"}),
        )
    yield Mutation(
        "state rolled back",
        "state",
        lambda d: _roll_back_state(d, size // 2),
        frozenset({"checkpoint.beyond-log"}),
    )
    yield Mutation(
        "bad cosignature (quorum 0)",
        "checkpoint",
        lambda d: _bad_cosignature(d, notary),
        frozenset({"cosign.signature-invalid"}),
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_entry_in_place(log_dir: Path, entries: Sequence[bytes], index: int) -> None:
    """Replace entry ``index`` in its bundle(s) only (tiles untouched): every bundle file holding it."""
    forged = _forged(entries[index])
    number = index // 256
    for path in (log_dir / "tile" / "entries").rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(log_dir).as_posix()
        for width in range(1, 257):
            if relative == entries_path(number, width) and index - number * 256 < width:
                chunk = list(entries[number * 256 : number * 256 + width])
                chunk[index - number * 256] = forged
                path.write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in chunk))


def _alter_checkpoint(path: Path) -> None:
    text = path.read_text()
    root = text.splitlines()[2]
    path.write_text(text.replace(root, base64.b64encode(b"\x02" * 32).decode(), 1))


def _forged_checkpoint(origin: str) -> bytes:
    impostor = Ed25519Signer(origin, SigningKey.generate())
    return sign_note(Checkpoint(origin, 99999999, b"\x03" * 32).to_note_body(), [impostor])


def _drop_checkpoints_above(log_dir: Path, keep: int) -> None:
    for path in (log_dir / CHECKPOINT_HISTORY).iterdir():
        if path.name.isdigit() and int(path.name) > keep:
            path.unlink()
    shutil.copy2(log_dir / CHECKPOINT_HISTORY / str(keep), log_dir / CHECKPOINT_FILE)


def _rewrite_unsigned(log_dir: Path, entries: Sequence[bytes], index: int, keep: int) -> None:
    """The issue's 260,000-entry case in small: checkpoints above ``keep`` deleted, entry ``index`` after it
    rewritten consistently (tiles rebuilt): nothing but the missing signature can show it."""
    changed = list(entries)
    changed[index] = _forged(changed[index])
    _rebuild(log_dir, changed)
    _drop_checkpoints_above(log_dir, keep)


def _roll_back_state(log_dir: Path, size: int) -> None:
    with TileLog.open(log_dir, read_only=True) as log:
        root = log.root_at(size)
    (log_dir / "state").write_text(f"xchg-tlog-state/v1\n{size}\n{base64.b64encode(root).decode()}\n")


_COSIGNER = CosignatureV1Signer("kemensos.cosigner", SigningKey.generate())


def _bad_cosignature(log_dir: Path, notary: object) -> None:
    witness = Witness(_COSIGNER, {notary.name: [notary]})  # type: ignore[attr-defined]
    note = (log_dir / CHECKPOINT_FILE).read_bytes()
    parsed = Note.parse(note + witness.add_checkpoint(note, old_size=0, proof=[]).encode())
    good = parsed.signatures[-1]
    bad = NoteSignature(good.name, good.key_id, good.signature[:8] + bytes(64))
    (log_dir / CHECKPOINT_FILE).write_bytes(Note(parsed.text, (*parsed.signatures[:-1], bad)).to_bytes())


def record_mutations(run: Run, *, every: int) -> Iterator[Mutation]:
    """Classes that need the Kafka records (the synthetic run and its dump)."""
    records = run.records
    for i in _sample(len(records), every):
        target = records[i]
        value = (target.value or b"") + b" "
        yield Mutation(
            "record rewritten on the broker",
            f"record {i}",
            lambda d: None,
            frozenset({"leaf.record-mismatch"}),
            [replace(r, value=value) if j == i else r for j, r in enumerate(records)],
        )
        yield Mutation(
            "record gone from Kafka",
            f"record {i}",
            lambda d: None,
            frozenset({"leaf.record-missing"}),
            [r for j, r in enumerate(records) if j != i],
        )
        yield Mutation(
            "leaf data digest forged (rebuilt)",
            f"entry {i}",
            lambda d, i=i: _rebuild(d, [_forged(e) if j == i else e for j, e in enumerate(run.entries)]),
            frozenset({"leaf.record-mismatch"}),
            records,
        )
    last = records[-1]
    yield Mutation(
        "record the notary missed",
        "one past the last offset",
        lambda d: None,
        frozenset({"record.not-logged"}),
        [*records, replace(last, offset=last.offset + 1)],
    )


def synthetic_mutations(run: Run, *, every: int) -> Iterator[Mutation]:
    yield from log_mutations(run.log_dir, every=every, vkey=run.vkey)
    yield from record_mutations(run, every=every)
    yield Mutation(
        "needed partial tile deleted",
        "a checkpoint inside a tile",
        lambda d: _needed_partial_deleted(d, run),
        frozenset({"log.tile-missing"}),
        run.records[:120],  # the log is rebuilt with the first 120 records' leaves
    )


def _needed_partial_deleted(log_dir: Path, run: Run) -> None:
    shutil.rmtree(log_dir)
    write_log(log_dir, run.entries[:120], run.signer, sizes=(0, 50, 120))
    (log_dir / tile_path(0, 0, 50)).unlink()


def demo_mutations(*, every: int) -> Iterator[Mutation]:
    yield from log_mutations(DEMO / "log", every=every, vkey=(DEMO / "notary.vkey").read_text().strip())


# ---- a large log -----------------------------------------------------------------------------------------


def build_large(root: Path, run: Run, count: int, every: int = 10_000) -> Path:
    """A ``count``-entry log of well-formed, distinct leaves, signed every ``every`` entries."""
    base = [Leaf.decode(e) for e in run.entries]
    entries = [
        replace(base[i % len(base)], topic="xchg.kemensos.case.v1", partition=0, offset=i).encode()
        for i in range(count)
    ]
    log_dir = root / "large"
    write_log(log_dir, entries, run.signer, sizes=range(0, count + 1, every))
    return log_dir


def large_mutations(log_dir: Path, count: int) -> Iterator[Mutation]:
    entries = _entries(log_dir)
    target = min(259_500, count - 500)
    yield Mutation(
        "issue 17: 260k case",
        f"checkpoints > 100000 deleted, entry {target} rewritten consistently",
        lambda d: _rewrite_unsigned(d, entries, target, min(100_000, count // 2 // 10_000 * 10_000)),
        frozenset({"log.unsigned-tail"}),
    )
    yield Mutation(
        "issue 17: 260k case",
        f"checkpoints > 100000 deleted, entry {target} altered in place",
        lambda d: (
            _drop_checkpoints_above(d, min(100_000, count // 2 // 10_000 * 10_000)),
            _write_entry_in_place(d, entries, target),
        ),
        frozenset({"log.unsigned-tail"}),
    )
    yield Mutation(
        "garbage tile beyond the tree",
        "level 2",
        lambda d: _write(d / tile_path(2, 1, 1), bytes(32)),
        frozenset({"log.beyond-tree"}),
    )
    for leftover in _leftovers(log_dir)[:20]:
        yield Mutation(
            "partial tile or bundle altered",
            leftover,
            lambda d, leftover=leftover: _flip(d / leftover, 3),
            frozenset({"log.leftover-mismatch", "tlog.corrupt"}),
        )


# ---- running ---------------------------------------------------------------------------------------------


def audit(
    log_dir: Path, vkey: str, *, records: Sequence[ConsumedRecord] | None, verifier: EventVerifier | None
) -> AuditReport:
    with Auditor(log_dir, notary_keys=[verifier_from_vkey(vkey)], event_verifier=verifier, cosigners=[
        _COSIGNER.verifier()
    ]) as auditor:  # fmt: skip
        auditor.load_stored_checkpoints()
        auditor.scan_log()
        if records is not None:
            for record in records:
                auditor.check_record(record)
            auditor.finish_records("campaign")
        return auditor.finish()


def run_campaign(
    source: Path,
    vkey: str,
    mutations: Iterator[Mutation],
    tally: Tally,
    *,
    records: Sequence[ConsumedRecord] | None = None,
    verifier: EventVerifier | None = None,
) -> None:
    """Apply each mutation to a fresh copy of ``source`` and audit it; ``records`` (with ``verifier``) are
    checked unless the mutation brings its own."""
    untouched = audit(source, vkey, records=records, verifier=verifier)
    if not untouched.ok:
        raise AssertionError(f"the untouched log must pass:\n{untouched.summary()}")
    with tempfile.TemporaryDirectory(prefix="xchg-campaign-") as scratch:
        for mutation in mutations:
            copy = Path(scratch) / "log"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(source, copy)
            mutation.change(copy)
            chosen = mutation.records if mutation.records is not None else records
            tally.add(mutation, audit(copy, vkey, records=chosen, verifier=verifier))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="mutate every k-th entry/record (default all)")
    parser.add_argument("--large", type=int, default=0, help="also an N-entry log (the issue's: 260000)")
    args = parser.parse_args()
    tally = Tally()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xchg-campaign-run-") as root:
        run_campaign(
            DEMO / "log", (DEMO / "notary.vkey").read_text().strip(), demo_mutations(every=args.every), tally
        )
        print(f"demo log done ({time.perf_counter() - started:.0f} s)", flush=True)
        run = build_run(Path(root))
        verifier = run.verifier()
        run_campaign(run.log_dir, run.vkey, synthetic_mutations(run, every=args.every * 7), tally,
                     records=run.records, verifier=verifier)  # fmt: skip
        print(f"synthetic run done ({time.perf_counter() - started:.0f} s)", flush=True)
        if args.large:
            large = build_large(Path(root), run, args.large)
            run_campaign(large, run.vkey, large_mutations(large, args.large), tally)
            print(f"large log done ({time.perf_counter() - started:.0f} s)", flush=True)
    print(tally.table())
    print(f"missed by class ({len(tally.missed)}):", *tally.missed, sep="\n  ")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
