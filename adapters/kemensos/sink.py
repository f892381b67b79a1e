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
  names, into the ``lainnya`` ("other") object, so a field added by a new minor schema version, or one
  nobody mapped yet, still reaches the case worker.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from adapters.kemensos.mapping import CodeList, KemensosMapping, OutField
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
    attributes: Mapping[str, str], payload: Mapping[str, Any], mapping: KemensosMapping
) -> dict[str, Any]:
    """Map ``payload`` of an event with CloudEvents ``attributes`` to the native record (see module doc)."""
    outbound = mapping.outbound
    event_type = attributes["type"]
    spec = outbound.types.get(event_type)
    record: dict[str, Any] = {
        outbound.kind_key: spec.kind if spec is not None else event_type.removeprefix(TYPE_PREFIX)
    }
    consumed: set[str] = set()
    fields = (*outbound.event, *outbound.common, *(spec.fields if spec is not None else ()))
    for out in fields:
        value = _produce(out, attributes, payload, mapping.codes, consumed)
        if value is not None:
            _assign(record, out.target, value)
    leftover = _without(payload, consumed)
    if leftover:
        record[outbound.leftover] = leftover
    return record


def _produce(
    out: OutField,
    attributes: Mapping[str, str],
    payload: Mapping[str, Any],
    codes: Mapping[str, CodeList],
    consumed: set[str],
) -> Any:
    if out.event is not None:
        return attributes.get(out.event)
    values = []
    for path in out.paths:
        value = _lookup(payload, path)
        if value is not None:
            consumed.add(path)
            values.append(value)
    if not values:
        return None
    if out.join:
        return " ".join(str(v) for v in values)
    value = copy.deepcopy(values[0])
    if out.code is not None:
        code_list = codes[out.code]
        value = [code_list.native(v) for v in value] if isinstance(value, list) else code_list.native(value)
    return value


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _assign(record: dict[str, Any], target: str, value: Any) -> None:
    parts = target.split(".")
    node = record
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _without(payload: Mapping[str, Any], consumed: set[str], prefix: str = "") -> dict[str, Any]:
    """A copy of ``payload`` minus the consumed paths; objects left empty are dropped."""
    rest: dict[str, Any] = {}
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if path in consumed:
            continue
        if isinstance(value, Mapping):
            inner = _without(value, consumed, f"{path}.")
            if inner:
                rest[key] = inner
        else:
            rest[key] = copy.deepcopy(value)
    return rest
