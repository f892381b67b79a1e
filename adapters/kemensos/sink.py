"""Outbound: verified events -> records in the Kemensos case system's own (Indonesian) shape.

Kemensos staff work in Indonesian field names (``no_kasus``, ``nama_lengkap``, ``jenis_kelamin`` L/P,
``rencana_kepulangan``...), so the case system takes its own shape rather than the exchange's HTCDS names.
The transform is a pure function of the :class:`~gateway.contract.verify.Accepted` event and the mapping file;
the HTTP delivery (idempotency key, retry rules) is :class:`gateway.runtime.webhook.WebhookSink`'s, reused
through its ``body`` hook rather than copied, so Kemensos gets exactly the delivery semantics every other
webhook has.

Two rules keep the transform honest:

* **Nothing is invented.** A code without a native equivalent (``TransgenderFeminine`` has no L/P) passes
  through as the exchange value; absent fields stay absent.
* **Nothing is lost.** Payload fields no mapping entry consumed go, unchanged and under their exchange
  names, into the ``lainnya`` ("other") object (``unmapped``, at any depth), so a field added by a new
  minor schema version, or one nobody mapped yet, still reaches the case worker.

The record's shape is ``[case_system]`` of ``mapping.toml``, applied by the shared engine
(:mod:`adapters.fieldmap`) with the event's attributes as ``$event.*`` and its message name as ``$message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.kemensos.mapping import KemensosMapping
from gateway.contract.schemas import TYPE_PREFIX
from gateway.contract.verify import Accepted

__all__ = ["native_record", "to_native"]


def to_native(accepted: Accepted, mapping: KemensosMapping) -> dict[str, Any]:
    """The case-system record for a verified event: its clear fields plus what was unsealed for Kemensos."""
    event = accepted.event
    attributes = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "dataschema": event.dataschema,
        "dataclassification": event.dataclassification,
    }
    return native_record(attributes, accepted.payload(), mapping)


def native_record(
    attributes: Mapping[str, str | None], payload: Mapping[str, Any], mapping: KemensosMapping
) -> dict[str, Any]:
    """Map ``payload`` of an event with CloudEvents ``attributes`` to the native record (see module doc)."""
    event_type = str(attributes["type"])
    context = {"event": dict(attributes), "message": event_type.removeprefix(TYPE_PREFIX)}
    return mapping.record_map(event_type).apply(payload, mapping.tables, context)
