"""The long fuzz run, by command: every target of :mod:`tests.fuzz.targets` for as many inputs as asked.

    .venv/bin/python -m tests.fuzz.long_run --inputs 100000            # seeded random mutations, all targets
    .venv/bin/python -m tests.fuzz.long_run --inputs 100000 --seed 7 --targets record,xlsx
    .venv/bin/pip install -e '.[fuzz]' && .venv/bin/python -m tests.fuzz.long_run --engine atheris \\
        --inputs 100000                                                # coverage-guided (atheris, libFuzzer)

The random engine cycles through the targets, feeding each random bytes (the targets mutate real, valid
inputs with them: see :class:`tests.fuzz.targets.Mutator`), and is reproducible from ``--seed``. The atheris
engine instruments the gateway and adapter code and lets libFuzzer steer the bytes by coverage; the first
input byte picks the target. Either way an input that makes a target raise (an unhandled exception or a
broken invariant) or run longer than ``--hang-seconds`` (a hang) ends the run with exit status 1 and prints
the target, the exception type, the traceback and the input as hex, to be replayed with ``--replay``.
The summary (inputs per target, rate, failures) is printed at the end; docs/OPERATIONS.md records a run.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType

import structlog

__all__ = ["main"]


class Hang(Exception):
    """A target ran longer than ``--hang-seconds``."""


def _quiet() -> None:
    """No log lines from the gateway while fuzzing (millions of rejections would drown the report)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang("the target did not return in time")


def _run_one(target: Callable[[bytes], None], data: bytes, hang_seconds: float) -> BaseException | None:
    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
    try:
        target(data)
    except Exception as exc:  # noqa: BLE001 - every failure is reported with its input
        return exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None


def _report(name: str, data: bytes, error: BaseException) -> None:
    print(f"\nFAILURE in target {name}: {type(error).__name__}", file=sys.stderr)
    print("".join(traceback.format_exception(error)), file=sys.stderr)
    print(f"input ({len(data)} bytes): {data.hex()}", file=sys.stderr)
    print(f"replay: python -m tests.fuzz.long_run --targets {name} --replay {data.hex()}", file=sys.stderr)


def _random_engine(
    targets: dict[str, Callable[[bytes], None]], inputs: int, seed: int, max_len: int, hang_seconds: float
) -> int:
    rng = random.Random(seed)
    names = list(targets)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    for number in range(inputs):
        name = names[number % len(names)]
        data = rng.randbytes(rng.randint(0, max_len))
        error = _run_one(targets[name], data, hang_seconds)
        counts[name] += 1
        if error is not None:
            _report(name, data, error)
            _summary(counts, started, failures=1)
            return 1
        if (number + 1) % 10_000 == 0:
            print(f"{number + 1} inputs, {time.monotonic() - started:.0f} s", flush=True)
    _summary(counts, started, failures=0)
    return 0


def _summary(counts: Counter[str], started: float, *, failures: int) -> None:
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(f"\n{total} inputs in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f}/s), failures: {failures}")
    for name, count in counts.items():
        print(f"  {name:14} {count}")


def _atheris_engine(targets: dict[str, Callable[[bytes], None]], inputs: int, hang_seconds: float) -> int:
    try:
        import atheris  # type: ignore[import-not-found]  # noqa: PLC0415 - optional: pip install -e '.[fuzz]'
    except ImportError:
        print("atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    atheris.instrument_all()  # coverage feedback from everything imported (gateway, adapters, parsers)
    names = list(targets)

    def one(data: bytes) -> None:
        if not data:
            return
        name = names[data[0] % len(names)]
        error = _run_one(targets[name], data[1:], hang_seconds)
        if error is not None:
            _report(name, data[1:], error)
            raise error

    atheris.Setup([sys.argv[0], f"-runs={inputs}", "-max_len=4096"], one)
    atheris.Fuzz()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.long_run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in all (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random engine seed (default 1)")
    parser.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--engine", choices=("random", "atheris"), default="random")
    parser.add_argument("--max-len", type=int, default=2048, help="bytes per input, at most (random engine)")
    parser.add_argument("--hang-seconds", type=float, default=20.0, help="an input taking longer is a hang")
    parser.add_argument("--replay", help="run one input (hex) through the named target and exit")
    args = parser.parse_args(argv)

    _quiet()
    signal.signal(signal.SIGALRM, _on_alarm)
    from tests.fuzz.targets import TARGETS, seeds  # noqa: PLC0415 - after logging is quiet

    wanted = [name for name in args.targets.split(",") if name] or list(TARGETS)
    unknown = set(wanted) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; known: {', '.join(TARGETS)}")
    targets = {name: TARGETS[name] for name in wanted}
    seeds()
    if args.replay is not None:
        [(name, target)] = targets.items()
        error = _run_one(target, bytes.fromhex(args.replay), args.hang_seconds)
        if error is not None:
            _report(name, bytes.fromhex(args.replay), error)
            return 1
        print("no failure")
        return 0
    if args.engine == "atheris":
        return _atheris_engine(targets, args.inputs, args.hang_seconds)
    return _random_engine(targets, args.inputs, args.seed, args.max_len, args.hang_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
