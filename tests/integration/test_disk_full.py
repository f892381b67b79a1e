"""A full disk under ``data_dir``: the outbox sender fails, is restarted, and drains once space returns.

The campaign's example, for real: KBRI Kuching's gateway runs as ``gateway run`` in a mount namespace of its
own whose ``data_dir`` is a 24 MiB tmpfs. While the broker is paused, a file drop of 600 group-arrival alerts
is accepted into the outbox; then the tmpfs is filled to the last byte and the broker resumed. The sender's
"mark sent" cannot be written (SQLite: database or disk is full), so the sender task fails; it used to die
and leave most events in the outbox with ``/readyz`` 200 until a restart. Now ``/readyz`` says 503 naming
the sender and the error type while it restarts with backoff; once the ballast file is deleted every event
reaches Kemensos exactly once, the outbox empties and ``/readyz`` is 200 again — in the same process.

Needs mount namespaces (``unshare --mount``; as root, or with unprivileged user namespaces): skipped where
the kernel or the container does not allow them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.broker import EmbeddedBroker, free_port
from gateway.sandbox.deployment import create_sandbox
from tests.integration.exchange import eventually, kafka_settings_for, kafka_table, start_node
from tests.world import example

KCH, READER = "kemlu.kbri-kuching", "kemensos"
ARRIVAL = "id.trafficking.alert.group-arrival"
REPO = Path(__file__).resolve().parents[2]
TMPFS_SIZE = 24 * 1024 * 1024
EVENTS = 600


def _unshare_prefix() -> list[str] | None:
    """The command prefix that gives a child a private mount namespace, or None when impossible here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    probe = subprocess.run(
        [*prefix, "sh", "-c", "mount -t tmpfs -o size=1m xchg-probe /mnt 2>/dev/null || exit 3"],
        capture_output=True, check=False, timeout=20,
    )  # fmt: skip
    return prefix if probe.returncode == 0 else None


@pytest.fixture
def in_tmpfs(tmp_path: Path) -> Iterator[Any]:
    """Start ``gateway run --config CONFIG`` with ``data_dir`` on a tmpfs of its own; kill it after."""
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("no mount namespaces here (unshare --mount); the disk-full test needs a tmpfs of its own")
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: Path, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        data_dir.mkdir(parents=True, exist_ok=True)
        script = (
            'mount -t tmpfs -o size="$1",mode=0700 xchg-data "$2" '
            '&& exec "$3" -m gateway.cli.main run --config "$4"'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("XCHG__")}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*prefix, "sh", "-c", script, "sh", str(TMPFS_SIZE), str(data_dir), sys.executable,
                 str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip
        processes.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def fill(directory: Path) -> Path:
    """Write a ballast file until the file system refuses another byte."""
    ballast = directory / "ballast"
    chunk = b"\0" * (256 * 1024)
    with ballast.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return ballast
    return ballast


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


async def test_the_sender_recovers_from_a_full_disk_without_a_restart(
    tmp_path: Path, embedded_broker: EmbeddedBroker, in_tmpfs: Any
) -> None:
    settings = kafka_settings_for(embedded_broker.bootstrap_servers)
    port = free_port()
    fast = {"task_initial_backoff": 0.2, "task_max_backoff": 1.0, "task_healthy_after": 2.0}
    sandbox = create_sandbox(
        tmp_path / "sandbox", [KCH, READER], bootstrap_servers=settings.bootstrap_servers,
        settings={"kafka": kafka_table(settings), "shutdown": {"timeout_seconds": 10.0}, "sources": []},
        per_party={KCH: {
            "ops": {"port": port, **fast},
            "sources": [
                {"kind": "file-drop", "directory": "drop", "poll_interval": 0.1, "settle_seconds": 0}
            ],
        }},
    )  # fmt: skip
    reader = await start_node(sandbox[READER])
    try:
        kch = sandbox[KCH]
        proc = in_tmpfs(kch.config, kch.data_dir, tmp_path / "kch.log")
        log = tmp_path / "kch.log"
        await eventually(
            lambda: proc.poll() is None and b"running; ops" in log.read_bytes(), what="KBRI Kuching to start"
        )
        await eventually(lambda: _ready_sync(port), timeout=60, what="KBRI Kuching ready")
        data = Path(f"/proc/{proc.pid}/root") / kch.data_dir.relative_to("/")  # its tmpfs, from outside

        embedded_broker.pause()
        base = example("alert.group-arrival", "1.0")[0][1]
        lines = [json.dumps({"type": ARRIVAL, "data": {**base, "alert_id": f"ALR-DISK-{n:06d}"}})
                 for n in range(EVENTS)]  # fmt: skip
        drop = kch.drop_dir / "inbox"
        drop.mkdir(parents=True, exist_ok=True)
        staged = kch.drop_dir / ".arrivals.jsonl.tmp"
        staged.write_text("\n".join(lines) + "\n", "utf-8")
        staged.rename(drop / "arrivals.jsonl")
        await eventually(lambda: not any(drop.iterdir()), timeout=60, what="the 600 events in the outbox")
        ballast = fill(data)  # the disk is full: the sender's "mark sent" cannot be written
        embedded_broker.resume()

        async def sender_failing() -> bool:
            status, body = await readyz(port)
            tasks = next(c for c in body["checks"] if c["name"] == "tasks")
            return status == 503 and "sender" in tasks["detail"] and "OperationalError" in tasks["detail"]

        await _eventually_async(sender_failing, what="/readyz to name the failing sender")
        ballast.unlink()  # space returns

        await eventually(
            lambda: len(reader.sink.log) >= EVENTS, timeout=120, what="all 600 events at Kemensos"
        )
        subjects = [a.event.subject for a in reader.sink.events if a.event.type == ARRIVAL]
        assert len(subjects) == len(set(subjects)) == EVENTS  # each once
        await _eventually_async(lambda: _ready(port), timeout=60, what="/readyz 200 again")
        _, body = await readyz(port)
        backlog = next(c for c in body["checks"] if c["name"] == "outbox-backlog")
        assert backlog["detail"].startswith("0 events")
        assert proc.poll() is None  # the same process: recovered without a restart
        metrics = await _metrics(port)
        assert 'xchg_task_restarts_total{task="sender"}' in metrics
    finally:
        await reader.gateway.stop()


def _ready_sync(port: int) -> bool:
    import urllib.request  # noqa: PLC0415 - a plain poll in a sync predicate

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def _ready(port: int) -> bool:
    status, _ = await readyz(port)
    return status == 200


async def _metrics(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


async def _eventually_async(predicate: Any, *, timeout: float = 60.0, what: str) -> None:  # noqa: ASYNC109
    """:func:`eventually` for an async predicate."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)
