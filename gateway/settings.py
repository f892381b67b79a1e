"""Reading configuration files and waiting for shutdown signals: one way each, for every entry point."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError, Reason

__all__ = ["load_toml", "stop_on_signals"]


def load_toml(path: Path, *, what: str = "", reason: Reason = Reason.CONFIG_INVALID) -> dict[str, Any]:
    """Read a TOML file; an unreadable or malformed file is a ``GatewayError`` naming it."""
    label = f"{what} {path}" if what else str(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise GatewayError(reason, f"cannot read {label}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GatewayError(reason, f"{label}: {exc}") from exc


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs; the handlers are removed afterwards."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
