"""Waiting on several :class:`asyncio.Event` at once, the one way the gateway's loops do it."""

from __future__ import annotations

import asyncio

__all__ = ["wait_any"]


async def wait_any(*events: asyncio.Event, seconds: float | None = None) -> bool:
    """Wait until one of ``events`` is set or ``seconds`` pass (``None``: no bound); True if one was set.

    The waiters are cancelled and awaited before it returns, also when the caller is cancelled: nothing is
    left pending on the loop.
    """
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return bool(done)
