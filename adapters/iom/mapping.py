"""IOM HTCDS rows -> exchange messages, and referrals -> HTCDS-shaped JSON, per ``mapping.toml``."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.fieldmap import MappingError, MappingFile, MessageMap, Tables, load_mapping
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
#: The context a row's fields may read (the gateway's own party) and a referral's (its event attributes).
ROW_CONTEXT: Final = ("$party",)
EVENT_CONTEXT: Final = ("$event.id", "$event.source", "$event.type", "$event.time", "$event.dataschema")


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

    def __init__(self, document: Mapping[str, Any], *, columns: tuple[str, ...] | None = None) -> None:
        file = MappingFile(document)
        self.tables: Tables = file.tables
        if "record_type" not in self.tables:
            raise file.root.fail("tables.record_type", "required")
        self.messages: dict[str, MessageMap] = {}
        self.event_types: dict[str, str] = {}
        for name in ROW_MESSAGES:
            section = file.section(name)
            self.messages[name] = file.message(section, context=ROW_CONTEXT)
            self.event_types[name] = section.string("type")
        referral = file.section("referral_out")
        self.referral_out = file.message(referral, context=EVENT_CONTEXT, unmapped=True)
        self.referral_type: str = referral.string("type")
        consent = file.section("consent_out")
        self.consent_out = file.message(consent, context=EVENT_CONTEXT, unmapped=True)
        self.consent_type: str = consent.string("type")
        column_table = file.section("columns")
        self.operational: tuple[str, ...] = column_table.strings("operational", empty=False)
        self.required: tuple[str, ...] = column_table.strings("required", empty=False)
        if not set(self.required) <= set(self.operational):
            raise column_table.fail("required", "must name operational columns only")
        file.close()
        self.htcds: tuple[str, ...] = columns if columns is not None else htcds_columns()

    @classmethod
    def load(cls, path: Path = MAPPING_FILE) -> IomMapping:
        return load_mapping(path, cls)

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
        return self.event_types[message]

    def referral_body(self, accepted: Accepted) -> dict[str, Any]:
        """A referral as HTCDS-shaped JSON for IOM's case system (``[referral_out]``), or a consent change
        (``[consent_out]``, an erasure request included)."""
        event = accepted.event
        if event.type == self.consent_type:
            return self.consent_out.apply(accepted.payload(), self.tables, self._context(accepted))
        if event.type != self.referral_type:
            raise MappingError(
                "type", f"the IOM case system takes referrals and consent changes, not {event.type}"
            )
        return self.referral_out.apply(accepted.payload(), self.tables, self._context(accepted))

    @staticmethod
    def _context(accepted: Accepted) -> dict[str, Any]:
        event = accepted.event
        attributes = ("id", "source", "type", "time", "dataschema")
        return {"event": {name: getattr(event, name) for name in attributes}}
