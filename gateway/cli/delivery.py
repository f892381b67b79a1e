"""``gateway dlq list|show|redrive|purge`` and ``gateway status EVENT_ID``: delivery, for the operator.

Every command takes the gateway's own ``--config`` (the party, its ``data_dir`` and its Kafka settings: the
dead-letter topic is readable by its own party only, under the rendered ACLs). For a gateway on the embedded
broker, ``gateway run`` writes the broker's address to ``<data_dir>/embedded-broker.addr`` and the commands
use it; ``--bootstrap-servers`` overrides it.

* ``list`` prints one line per dead letter: position, reason, origin, age and the event's ids. Never a value.
* ``show POSITION...`` prints the reason headers and the original's headers; the value only with ``--value``,
  after a warning on stderr (a rejected record can hold personal data in clear).
* ``redrive`` selects by position, ``--reason``, ``--since``/``--until``, ``--origin``, ``--source``; it is a
  dry run (the selection is printed) unless ``--apply``. Then the request is handed to the running gateway
  through ``<data_dir>/redrive/`` (:mod:`gateway.runtime.redrive`): the gateway verifies, deduplicates and
  delivers each record through its own path, so what was delivered already is dropped by its inbox. The
  command waits for the result (``--wait``); when no gateway runs, the request waits for the next start.
* ``purge --before TIME`` deletes the dead letters older than TIME (Kafka DeleteRecords; each partition is
  cut after its last dead letter before TIME), after the operator types the party id (or ``--yes``).
* ``status EVENT_ID`` reads the gateway's outbox database (read-only) and prints where the event went and
  which signed receipts came back (:func:`gateway.bus.receipts.delivery_status`).

Exit codes: 0 done (``redrive``: every selected record delivered or a duplicate; ``status``: every expected
recipient delivered it), 1 not (some failed, or are waiting), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.errors import GatewayError, Reason

__all__ = ["EMBEDDED_ADDRESS_FILE", "add_commands", "parse_when"]

#: Where ``gateway run`` on the embedded broker writes the broker's ``host:port`` for these commands.
EMBEDDED_ADDRESS_FILE: Final = "embedded-broker.addr"
_DURATION: Final = re.compile(r"^([0-9]+)([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_POSITION: Final = re.compile(r"^([0-9]+):([0-9]+)$")


def add_commands(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="dead letters: list, show, re-drive, purge",
        description="The party's dead-letter topic (xchg.<party>.dlq.v1). See docs/OPERATIONS.md section 9.",
    )
    actions = dlq.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="position, reason, origin, age and ids; never the value")
    _common(listing)
    _selection(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="the headers of dead letters (the value only with --value)")
    _common(show)
    show.add_argument("positions", metavar="PARTITION:OFFSET", nargs="+")
    show.add_argument(
        "--value", action="store_true", help="also print the record's value (may hold personal data)"
    )
    show.set_defaults(handler=_show)

    redrive = actions.add_parser(
        "redrive",
        help="hand dead letters back to the running gateway (dry run unless --apply)",
        description="Select dead letters and, with --apply, have the running gateway verify, deduplicate and "
        "deliver them again through its own path (the inbox drops what was delivered already).",
    )
    _common(redrive)
    _selection(redrive)
    redrive.add_argument("positions", metavar="PARTITION:OFFSET", nargs="*")
    redrive.add_argument("--apply", action="store_true", help="do it (default: print the selection)")
    redrive.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for the gateway's result (default 600)"
    )
    redrive.set_defaults(handler=_redrive)

    purge = actions.add_parser("purge", help="delete dead letters older than --before (asks to confirm)")
    _common(purge)
    purge.add_argument("--before", required=True, help="ISO 8601 time, or an age such as 30d")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=_purge)

    status = sub.add_parser(
        "status",
        help="delivery state of one of this gateway's events (signed receipts per recipient)",
        description="Read-only: safe while the gateway runs. Exit 0 when every expected recipient "
        "delivered the event, 1 otherwise.",
    )
    status.add_argument("event_id", metavar="EVENT_ID")
    status.add_argument("--config", required=True, help="the gateway's TOML configuration")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the gateway's TOML configuration")
    parser.add_argument(
        "--bootstrap-servers", help="override the broker address (default: the configuration's)"
    )


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", action="append", default=[], help="reason code (repeatable)")
    parser.add_argument("--since", help="dead-lettered at or after: ISO 8601 time, or an age such as 2h")
    parser.add_argument("--until", help="dead-lettered before: ISO 8601 time, or an age such as 30m")
    parser.add_argument("--origin", help="origin topic (fnmatch pattern, e.g. 'xchg.kemlu.*.case.v1')")
    parser.add_argument("--source", help="the event's source party")


# ---- shared -----------------------------------------------------------------------------------------------
def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 instant, or an age (``90s``, ``30m``, ``2h``, ``7d``) before ``now``."""
    from gateway.contract.instants import parse_instant  # noqa: PLC0415 - keep CLI start-up light

    match = _DURATION.match(text.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    try:
        return parse_instant(text, syntax=Reason.CONFIG_INVALID)
    except GatewayError as exc:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"{text!r} is neither an ISO 8601 time nor an age like 2h or 7d"
        ) from exc


