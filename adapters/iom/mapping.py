"""IOM HTCDS rows -> exchange messages, and referrals -> HTCDS-shaped JSON, per ``mapping.toml``."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.fieldmap import (
    MappingError,
    MessageMap,
    Tables,
    load_mapping_file,
    parse_message_map,
    parse_tables,
)
from gateway.contract.canonical import canonical_json
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason

__all__ = [
    "COLUMNS_FILE",
    "EVENT_ID_NAMESPACE",
    "MAPPING_FILE",
    "ROW_MESSAGES",
    "IomMapping",
    "htcds_columns",
    "row_event_id",
]

_HERE: Final = Path(__file__).resolve().parent
MAPPING_FILE: Final = _HERE / "mapping.toml"
COLUMNS_FILE: Final = _HERE / "htcds_v2_columns.txt"
#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:adapter:iom-htcds")``, written out because changing it would
#: change every event id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("a6ba4561-a78e-5dbd-ae04-4534eab05500")
#: Messages an export row can yield (``record_type`` column, translated by ``[tables.record_type]``).
ROW_MESSAGES: Final = ("assistance_record", "supply_alert")
SKIP: Final = "skip"


def htcds_columns(path: Path = COLUMNS_FILE) -> tuple[str, ...]:
    """The HTCDS v2.0 field names in template order (``#`` lines are comments and section headings)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc.strerror}") from exc
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def row_event_id(message: str, payload: Mapping[str, Any]) -> str:
    """Deterministic event id from the mapped payload's content.

    IOM exports are usually cumulative (each export repeats earlier rows), so an id from the file and row
    number would republish every earlier record under a new id; an id from the content makes a repeated row
    the same event, which the outbox and every consumer drop. The consequence, documented for IOM staff:
    two identical rows are one record (give the count in ``quantity``).
    """
    digest = hashlib.sha256(canonical_json(dict(payload))).hexdigest()
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{message}:{digest}"))


class IomMapping:
    """The parsed ``mapping.toml`` of the IOM adapter (see that file for the layout)."""

    def __init__(
        self,
        document: Mapping[str, Any],
        *,
        columns: tuple[str, ...] | None = None,
        where: str = "iom mapping",
    ) -> None:
        self.tables: Tables = parse_tables(document, where)
        if "record_type" not in self.tables:
            raise GatewayError(Reason.CONFIG_INVALID, f"{where}: [tables.record_type] is required")
        self.messages: dict[str, MessageMap] = {}
        for name in ROW_MESSAGES:
            message = parse_message_map(name, document.get(name), self.tables, where)
            if not isinstance(message.options.get("type"), str):
                raise GatewayError(Reason.CONFIG_INVALID, f"{where}: [{name}] needs 'type'")
            self.messages[name] = message
        self.referral_out = parse_message_map(
            "referral_out", document.get("referral_out"), self.tables, where
        )
        column_table = document.get("columns", {})
        if not isinstance(column_table, Mapping):
            column_table = {}
        operational = _names(column_table.get("operational"))
        required = _names(column_table.get("required"))
        if not operational or not required or not set(required) <= set(operational):
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"{where}: [columns] needs 'operational' and 'required' (a subset) names",
            )
        self.operational: tuple[str, ...] = operational
        self.required: tuple[str, ...] = required
        self.htcds: tuple[str, ...] = columns if columns is not None else htcds_columns()

    @classmethod
    def load(cls, path: Path = MAPPING_FILE) -> IomMapping:
        return cls(load_mapping_file(path), where=str(path))

    @property
    def known_columns(self) -> frozenset[str]:
        return frozenset(self.htcds) | frozenset(self.operational)

    def message_of(self, record: Mapping[str, str]) -> str:
        """``assistance_record``, ``supply_alert`` or ``skip`` for a row; ``MappingError`` otherwise."""
        raw = record.get("record_type", "")
        if not raw.strip():
            raise MappingError("record_type", "empty (assistance, supply or case)")
        kind = self.tables.lookup("record_type", raw, "record_type")
        if kind != SKIP and kind not in self.messages:
            raise MappingError("record_type", "mapping table record_type names an unknown message")
        return str(kind)

    def map_row(self, message: str, record: Mapping[str, str], *, party: str) -> dict[str, Any]:
        return self.messages[message].apply(record, self.tables, {"party": party})

    def event_type(self, message: str) -> str:
        return str(self.messages[message].options["type"])

    def referral_body(self, accepted: Accepted) -> dict[str, Any]:
        """A referral as HTCDS-shaped JSON for IOM's case system (``[referral_out]``)."""
        event = accepted.event
        expected = self.referral_out.options.get("type")
        if event.type != expected:
            raise MappingError("type", f"the IOM case system takes referrals only, not {event.type}")
        context = {
            "event": {
                "id": event.id,
                "source": event.source,
                "type": event.type,
                "time": event.time,
                "dataschema": event.dataschema,
            }
        }
        return self.referral_out.apply(accepted.payload(), self.tables, context)


def _names(value: object) -> tuple[str, ...]:
    """The value as a tuple of column names, or () when it is not a list of non-empty strings."""
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return ()
