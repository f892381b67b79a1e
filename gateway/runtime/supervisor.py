"""Supervision of a process's long-running tasks: restart with backoff, count, and tell the health endpoints.

Why: a gateway is a handful of loops (the outbox sender, the consumer, one per source; the notary's
consumer and publisher). An exception that escapes one of them used to end that task silently — logged only
when the process stopped — while ``/healthz`` and ``/readyz`` kept answering 200: a gateway that no longer
delivered looked healthy. Every long-running task is therefore started through :meth:`Supervisor.spawn`:

* an exception escaping the task is **logged at once** (``task.failed``: the task, the exception type and
  the code locations of its traceback — never the exception message, which can quote data);
* the task is **restarted** after a backoff (``initial_backoff`` doubling to ``max_backoff``), and every
  restart counts in ``xchg_task_restarts_total{task}`` (``on_restart``);
* from its first failure until it has run ``healthy_after`` seconds after a restart, the readiness check
  (:meth:`Supervisor.readiness_check`) fails naming the task and the exception type; from the
  ``unhealthy_after``-th failure in a row (a run that lasted ``healthy_after`` resets the count),
  :meth:`Supervisor.liveness` reports it too and ``/healthz`` answers 503, so an orchestrator restarts the
  process: a loop that cannot recover by itself gets a fresh process rather than a healthy-looking corpse.
  It keeps restarting meanwhile, and recovers by itself when the cause goes (a disk that was full has room
  again): both endpoints turn 200 once it has run ``healthy_after`` without failing.

Exception types listed in ``transient`` (e.g. the broker being away) restart the task the same way but never
make it "failing": a Kafka outage must not make every agency's gateway restart in a loop
(docs/OPERATIONS_HTTP.md). A task that returns ends ("finished"); cancellation ends it too. A task that is
backing off ends at once when its ``stop`` event is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

from gateway.runtime.ops import CheckFailed, ReadinessCheck

__all__ = ["Supervisor", "TaskState"]

_log = structlog.get_logger(__name__)

State = Literal["running", "restarting", "failing", "finished", "stopped"]
_FRAMES: Final = 6


@dataclass(slots=True)
class TaskState:
    """What the supervisor knows about one task (read by the health endpoints and tests)."""

    name: str
    state: State = "running"
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    """The type name of the last exception (never its message)."""
    started_at: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "task": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
        }


class Supervisor:
    """Starts, restarts and reports the long-running tasks of one process (see the module docstring)."""

    def __init__(
        self,
        *,
        owner: str,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        unhealthy_after: int = 5,
        healthy_after: float = 60.0,
        on_restart: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff or unhealthy_after < 1 or healthy_after <= 0:
            raise ValueError("supervisor: backoff must be positive and unhealthy_after at least 1")
        self.owner = owner
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self._on_restart = on_restart
        self._clock = clock
        self._states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        stop: asyncio.Event | None = None,
        transient: tuple[type[BaseException], ...] = (),
    ) -> asyncio.Task[None]:
        """Start ``run()`` as the supervised task ``name`` (unique); restart it whenever it raises."""
        if name in self._states:
            raise ValueError(f"supervisor: task {name!r} is already supervised")
        state = self._states[name] = TaskState(name, started_at=self._clock())
        task = asyncio.create_task(self._supervise(state, run, stop, transient), name=f"{self.owner}-{name}")
        self._tasks[name] = task
        return task

    def task(self, name: str) -> asyncio.Task[None]:
        return self._tasks[name]

    def states(self) -> list[TaskState]:
        return list(self._states.values())

    def _settle(self, state: TaskState) -> TaskState:
        """Forget the failures of a task that has been running for ``healthy_after`` since its restart."""
        if (
            state.state == "running"
            and state.failures_in_a_row
            and self._clock() - state.started_at >= self.healthy_after
        ):
            state.failures_in_a_row = 0
        return state

    def liveness(self) -> list[dict[str, object]]:
        """The tasks that keep failing (empty when the process is alive): ``/healthz`` answers 503 if any.

        A task is failing from its ``unhealthy_after``-th failure in a row until it has run for
        ``healthy_after`` after a restart."""
        return [
            s.as_json()
            for s in map(self._settle, self._states.values())
            if s.failures_in_a_row >= self.unhealthy_after and s.state in ("running", "restarting", "failing")
        ]

    def readiness_check(self, name: str = "tasks") -> ReadinessCheck:
        """Fails while any task is backing off, or has failed and not yet run ``healthy_after`` since,
        naming it and the exception type."""

        async def probe() -> str:
            troubled = [
                s
                for s in map(self._settle, self._states.values())
                if s.state in ("restarting", "failing") or (s.state == "running" and s.failures_in_a_row)
            ]
            if troubled:
                raise CheckFailed(
                    "; ".join(
                        f"{s.name} {'recovering' if s.state == 'running' else s.state} after {s.last_error} "
                        f"({s.restarts} restart(s))"
                        for s in troubled
                    )
                )
            running = sum(s.state == "running" for s in self._states.values())
            restarts = sum(s.restarts for s in self._states.values())
            return f"{running} task(s) running, {restarts} restart(s) so far"

        return ReadinessCheck(name, probe)

    async def _supervise(
        self,
        state: TaskState,
        run: Callable[[], Awaitable[None]],
        stop: asyncio.Event | None,
        transient: tuple[type[BaseException], ...],
    ) -> None:
        delay = self.initial_backoff
        while True:
            state.started_at = self._clock()
            try:
                await run()
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as exc:  # noqa: BLE001 - the point: nothing escapes, everything is told
                if self._clock() - state.started_at >= self.healthy_after:
                    state.failures_in_a_row = 0  # it ran fine for a while: this is a new episode
                    delay = self.initial_backoff
                counted = not isinstance(exc, transient)
                if counted:
                    state.failures_in_a_row += 1
                state.last_error = type(exc).__name__
                failing = state.failures_in_a_row >= self.unhealthy_after
                state.state = "failing" if failing else "restarting"
                (_log.error if counted else _log.warning)(
                    "task.failed", owner=self.owner, task=state.name, error=type(exc).__name__,
                    at=_locations(exc), failures_in_a_row=state.failures_in_a_row, retry_in=delay,
                    failing=failing,
                )  # fmt: skip
            else:
                state.state = "finished"
                return
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    state.state = "stopped"
                    return
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
            state.restarts += 1
            state.state = "running"
            if self._on_restart is not None:
                self._on_restart(state.name)
            _log.info("task.restarted", owner=self.owner, task=state.name, restarts=state.restarts)

    async def stop(self, names: Sequence[str], deadline: float) -> None:
        """Wait for the named tasks until ``deadline`` (``time.monotonic``); cancel and await what is left."""
        tasks = [self._tasks[n] for n in names if n in self._tasks]
        pending = [t for t in tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _locations(exc: BaseException) -> list[str]:
    """Where ``exc`` was raised: the last frames as ``file:line in function`` (no message, no values)."""
    frames: Any = traceback.extract_tb(exc.__traceback__)[-_FRAMES:]
    return [f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}" for frame in frames]
