"""Stand-ins for what the gateway runtime hands a plug-in: its context and its publish function.

:class:`WorldPublish` is the runtime's publish function minus Kafka: ``build_event`` as one party of a
:class:`~tests.world.World` (validate the payload, seal it for the recipients, sign) and an outbox that keeps
one event per id, as the real outbox's ``INSERT OR IGNORE`` does. A record that "works" against it is one
the gateway would accept and deduplicate.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.bus.metrics import GatewayMetrics
from gateway.contract.envelope import Envelope
from gateway.errors import GatewayError, Reason
from gateway.runtime.plugins import PluginContext
from tests.world import World

__all__ = ["Published", "WorldPublish", "plugin_context"]


@dataclass(frozen=True)
class Published:
    """One call of a publish function: its arguments (the data copied, so later edits do not show)."""

    type: str
    data: dict[str, Any]
    recipients: tuple[str, ...]
    dataschema: str | None
    event_id: str | None


@dataclass
class WorldPublish:
    """``build_event`` as ``party`` plus an outbox keyed by event id (see the module docstring).

    ``attempts`` records every call in order, refused ones included; ``calls`` only those that were
    published. ``refuse_on_call=(n, reason)`` refuses the n-th attempt with ``reason``, as the runtime does
    when it cannot take events now (``outbox.full``...), and, like the runtime, every attempt started after
    it in the same turn of the event loop (the rest of a drop file's chunk; see ``sources.PublishFn``).
    """

    world: World
    party: str
    refuse_on_call: tuple[int, Reason] | None = None
    attempts: list[Published] = field(default_factory=list)
    calls: list[Published] = field(default_factory=list)
    outbox: dict[str, Envelope] = field(default_factory=dict)
    _refusing: bool = False

    async def __call__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        call = Published(event_type, copy.deepcopy(dict(data)), tuple(recipients), dataschema, event_id)
        self.attempts.append(call)
        refusal = self.refuse_on_call
        if refusal is not None and (self._refusing or len(self.attempts) == refusal[0]):
            if not self._refusing:
                self._refusing = True
                asyncio.get_running_loop().call_soon(setattr, self, "_refusing", False)
            raise GatewayError(refusal[1], "the gateway cannot take events now")
        event = self.world.event(
            event_type, data, by=self.party, recipients=recipients, dataschema=dataschema, event_id=event_id
        )
        self.calls.append(call)
        self.outbox.setdefault(event.id, event)
        return event

    def of_type(self, suffix: str) -> list[Envelope]:
        """The events in the outbox whose type ends with ``suffix``."""
        return [e for e in self.outbox.values() if e.type.endswith(suffix)]

    def payloads(self, suffix: str) -> list[dict[str, Any]]:
        """The (unsealed) payloads of :meth:`of_type`."""
        return [json.loads(e.data) for e in self.of_type(suffix)]

    def subjects(self, suffix: str) -> set[str]:
        return {e.subject for e in self.of_type(suffix)}


def plugin_context(tmp_path: Path, party: str) -> PluginContext:
    """The context a plug-in factory gets from the runtime of ``party``: paths under ``tmp_path``."""
    return PluginContext(
        party=party, base_dir=tmp_path, data_dir=tmp_path / "state", metrics=GatewayMetrics(party=party)
    )
