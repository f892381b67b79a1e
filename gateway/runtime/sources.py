"""Where an agency's native records enter the gateway: the interface every source implements.

A :class:`Source` is anything with a ``name`` and an ``async run(publish, stop)`` that turns records into
calls of :class:`PublishFn` until ``stop`` is set. The runtime owns the publish function (validate, seal,
sign, write to the outbox) and the stop event; a source only decides *what* to publish and *when a record is
done*. File sources build on :mod:`gateway.runtime.dropfolder`; the Kemlu adapter polls an HTTP API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.contract.envelope import Envelope

__all__ = ["PublishFn", "QuarantineFn", "Source"]


class PublishFn(Protocol):
    """The runtime's publish function: validate, seal, sign and enqueue one event.

    Raises ``GatewayError`` when the payload is refused (``schema.invalid``, ``authz.*``, ``seal.*``, ...).

    Concurrent calls (a drop folder publishes a file in chunks of
    :data:`gateway.runtime.dropfolder.PUBLISH_CHUNK`) are decided in call order:
    :meth:`gateway.bus.publisher.Publisher.publish` checks intake and outbox capacity before its first
    ``await``, and enqueued events count against the capacity, so once it refuses with ``gateway.stopping`` or
    ``outbox.full`` it refuses every call started after it in the same chunk.
    """

    async def __call__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
    ) -> Envelope: ...


class Source(Protocol):
    """Something that produces events. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None: ...


QuarantineFn = Callable[[str, str], None]
"""``on_quarantine(source_name, reason_code)``: called once per quarantined record (the runtime counts)."""