def _position(text: str) -> tuple[int, int]:
    match = _POSITION.match(text)
    if match is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"{text!r} is not a position PARTITION:OFFSET")
    return int(match[1]), int(match[2])


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The configuration, the Kafka settings to reach the party's broker, and its dead-letter topic."""
    from gateway.contract.policy import dlq_topic  # noqa: PLC0415 - keep CLI start-up light
    from gateway.runtime.config import GatewayConfig, env_overrides  # noqa: PLC0415 - same

    config = GatewayConfig.load(Path(args.config), env_overrides(os.environ))
    kafka = config.kafka
    servers = getattr(args, "bootstrap_servers", None)
    if servers:
        kafka = replace(kafka, bootstrap_servers=tuple(s.strip() for s in servers.split(",") if s.strip()))
    elif kafka.embedded:
        address = config.data_dir / EMBEDDED_ADDRESS_FILE
        try:
            found = address.read_text(encoding="ascii").strip()
        except OSError:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"the configuration uses the embedded broker and {address} is missing (is the gateway "
                "running?); pass --bootstrap-servers",
            ) from None
        kafka = kafka.for_embedded(found)
    return config, kafka, dlq_topic(config.party)


def _select(args: argparse.Namespace, positions: Sequence[tuple[int, int]] = ()) -> Any:
    from gateway.bus.dlq import Selection  # noqa: PLC0415 - keep CLI start-up light

    return Selection(
        positions=frozenset(positions),
        reasons=frozenset(args.reason),
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        origin=args.origin,
        source=args.source,
    )


def _read(kafka: Any, topic: str, select: Any) -> list[Any]:
    from gateway.bus.dlq import read_dead_letters  # noqa: PLC0415 - Kafka only when asked

    return asyncio.run(read_dead_letters(kafka, topic, select=select))


