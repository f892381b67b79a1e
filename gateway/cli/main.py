"""The ``gateway`` command line. The only place that reads the environment or the terminal.

One module per command group (``keys``, ``registry``: the signed registry's lifecycle, ``events``:
sign/verify, ``schemas``, ``run``: run/broker, ``delivery``: dlq/status, ``deploy``, ``audit``: audit/notary,
``setup``: config check/init/completion); ``--version`` prints the package version; packages that build on
the gateway add commands through the entry point group ``xchg_gateway.commands`` (the agency adapters add
``demo``), so the library never imports them.

Exit codes: 0 success (``verify``: accepted), 1 rejected / check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Final

from gateway import __version__
from gateway.cli import audit, delivery, deploy, events, keys, registry, run, schemas, setup
from gateway.errors import GatewayError

__all__ = ["COMMAND_GROUP", "main"]

#: Entry point group of command plugins: each is a callable taking the subcommand parsers (``add_parser``).
COMMAND_GROUP: Final = "xchg_gateway.commands"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except GatewayError as exc:
        print(f"error: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Inter-agency exchange gateway: signed, sealed CloudEvents over Kafka."
    )
    parser.add_argument("--version", action="version", version=f"gateway (xchg-gateway) {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in (keys, registry, events, run, delivery, deploy, audit, schemas):
        group.add_commands(sub)
    setup.add_commands(sub, parser)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
