"""One gateway process per ``data_dir``: an exclusive advisory lock on ``<data_dir>/gateway.lock``.

Why: the outbox, the inbox (and its outcome journal), the consent register and the delivery ledger are
single-writer state. Two ``gateway run`` processes on one ``data_dir`` would both send the outbox (every
event twice), truncate each other's inbox journal (the one-event crash window becomes unbounded) and commit
offsets for records the other one had not handled. So :meth:`DataDirLock.acquire` takes ``flock(LOCK_EX |
LOCK_NB)`` on the lock file before any database is opened, and a second instance stops at once with
``gateway.already-running`` naming the process that holds it.

``flock`` locks belong to the open file description: the kernel releases them when the process exits, however
it exits (SIGKILL included), so a stale lock file never blocks a restart; its content (the holder's pid and
start time, written after locking) is for the error message only. Two gateways in one process (the demo,
tests) on the same folder conflict as well, since each opens the file itself. The lock is advisory: tools
that only read (``gateway status`` opens the outbox database read-only) or hand work to the running gateway
(``gateway dlq redrive`` writes a request file) do not take it; :func:`holder` tells them whether a gateway
runs. NFS: ``flock`` is emulated with POSIX locks on Linux NFS clients; keep ``data_dir`` on local storage
(SQLite wants that anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Final

from gateway.errors import GatewayError, Reason

__all__ = ["LOCK_FILE", "DataDirLock", "holder"]

LOCK_FILE: Final = "gateway.lock"
_MODE: Final = 0o600


class DataDirLock:
    """The exclusive lock of one ``data_dir``; :meth:`acquire` once, :meth:`release` when stopping."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``GatewayError(gateway.already-running)`` naming the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = holder(self.path.parent)
            raise GatewayError(
                Reason.ALREADY_RUNNING,
                f"{self.path.parent} is in use by another gateway process"
                f"{f' (pid {who})' if who else ''}; one process per data_dir",
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {int(time.time())}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it); the file stays for the next start."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def holder(data_dir: Path) -> int | None:
    """The pid of the gateway holding ``data_dir``'s lock, or None when no process holds it.

    Probes with a non-blocking shared lock (released at once), so it never blocks and never disturbs a
    running gateway; the pid is read from the file the holder wrote.
    """
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            content = os.read(fd, 64).split()
            return int(content[0]) if content and content[0].isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