def _line(summary: dict[str, Any]) -> str:
    age = summary["age_seconds"]
    return "  ".join(
        str(part)
        for part in (
            summary["position"],
            summary["reason"],
            summary["origin"] or "-",
            "-" if age is None else _age(age),
            summary["source"] or "-",
            summary["type"] or "-",
            f"id={summary['id'] or '-'}",
            "(bounded copy)" if summary["bounded"] else "",
        )
    ).rstrip()


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---- the commands -----------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    _, kafka, topic = _load(args)
    letters = _read(kafka, topic, _select(args))
    now = datetime.now(UTC)
    for letter in letters:
        summary = letter.summary(now)
        print(orjson.dumps(summary).decode() if args.json else _line(summary))
    if not args.json:
        print(f"{len(letters)} dead letter(s) on {topic}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    _, kafka, topic = _load(args)
    positions = [_position(p) for p in args.positions]
    from gateway.bus.dlq import Selection  # noqa: PLC0415 - keep CLI start-up light

    letters = _read(kafka, topic, Selection(positions=frozenset(positions)))
    if args.value:
        print(
            "WARNING: printing record values. A rejected record can hold personal data in clear (names, "
            "contacts, health): do not paste it into tickets or chats; handle it under the data-protection "
            "rules (docs/PRIVACY.md).",
            file=sys.stderr,
        )
    found = {(letter.partition, letter.offset) for letter in letters}
    for letter in letters:
        print(f"== {letter.position}")
        for name, raw in letter.headers:
            text = "(null)" if raw is None else bytes(raw).decode("utf-8", "replace")
            print(f"  {name}: {text}")
        if args.value:
            value = letter.value or b""
            print(f"  value ({len(value)} bytes): {value.decode('utf-8', 'replace')}")
        else:
            print(f"  value: {len(letter.value or b'')} bytes (not shown; --value prints it)")
    missing = [f"{p}:{o}" for p, o in positions if (p, o) not in found]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from gateway.runtime.lock import holder  # noqa: PLC0415 - keep CLI start-up light
    from gateway.runtime.redrive import read_result, submit_request  # noqa: PLC0415 - same

    config, kafka, topic = _load(args)
    select = _select(args, [_position(p) for p in args.positions])
    if select.everything:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            "select what to re-drive: positions, --reason, --since/--until, --origin or --source",
        )
    letters = _read(kafka, topic, select)
    now = datetime.now(UTC)
    for letter in letters:
        print(_line(letter.summary(now)))
    if not letters:
        print("nothing selected", file=sys.stderr)
        return 0
    if not args.apply:
        print(f"dry run: {len(letters)} dead letter(s) would be re-driven; add --apply", file=sys.stderr)
        return 0
    request = submit_request(config.data_dir, [(letter.partition, letter.offset) for letter in letters])
    pid = holder(config.data_dir)
    if pid is None:
        print(
            f"request {request} queued in {config.data_dir}/redrive: no gateway runs on this data_dir; it "
            "runs when the gateway starts",
            file=sys.stderr,
        )
        return 1
    print(f"request {request} handed to the gateway (pid {pid}); waiting", file=sys.stderr)
    deadline = time.monotonic() + args.wait
    result = None
    while result is None and time.monotonic() < deadline:
        time.sleep(0.2)
        result = read_result(config.data_dir, request)
    if result is None:
        print(f"no result within {args.wait:g}s; the request stays queued", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for row in result["results"]:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
        detail = f"  {row['detail']}" if row["detail"] else ""
        print(f"{row['position']}  {row['result']}{detail}")
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    return 0 if set(counts) <= {"delivered", "duplicate"} else 1


def _purge(args: argparse.Namespace) -> int:
    from gateway.bus.dlq import Selection, purge  # noqa: PLC0415 - keep CLI start-up light

    config, kafka, topic = _load(args)
    before = parse_when(args.before)
    letters = _prefix_before(_read(kafka, topic, Selection()), before)
    if not letters:
        print("nothing dead-lettered before that time", file=sys.stderr)
        return 0
    print(f"{len(letters)} dead letter(s) on {topic} dead-lettered before {before.isoformat()} will be "
          "deleted for good", file=sys.stderr)  # fmt: skip
    if not args.yes:
        answer = input(f"type the party id ({config.party}) to confirm: ")
        if answer.strip() != config.party:
            print("not confirmed; nothing deleted", file=sys.stderr)
            return 1
    starts = asyncio.run(purge(kafka, letters))
    for partition, start in sorted(starts.items()):
        print(f"partition {partition}: now starts at offset {start}")
    return 0


def _prefix_before(letters: Sequence[Any], before: datetime) -> list[Any]:
    """Per partition, the dead letters from its start up to the first one not older than ``before``
    (DeleteRecords cuts a prefix: a later dead letter, or one without a time, ends it)."""
    kept: list[Any] = []
    stopped: set[int] = set()
    for letter in letters:  # in (partition, offset) order
        at = letter.dead_lettered_at
        if letter.partition in stopped or at is None or at >= before:
            stopped.add(letter.partition)
            continue
        kept.append(letter)
    return kept


def _status(args: argparse.Namespace) -> int:
    from gateway.bus.receipts import delivery_status  # noqa: PLC0415 - keep CLI start-up light
    from gateway.runtime.config import GatewayConfig, env_overrides  # noqa: PLC0415 - same

    config = GatewayConfig.load(Path(args.config), env_overrides(os.environ))
    found = delivery_status(config.data_dir / "outbox.db", args.event_id)
    if found is None:
        print(f"event {args.event_id}: this gateway has no record of sending it (or it was pruned)")
        return 1
    states = found.state()
    if args.json:
        document = {
            "event_id": found.event_id, "topic": found.topic, "type": found.type,
            "record_sha256": found.record_sha256, "sent": found.sent_at is not None or not found.in_outbox,
            "recipients": states, "complete": found.complete,
            "receipts": [{"party": r.party, "outcome": r.outcome, "reason": r.reason,
                          "finished_at": r.finished_at, "receipt_id": r.receipt_id} for r in found.receipts],
        }  # fmt: skip
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        sent = "queued in the outbox" if found.in_outbox and found.sent_at is None else "published"
        print(f"event {found.event_id}  {found.type}  {sent} to {found.topic}")
        print(f"  record sha256 {found.record_sha256}")
        for party, state in states.items():
            print(f"  {party}: {state}")
        for receipt in found.receipts:
            reason = f" {receipt.reason}" if receipt.reason else ""
            print(f"  receipt {receipt.receipt_id} from {receipt.party}: {receipt.outcome}{reason} at "
                  f"{receipt.finished_at}")  # fmt: skip
    return 0 if found.complete else 1
