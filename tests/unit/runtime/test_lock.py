"""One gateway process per data_dir (gateway/runtime/lock.py, issue 13).

A second holder — in this process or in another one — is refused with ``gateway.already-running`` naming the
holder's pid; the lock goes with the process that held it (a killed holder leaves no stale lock), and
:func:`holder` answers without disturbing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.errors import GatewayError, Reason
from gateway.runtime.lock import DataDirLock, holder


def test_a_second_lock_on_the_same_data_dir_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    assert holder(tmp_path) == os.getpid()
    with pytest.raises(GatewayError) as refused:
        DataDirLock(tmp_path).acquire()
    assert refused.value.reason == Reason.ALREADY_RUNNING
    assert f"pid {os.getpid()}" in refused.value.detail
    first.release()
    assert holder(tmp_path) is None
    second = DataDirLock(tmp_path)  # free again
    second.acquire()
    second.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gateway.runtime.lock import DataDirLock
        DataDirLock(Path({str(tmp_path)!r})).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"locked"
        assert holder(tmp_path) == child.pid
        with pytest.raises(GatewayError) as refused:
            DataDirLock(tmp_path).acquire()
        assert f"pid {child.pid}" in refused.value.detail
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert holder(tmp_path) is None  # the kernel released it with the process
    lock = DataDirLock(tmp_path)
    lock.acquire()
    lock.release()
