"""``gateway demo``: the three-agency scenario on an embedded broker (a command the adapters add to the CLI).

Registered through the entry point group ``xchg_gateway.commands`` (``pyproject.toml``), so the gateway
library never imports agency code; the scenario itself is :mod:`adapters.scenario`.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, TextIO

from adapters.scenario import run_scenario
from gateway.runtime.logs import configure_logging

__all__ = ["add_command"]


def add_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the three-agency scenario on an embedded broker")
    demo.add_argument(
        "--once", action="store_true", help="exit after the summary instead of serving /metrics"
    )
    demo.add_argument("--dir", help="keep the generated deployment here (default: a temporary folder)")
    demo.add_argument("--log-file", default="var/demo.log", help="JSON logs go here, not to the terminal")
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level, json_output=True, stream=_demo_log(args.log_file))
    asyncio.run(run_scenario(directory=Path(args.dir) if args.dir else None, once=args.once))
    return 0


def _demo_log(name: str) -> TextIO:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
