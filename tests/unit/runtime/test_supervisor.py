"""The supervisor: a task that raises is logged at once, restarted with backoff, counted and reported.

Backoffs are tiny and the clock that decides "ran long enough to be healthy" is a test clock, so nothing
here waits on wall time; the tests wait for conditions (a task's state) with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import structlog.testing
from aiohttp.test_utils import TestClient, TestServer

from gateway.bus.metrics import GatewayMetrics
from gateway.runtime.ops import build_ops_app, run_checks
from gateway.runtime.supervisor import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate`` (a condition, not a duration); fail naming ``what`` after 10 s."""
    try:
        async with asyncio.timeout(10):
            while not predicate():  # noqa: ASYNC110 - the states change inside the supervisor, no event
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def supervisor(clock: Clock, restarts: list[str]) -> Supervisor:
    return Supervisor(
        owner="kemensos", initial_backoff=0.001, max_backoff=0.002, unhealthy_after=3, healthy_after=60.0,
        on_restart=restarts.append, clock=clock,
    )  # fmt: skip


async def test_a_failing_task_is_logged_restarted_counted_and_reported() -> None:
    clock, restarts = Clock(), []
    sup = supervisor(clock, restarts)
    runs = 0
    healthy = asyncio.Event()
    stop = asyncio.Event()

    async def sender() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise OSError(28, "No space left on device: /data/outbox.db")
        healthy.set()
        await stop.wait()

    with structlog.testing.capture_logs() as logs:
        sup.spawn("sender", sender, stop=stop)
        await asyncio.wait_for(healthy.wait(), 10)
    failures = [entry for entry in logs if entry["event"] == "task.failed"]
    assert len(failures) == 4
    assert failures[0]["task"] == "sender"
    assert failures[0]["error"] == "OSError"
    assert any("in sender" in frame for frame in failures[0]["at"])  # where, without the message
    assert all("No space" not in str(entry) for entry in logs)
    assert restarts == ["sender"] * 4

    # four failures in a row (>= unhealthy_after): failing until it has run healthy_after since its restart
    assert [t["task"] for t in sup.liveness()] == ["sender"]
    [result] = await run_checks([sup.readiness_check()], 1.0)
    assert not result.ok
    assert "sender" in result.detail
    assert "OSError" in result.detail
    clock.now += 60.0
    assert sup.liveness() == []
    [result] = await run_checks([sup.readiness_check()], 1.0)
    assert result.ok, result.detail
    stop.set()
    await sup.stop(["sender"], asyncio.get_running_loop().time() + 5)
    assert sup.states()[0].state == "finished"


async def test_transient_errors_restart_but_never_make_the_process_unhealthy() -> None:
    clock, restarts = Clock(), []
    sup = supervisor(clock, restarts)
    stop = asyncio.Event()

    async def consumer() -> None:
        raise ConnectionError("broker away")

    sup.spawn("consumer", consumer, stop=stop, transient=(ConnectionError,))
    await until(lambda: len(restarts) >= 5, "restarts")
    assert sup.liveness() == []  # a Kafka outage must not get every gateway restarted
    [result] = await run_checks([sup.readiness_check()], 1.0)
    assert not result.ok
    assert "ConnectionError" in result.detail
    stop.set()
    await until(lambda: sup.task("consumer").done(), "stopped")
    assert sup.states()[0].state == "stopped"


async def test_healthz_turns_503_naming_the_task_and_back() -> None:
    clock, restarts = Clock(), []
    sup = supervisor(clock, restarts)
    fail = True
    stop = asyncio.Event()

    async def source() -> None:
        if fail:
            raise KeyError("boom")
        await stop.wait()

    app = build_ops_app(metrics=GatewayMetrics(party="kemensos"), checks=[], liveness=sup.liveness)
    async with TestClient(TestServer(app)) as client:
        sup.spawn("source:kemensos-csv", source, stop=stop)
        await until(lambda: len(restarts) >= 3, "three restarts")
        response = await client.get("/healthz")
        body = await response.json()
        assert response.status == 503
        assert body["status"] == "failing"
        assert body["tasks"][0]["task"] == "source:kemensos-csv"
        assert body["tasks"][0]["last_error"] == "KeyError"
        fail = False
        await until(lambda: sup.states()[0].state == "running" and restarts[-1:] == ["source:kemensos-csv"],
                    "running again")  # fmt: skip
        clock.now += 61
        response = await client.get("/healthz")
        assert response.status == 200
        stop.set()
        await sup.stop(["source:kemensos-csv"], asyncio.get_running_loop().time() + 5)


async def test_stop_during_backoff_ends_the_task_and_names_are_unique() -> None:
    sup = Supervisor(owner="x", initial_backoff=30.0, max_backoff=30.0)
    stop = asyncio.Event()

    async def broken() -> None:
        raise ValueError("x")

    sup.spawn("t", broken, stop=stop)
    with pytest.raises(ValueError, match="already supervised"):
        sup.spawn("t", broken)
    await until(lambda: sup.states()[0].state == "restarting", "backing off")
    stop.set()
    await asyncio.wait_for(sup.task("t"), 5)
    assert sup.states()[0].state == "stopped"
