"""Crash-safe file replacement: write a temporary file, fsync it, rename it over the target, fsync the dir.

A reader (or a restart after a crash) sees either the old file or the complete new one, never a torn write.
Batches rename many files but fsync each touched directory once, which is what makes group commits cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from gateway.errors import GatewayError, Reason

__all__ = ["TMP_SUFFIX", "fsync_dir", "remove_files", "replace_files", "temporary_path"]

TMP_SUFFIX: Final = ".tmp"


def temporary_path(target: Path) -> Path:
    return target.with_name(target.name + TMP_SUFFIX)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path, created: set[Path]) -> None:
    """``mkdir -p`` that remembers every directory it created (their parents need an fsync too)."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        created.add(path)


def replace_files(files: Mapping[Path, bytes], *, durable: bool = True, mode: int = 0o644) -> None:
    """Atomically (per file) and durably write every ``path -> data`` of ``files``.

    Order: all temporary files written and fsynced, then all renamed, then every touched directory fsynced.
    When this returns (``durable=True``), all files are on stable storage; if it raises or the process dies,
    each target is either its old version, absent, or the new version, and at most ``.tmp`` leftovers remain.
    """
    try:
        created: set[Path] = set()
        for path in files:
            _make_dirs(path.parent, created)
        for path, data in files.items():
            fd = os.open(temporary_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        for path in files:
            os.replace(temporary_path(path), path)
        if durable:
            directories: set[Path] = {path.parent for path in files}
            directories.update(path.parent for path in created)
            for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
                fsync_dir(directory)
    except OSError as exc:
        raise GatewayError(
            Reason.TLOG_IO_FAILED, f"cannot write {len(files)} file(s): {exc.strerror}"
        ) from exc


def remove_files(paths: Iterable[Path]) -> None:
    """Best-effort unlink; missing files are fine (recovery and clean-up are idempotent)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
