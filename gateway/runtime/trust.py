"""The registry a running gateway trusts, kept up to date without a restart (:class:`LiveRegistry`).

Sources, all checked by one :class:`~gateway.contract.registry_chain.RegistryChain` from the configured
anchor (``registry_anchor``), in this order at start:

1. the gateway's own copy under ``<data_dir>/registry/``: every version it put in force before, and its
   position in the registry topic (a restart resumes where it stopped, so nothing is re-counted);
2. the configured ``registry`` file, or every ``*.json`` in that folder (how air-gapped sites receive
   versions; watched for changes while running);
3. the registry topic ``xchg.registry.v1`` (followed while running unless ``follow_registry = false``).

A new version that verifies (anchor, chain, threshold, rollback: ``docs/REGISTRY.md``) is written to the
gateway's copy, then handed to :attr:`LiveRegistry.on_change` — the gateway replaces its verifier, publisher
and the rest in one synchronous call, between two deliveries — and shown by ``xchg_registry_serial``. A
refused one changes nothing: the gateway keeps the last good version, counts the refusal in
``xchg_registry_refused_total{reason}``, logs it (reason, detail, where it came from; never key material)
and names it on ``/readyz``. Versions that were already on the topic when a gateway without a remembered
position first read it, and older versions in the file source, are history: logged, never counted. The
version in force past its ``expires`` is stale: ``xchg_registry_stale`` is 1, ``/readyz`` fails with
``registry.expired``, and verification goes on with it (a freeze attack or late maintainers must be seen,
not turned into an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog

from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.registry_feed import RegistryFollower, RegistryRecord
from gateway.contract.policy import REGISTRY_TOPIC
from gateway.contract.registry_chain import Anchor, Outcome, RegistryChain
from gateway.contract.registry_version import RegistryVersion
from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import write_atomically
from gateway.runtime.ops import CheckFailed, ReadinessCheck

__all__ = ["LiveRegistry", "Refusal"]

_log = structlog.get_logger(__name__)

_VERSIONS: Final = "versions"
_POSITION: Final = "position.json"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The last refused version, as ``/readyz`` shows it."""

    at: datetime
    reason: Reason
    detail: str
    origin: str

    def text(self) -> str:
        return f"{self.reason} from {self.origin} at {_iso(self.at)}: {self.detail}"


