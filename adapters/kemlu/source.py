"""Inbound: poll the Kemlu citizen-protection case API and publish TPPO cases as exchange messages.

The API (``GET <url>/api/v1/cases?updated_since=<RFC 3339>&page=<n>&page_size=<k>&mission=<mission>`` ->
``{"items": [...], "next_page": <n> | null}``) returns the cases changed at or after ``updated_since``
(inclusive), oldest first. The guarantees and why:

* **Nothing lost, across restarts.** The ``updated_since`` cursor is a file in the gateway's state folder
  (``kemlu-cursor-<name>.json``, written atomically) and moves forward only after *every* message of a page
  was accepted by ``publish`` (i.e. is in the durable outbox) or deliberately quarantined. A crash mid-page
  re-reads the page.
* **Nothing published twice.** Event ids are ``uuid5(case id, version, message)``: re-reading a page (after a
  crash, or because the cursor is inclusive) yields the same ids, which the outbox and every consumer drop.
  A new version of a case is a new event: the receivers' copy of the case is updated.
* **No page drift.** After each page that moved the cursor, the next request starts again at page 1 with the
  new cursor (keyset paging). Following page numbers from a fixed cursor would skip a case that moved to an
  earlier page because another case was updated while we paged.
* **An API that fails and recovers.** 5xx, 408/429, timeouts, connection errors and malformed responses are
  retried with bounded exponential backoff and jitter; the loop never dies of them. Other 4xx (a wrong URL
  or token) are retried at the maximum delay and logged as errors: an operator has to act, but the gateway
  keeps running.
* **Only what may leave the embassy.** Only items with ``tppo: true`` (tindak pidana perdagangan orang, a
  trafficking case) of this gateway's mission are exchanged; other citizen-protection cases (a lost passport,
  a labour dispute) are skipped. Sealed fields are encrypted for the parties named in ``mapping.toml``.
* **No time stops the feed.** ``updated_at`` must be RFC 3339 with an offset, have a UTC form and not be
  later than now plus ``max_clock_skew`` (5 min): otherwise the case is quarantined (``schema.invalid`` or
  ``time.out-of-range``) and never moves the cursor, so ``9999-12-31T23:59:59+00:00`` cannot carry the cursor
  into the far future (where every later case would be "older" and skipped) and
  ``0001-01-01T00:00:00+01:00`` cannot make every poll fail. A cursor file beyond that bound is ignored.
* **Bad records do not block good ones.** A case that cannot be mapped or is refused by ``publish`` is
  quarantined (``kemlu-quarantine-<name>.jsonl``: case id, version, message, native field, reason code —
  never a value) and the cursor moves on; fixing the case in the embassy system bumps its version, and the
  next poll publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl as _ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from yarl import URL

from adapters.kemlu.mapping import KemluMapping, MessageProblem, PlannedMessage
from adapters.plumbing import write_json_atomically
from gateway.bus.delivery import RetryPolicy, is_retryable_status
from gateway.contract import instants
from gateway.contract.instants import TimeWindow
from gateway.errors import GatewayError, Reason
from gateway.runtime.sources import PublishFn

__all__ = ["CURSOR_FORMAT", "Cursor", "KemluCaseApiSource", "PollResult", "checked_instant", "parse_instant"]

_log = structlog.get_logger(__name__)

CURSOR_FORMAT: Final = "kemlu-cursor/1"
_EPOCH: Final = "1970-01-01T00:00:00Z"
#: ``publish`` refusals about the gateway's state, not the case: retry the page later, do not quarantine.
_DEFERRING: Final = frozenset(
    {Reason.OUTBOX_FULL, Reason.OUTBOX_UNAVAILABLE, Reason.STOPPING, Reason.BUS_UNAVAILABLE}
    # this gateway's own signing key is not usable at the event time (not registered yet, revoked,
    # expired): the registry or the key file must change, not the record (gateway.contract.sign)
    | {Reason.KEY_UNKNOWN, Reason.KEY_REVOKED, Reason.KEY_EXPIRED, Reason.KEY_NOT_YET_VALID}
)
_INSTANT_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$")
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


def parse_instant(value: object) -> datetime | None:
    """An RFC 3339 instant *with* an offset, else None (a local time without offset cannot be ordered).

    None too for an instant with no UTC form (``0001-01-01T00:00:00+01:00``): see :func:`checked_instant`
    for the reason code."""
    try:
        return checked_instant(value)
    except GatewayError:
        return None


def checked_instant(value: object, *, latest: datetime | None = None) -> datetime:
    """``updated_at`` (or a cursor) as an aware UTC datetime, or ``GatewayError``: ``schema.invalid`` when
    it is not RFC 3339 with an offset, ``time.out-of-range`` when it has no UTC form or is after ``latest``
    (now plus the allowed clock skew: no cursor may move beyond it, docs/adapters/kemlu.md)."""
    if not isinstance(value, str) or not _INSTANT_RE.match(value):
        raise GatewayError(Reason.SCHEMA_INVALID, "updated_at: missing or not RFC 3339 with offset")
    instant = instants.parse_instant(value, syntax=Reason.SCHEMA_INVALID)
    if latest is not None and instant > latest:
        raise GatewayError(Reason.TIME_OUT_OF_RANGE, "updated_at: after now plus the allowed clock skew")
    return instant


class Cursor:
    """The durable ``updated_since`` of one source, bound to the mission it was read for.

    A cursor written for another mission is ignored (with a warning): a gateway reconfigured from one embassy
    to another must not skip the new mission's history. An unreadable cursor is ignored too: starting from
    the configured ``since`` only re-reads cases, and their deterministic ids make that harmless.
    """

    def __init__(
        self, path: Path, *, mission: str, initial: str, latest: Callable[[], datetime] | None = None
    ) -> None:
        self.path = path
        self.mission = mission
        self.initial = initial
        self.since = initial
        self._latest = latest

    def load(self) -> str:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.since = self.initial
            return self.since
        except (OSError, ValueError):
            _log.error("kemlu_api.cursor_unreadable", cursor=self.path.name)
            self.since = self.initial
            return self.since
        since = document.get("updated_since") if isinstance(document, dict) else None
        instant = parse_instant(since)
        if not isinstance(document, dict) or document.get("format") != CURSOR_FORMAT or instant is None:
            _log.error("kemlu_api.cursor_unreadable", cursor=self.path.name)
            self.since = self.initial
        elif self._latest is not None and instant > self._latest():
            # written by a version that let a far-future updated_at move it: the feed would stop for good
            _log.error("kemlu_api.cursor_in_future", cursor=self.path.name)
            self.since = self.initial
        elif document.get("mission") != self.mission:
            _log.warning("kemlu_api.cursor_for_other_mission", cursor=self.path.name, mission=self.mission)
            self.since = self.initial
        else:
            self.since = str(since)
        return self.since

    def save(self, since: str) -> None:
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        write_json_atomically(
            self.path,
            {
                "format": CURSOR_FORMAT,
                "mission": self.mission,
                "updated_since": since,
                "saved_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        self.since = since


@dataclass
class PollResult:
    """Counts of one :meth:`KemluCaseApiSource.poll_once` (for logs and tests)."""

    pages: int = 0
    items: int = 0
    published: int = 0
    skipped: int = 0
    quarantined: int = 0


class _Unavailable(Exception):
    """The API did not give a usable answer. ``status`` when there was one; never a body."""

    def __init__(self, detail: str, *, status: int | None = None, operator_error: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.operator_error = operator_error


class _Deferred(Exception):
    """``publish`` said "not now" (outbox full, stopping, bus down): retry the page later."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason


QuarantineCallback = Callable[[str, str], None]


class KemluCaseApiSource:
    """Poll the Kemlu case API for one mission's TPPO cases; see the module docstring."""

    def __init__(
        self,
        *,
        base_url: URL,
        mission: str,
        party: str,
        state_dir: Path,
        mapping: KemluMapping,
        name: str = "kemlu-case-api",
        poll_interval: float = 30.0,
        page_size: int = 100,
        timeout: float = 10.0,
        since: str = _EPOCH,
        backoff: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        session: aiohttp.ClientSession | None = None,
        on_quarantine: QuarantineCallback | None = None,
        max_response_bytes: int = 16 * 1024 * 1024,
        max_clock_skew: float = 300.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if poll_interval <= 0 or timeout <= 0:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"source {name}: poll_interval and timeout must be positive"
            )
        if not 1 <= page_size <= 10_000:
            raise GatewayError(Reason.CONFIG_INVALID, f"source {name}: page_size must be between 1 and 10000")
        if parse_instant(since) is None:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"source {name}: since must be an RFC 3339 instant with offset"
            )
        self.name = name
        self.mission = mission
        self.party = party
        self.mapping = mapping
        self.cases_url = base_url / "api" / "v1" / "cases"
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.backoff = backoff or RetryPolicy(attempts=1, base_delay=1.0, max_delay=60.0, jitter=0.2)
        self.window = TimeWindow(max_skew=timedelta(seconds=max_clock_skew))
        self._now = now
        self.cursor = Cursor(
            state_dir / f"kemlu-cursor-{name}.json", mission=mission, initial=since,
            latest=lambda: self.window.latest(now()),
        )  # fmt: skip
        self.quarantine_file = state_dir / f"kemlu-quarantine-{name}.jsonl"
        self.consecutive_failures = 0
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._ssl: _ssl.SSLContext | bool = ssl if ssl is not None else True
        self._session = session
        self._owns_session = session is None
        self._on_quarantine = on_quarantine
        self._max_bytes = max_response_bytes

    # ---- the loop ------------------------------------------------------------------------------------
    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval`` until ``stop``; back off on failures; never raise for them."""
        await asyncio.to_thread(self.cursor.load)
        _log.info(
            "kemlu_api.started",
            source=self.name,
            party=self.party,
            mission=self.mission,
            since=self.cursor.since,
        )
        try:
            while not stop.is_set():
                wait_longest = False
                try:
                    result = await self.poll_once(publish, stop)
                except _Unavailable as exc:
                    self._failed("kemlu_api.unavailable", exc.detail, exc.status, operator=exc.operator_error)
                    wait_longest = exc.operator_error  # a wrong URL or token: retrying fast cannot help
                except _Deferred as exc:
                    self._failed("kemlu_api.publish_deferred", str(exc.reason), None)
                except Exception as exc:  # noqa: BLE001 - the loop must survive anything; type only, no values
                    self._failed("kemlu_api.poll_failed", type(exc).__name__, None)
                else:
                    if self.consecutive_failures:
                        _log.info(
                            "kemlu_api.recovered", source=self.name, after_failures=self.consecutive_failures
                        )
                    self.consecutive_failures = 0
                    if result.items:
                        _log.info(
                            "kemlu_api.polled",
                            source=self.name,
                            pages=result.pages,
                            items=result.items,
                            published=result.published,
                            skipped=result.skipped,
                            quarantined=result.quarantined,
                            since=self.cursor.since,
                        )
                    await _sleep_unless(stop, self.poll_interval)
                    continue
                delay = self.backoff.max_delay if wait_longest else self._retry_delay()
                await _sleep_unless(stop, delay)
        finally:
            await self.close()
            _log.info("kemlu_api.stopped", source=self.name)

    def _failed(self, event: str, detail: str, status: int | None, *, operator: bool = False) -> None:
        self.consecutive_failures += 1
        log = _log.error if operator else _log.warning
        log(event, source=self.name, detail=detail, status=status, attempt=self.consecutive_failures)

    def _retry_delay(self) -> float:
        return self.backoff.delay(self.consecutive_failures)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---- one poll ------------------------------------------------------------------------------------
    async def poll_once(self, publish: PublishFn, stop: asyncio.Event | None = None) -> PollResult:
        """Read every page changed since the cursor and publish it; the cursor moves after each full page.

        Raises ``_Unavailable`` (API) or ``_Deferred`` (publish said "not now"); the cursor then stays at the
        last completed page, so the next poll resumes exactly there.
        """
        result = PollResult()
        since = self.cursor.since
        page = 1
        while stop is None or not stop.is_set():
            items, next_page = await self._fetch(since, page)
            result.pages += 1
            newest_at, newest = parse_instant(since), since
            for item in items:
                if stop is not None and stop.is_set():
                    return result  # page not finished: the cursor stays; the same ids are re-made next time
                updated = await self._handle_item(item, publish, result)
                if updated is not None and newest_at is not None and updated[0] > newest_at:
                    newest_at, newest = updated
            result.items += len(items)
            if newest != since:
                await asyncio.to_thread(self.cursor.save, newest)
                since = newest
                if next_page is None:
                    break
                page = 1  # keyset paging: restart from the new cursor (see the module docstring)
            else:
                if next_page is None:
                    break
                if next_page <= page:
                    raise _Unavailable("response next_page does not advance")
                page = next_page  # a full page of cases with one timestamp: the cursor cannot move; page on
        return result

    async def _handle_item(
        self, item: object, publish: PublishFn, result: PollResult
    ) -> tuple[datetime, str] | None:
        """Publish or quarantine one item; return its ``updated_at`` (parsed, as sent) for the cursor."""
        if not isinstance(item, Mapping):
            self._quarantine(
                result,
                case_ref=None,
                version=None,
                message="item",
                field="item",
                reason=Reason.SCHEMA_INVALID,
                detail="item is not an object",
            )
            return None
        raw_case_id = item.get("id_kasus")
        case_ref = (
            raw_case_id
            if isinstance(raw_case_id, str) and re.match(r"^[A-Z0-9][A-Z0-9-]{5,63}$", raw_case_id)
            else None
        )
        updated_raw = item.get("updated_at")
        try:
            updated_at = checked_instant(updated_raw, latest=self.window.latest(self._now()))
        except GatewayError as exc:  # never ordered, never a cursor: one bad value cannot stop the feed
            self._quarantine(
                result,
                case_ref=case_ref,
                version=None,
                message="case",
                field="updated_at",
                reason=exc.reason,
                detail=exc.detail,
            )
            return None
        updated = (updated_at, str(updated_raw))
        version_raw = item.get("version")
        version = (
            str(version_raw)
            if isinstance(version_raw, int) and not isinstance(version_raw, bool)
            else str(updated_raw)
        )
        mission = item.get("mission")
        if mission is not None and mission != self.mission:
            result.skipped += 1
            _log.debug("kemlu_api.skipped_other_mission", source=self.name, case_id=case_ref)
            return updated
        if item.get("tppo") is not True:  # only trafficking cases leave the embassy; strictly the JSON true
            result.skipped += 1
            _log.debug("kemlu_api.skipped_not_tppo", source=self.name, case_id=case_ref)
            return updated
        case_failed = False
        for planned in self.mapping.plan(item, version=version):
            is_alert = planned.message == "network_alert"
            if case_failed and not is_alert:
                # a plan for a case whose referral was quarantined would reach receivers that do not know the
                # case; it waits for the fixed version together with the referral
                self._quarantine(
                    result,
                    case_ref=case_ref,
                    version=version,
                    message=planned.message,
                    field="",
                    reason=Reason.SCHEMA_INVALID,
                    detail="skipped: an earlier message of the case was quarantined",
                )
                continue
            if isinstance(planned, MessageProblem):
                error = planned.error
                self._quarantine(
                    result,
                    case_ref=case_ref,
                    version=version,
                    message=planned.message,
                    field=error.field,
                    reason=error.reason,
                    detail=error.detail,
                )
                case_failed = case_failed or planned.message not in ("network_alert",)
                continue
            if await self._publish(planned, publish, result, case_ref, version):
                continue
            case_failed = case_failed or not is_alert
        return updated

    async def _publish(
        self,
        planned: PlannedMessage,
        publish: PublishFn,
        result: PollResult,
        case_ref: str | None,
        version: str,
    ) -> bool:
        try:
            await publish(
                planned.event_type, planned.payload, recipients=planned.recipients, event_id=planned.event_id
            )
        except GatewayError as exc:
            if exc.reason in _DEFERRING:
                raise _Deferred(exc.reason) from None
            field = self.mapping.messages[planned.message].source_for_detail(exc.detail) or ""
            self._quarantine(
                result,
                case_ref=case_ref,
                version=version,
                message=planned.message,
                field=field,
                reason=exc.reason,
                detail=exc.detail,
            )
            return False
        result.published += 1
        _log.debug(
            "kemlu_api.published",
            source=self.name,
            subject=planned.subject,
            message=planned.message,
            event_id=planned.event_id,
        )
        return True

    def _quarantine(
        self,
        result: PollResult,
        *,
        case_ref: str | None,
        version: str | None,
        message: str,
        field: str,
        reason: Reason | str,
        detail: str,
    ) -> None:
        """Record why a case (message) was not published: ids, field and reason code, never a value."""
        result.quarantined += 1
        record = {
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "case_id": case_ref,
            "version": version,
            "message": message,
            "field": field,
            "reason": str(reason),
            "detail": detail,
        }
        line = json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"
        self.quarantine_file.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.quarantine_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        _log.warning(
            "kemlu_api.quarantined",
            source=self.name,
            case_id=case_ref,
            message=message,
            field=field,
            reason=str(reason),
        )
        if self._on_quarantine is not None:
            self._on_quarantine(self.name, str(reason))

    # ---- HTTP ------------------------------------------------------------------------------------------
    async def _fetch(self, since: str, page: int) -> tuple[list[Any], int | None]:
        params = {
            "updated_since": since,
            "page": str(page),
            "page_size": str(self.page_size),
            "mission": self.mission,
        }
        session = self._get_session()
        try:
            async with session.get(
                self.cases_url,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status != 200:
                    raise _Unavailable(
                        f"HTTP {status}", status=status, operator_error=not is_retryable_status(status)
                    )
                raw = await _read_limited(response, self._max_bytes)
        except TimeoutError:
            raise _Unavailable("timed out") from None
        except aiohttp.ClientError as exc:
            raise _Unavailable(f"request failed ({type(exc).__name__})") from None
        return _parse_page(raw)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _Unavailable(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_page(raw: bytes) -> tuple[list[Any], int | None]:
    """``{"items": [...], "next_page": n | null}``, strictly; anything else is a bad response (retried)."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise _Unavailable("response is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise _Unavailable("response has no 'items' list")
    next_page = document.get("next_page")
    if next_page is not None and (
        not isinstance(next_page, int) or isinstance(next_page, bool) or next_page < 1
    ):
        raise _Unavailable("response 'next_page' is not a page number or null")
    return document["items"], next_page


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
