"""A throwaway PostgreSQL server for the coordination store's tests (Debian's ``postgresql`` package,
installed by ``.ci/install-system-deps``): ``initdb`` into a temporary folder, ``pg_ctl start`` on a free
loopback port, ``pg_ctl stop`` afterwards. Run as the ``postgres`` system user when the tests run as root
(PostgreSQL refuses to run as root). Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.sandbox.broker import free_port

__all__ = ["postgres_server"]


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run bash .ci/install-system-deps")
    return Path(found[-1]).parent


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its connection string (user ``xchg``, database ``postgres``, trust auth)."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="xchg-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "xchg",
        "-E",
        "UTF8",
        "--no-sync",
    ]
    subprocess.run([*prefix, *initdb], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-t",
        "60",
        "-l",
        str(root / "server.log"),
        "start",
    ]
    subprocess.run([*prefix, *start], check=True, capture_output=True, timeout=120)
    try:
        yield f"host=127.0.0.1 port={port} user=xchg dbname=postgres"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