class LiveRegistry:
    """The registry version in force for one gateway, and the tasks that keep it current."""

    def __init__(
        self,
        *,
        anchor: Anchor,
        source: Path | None,
        state_dir: Path,
        metrics: GatewayMetrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._chain = RegistryChain(anchor)
        self._source = source
        self._dir = state_dir
        self._metrics = metrics
        self.on_change: Callable[[RegistryVersion], None] = lambda _version: None
        """Called with each version put in force after :meth:`load` (the gateway swaps what uses it)."""
        self._now = now
        self._position: int | None = None
        self._seen_files: dict[Path, tuple[float, int]] = {}
        self.applied_at: datetime | None = None
        self.last_refusal: Refusal | None = None
        metrics.registry_stale.set_function(lambda: 1.0 if self.stale() else 0.0)

    # ---- what is in force -----------------------------------------------------------------------------
    @property
    def current(self) -> RegistryVersion:
        version = self._chain.current
        if version is None:
            raise GatewayError(Reason.REGISTRY_UNAVAILABLE, "no trusted registry version")
        return version

    def stale(self) -> bool:
        version = self._chain.current
        return version is not None and version.stale_at(self._now())

    # ---- start ------------------------------------------------------------------------------------------
    def load(self) -> RegistryVersion:
        """The gateway's own copy, then the configured file or folder; raises ``registry.unavailable`` when
        neither holds a version the anchor trusts (the detail says why each was refused)."""
        reasons: list[str] = []
        for raw, origin in self._cached():
            outcome = self._chain.update(raw)
            if not outcome.accepted:
                if self._chain.current is None:
                    reasons.append(f"{origin}: {outcome.reason}")
                    continue
                _log.warning("registry.cache_unusable", origin=origin, reason=str(outcome.reason),
                             detail=outcome.detail)  # fmt: skip
                break
        if self._chain.current is not None:
            self._position = self._read_position()
        for raw, origin in self._source_files():
            outcome = self.offer(raw, origin=origin, history=True)
            if not outcome.accepted:
                reasons.append(f"{origin}: {outcome.reason}: {outcome.detail}")
        version = self._chain.current
        if version is None:
            raise GatewayError(
                Reason.REGISTRY_UNAVAILABLE,
                "no registry version the anchor trusts"
                + (f" ({'; '.join(reasons[:3])})" if reasons else f": none found in {self._source}"),
            )
        self._show(version)
        self.applied_at = self.applied_at or self._now()
        _log.info("registry.in_force", serial=version.serial, digest=version.digest,
                  parties=len(version.registry.parties), expires=_iso(version.expires))  # fmt: skip
        return version

    # ---- one version offered ------------------------------------------------------------------------------
    def offer(self, raw: bytes, *, origin: str, history: bool = False) -> Outcome:
        """Verify ``raw`` against the version in force and apply it (see the module docstring)."""
        outcome = self._chain.update(raw)
        version = outcome.version
        if outcome.status == "applied" and version is not None:
            self._save(version)
            self.applied_at = self._now()
            self._metrics.registry_applied.inc()
            self._show(version)
            _log.info("registry.applied", serial=version.serial, digest=version.digest, origin=origin,
                      signers=list(outcome.signers), expires=_iso(version.expires))  # fmt: skip
            self.on_change(version)
        elif outcome.status == "refused" and outcome.reason is not None:
            label = version.label() if version is not None else "unreadable version"
            if history:
                _log.info(
                    "registry.history_skipped", origin=origin, version=label, reason=str(outcome.reason)
                )
            else:
                self._metrics.registry_refused.labels(reason=str(outcome.reason)).inc()
                self.last_refusal = Refusal(self._now(), outcome.reason, f"{label}: {outcome.detail}", origin)
                _log.warning("registry.refused", origin=origin, version=label, reason=str(outcome.reason),
                             detail=outcome.detail)  # fmt: skip
        return outcome

    # ---- running tasks (supervised by the gateway) ------------------------------------------------------
    async def follow(self, kafka: KafkaSettings, stop: asyncio.Event) -> None:
        """Follow the registry topic from the remembered position until ``stop``."""

        async def on_record(record: RegistryRecord, history: bool) -> None:
            if record.value is not None:
                self.offer(record.value, origin=f"{REGISTRY_TOPIC}@{record.offset}", history=history)
            self._position = record.offset + 1
            await asyncio.to_thread(self._save_position, record.offset + 1)

        await RegistryFollower(kafka, start=self._position).run(on_record, stop)

    async def watch(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        """Offer every new or changed file of the configured source until ``stop`` (air-gapped sites)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            for raw, origin in await asyncio.to_thread(self._source_files):
                self.offer(raw, origin=origin, history=False)

    def readiness_check(self, name: str = "registry-version") -> ReadinessCheck:
        """Which version is in force and until when; fails when it is stale (``registry.expired``)."""

        async def probe() -> str:
            version = self._chain.current
            if version is None:
                raise CheckFailed(f"{Reason.REGISTRY_UNAVAILABLE}: no trusted registry version")
            now = self._now()
            refused = f"; last refused: {self.last_refusal.text()}" if self.last_refusal else ""
            if version.stale_at(now):
                raise CheckFailed(
                    f"{Reason.REGISTRY_EXPIRED}: {version.label()} expired at {_iso(version.expires)}; "
                    f"verification continues with it until the maintainers publish a newer version{refused}"
                )
            days = (version.expires - now) // timedelta(days=1)
            since = f" since {_iso(self.applied_at)}" if self.applied_at else ""
            return f"{version.label()} in force{since}, expires in {days} day(s){refused}"

        return ReadinessCheck(name, probe)

    # ---- files --------------------------------------------------------------------------------------------
    def _show(self, version: RegistryVersion) -> None:
        self._metrics.registry_serial.set(version.serial)
        self._metrics.registry_expires.set(version.expires.timestamp())

    def _cached(self) -> list[tuple[bytes, str]]:
        folder = self._dir / _VERSIONS
        if not folder.is_dir():
            return []
        return [(path.read_bytes(), f"cache {path.name}") for path in sorted(folder.glob("*.json"))]

    def _source_files(self) -> list[tuple[bytes, str]]:
        """New or changed files of the source, oldest serial first (by name: ``<serial>.json`` sorts)."""
        source = self._source
        if source is None:
            return []
        paths = sorted(source.glob("*.json")) if source.is_dir() else [source]
        found: list[tuple[bytes, str]] = []
        for path in paths:
            try:
                stat = path.stat()
                signature = (stat.st_mtime, stat.st_size)
                if self._seen_files.get(path) == signature:
                    continue
                data = path.read_bytes()
            except OSError as exc:
                _log.warning("registry.source_unreadable", file=str(path), error=exc.strerror)
                continue
            self._seen_files[path] = signature
            found.append((data, f"file {path}"))
        return sorted(found, key=lambda item: _serial_hint(item[0]))

    def _save(self, version: RegistryVersion) -> None:
        _write_atomically(self._dir / _VERSIONS / f"{version.serial:012d}.json", version.to_bytes())

    def _read_position(self) -> int | None:
        try:
            value = json.loads((self._dir / _POSITION).read_text("utf-8")).get("next_offset")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and value >= 0 else None

    def _save_position(self, offset: int) -> None:
        document = {"topic": REGISTRY_TOPIC, "partition": 0, "next_offset": offset}
        _write_atomically(self._dir / _POSITION, json.dumps(document).encode("utf-8"))


def _serial_hint(raw: bytes) -> int:
    """The serial of a version, to offer files oldest first (0 when unreadable: refused in its turn)."""
    try:
        return RegistryVersion.parse(raw).serial
    except GatewayError:
        return 0


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, data)


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
