"""A one-line progress indicator on stderr, shown only when it is a terminal: ``audit verify`` (the auditor)
and the long operator commands of the CLI (``audit export-records``) use it; off a terminal (logs, pipes,
CI) it writes nothing, and the command's own summary line says what was done."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A one-line progress indicator on stderr, only when it is a terminal (never in logs or pipes)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream if stream is not None and stream.isatty() else None
        self._last = 0.0
        self._shown = False

    def update(self, label: str, done: int, total: int | None) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{label} [{bar}] {done:,}/{total:,}"
        else:
            text = f"\r{label} {done:,}"
        self._stream.write(text)
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._stream is not None and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
