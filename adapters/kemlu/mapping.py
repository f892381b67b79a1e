"""Kemlu case items -> exchange messages, and exchange events -> Kemlu case updates, per ``mapping.toml``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from adapters.fieldmap import MappingError, MappingFile, MessageMap, Tables, load_mapping, resolve
from gateway.contract.verify import Accepted

__all__ = [
    "EVENT_ID_NAMESPACE",
    "MAPPING_FILE",
    "MESSAGES",
    "KemluMapping",
    "MessageProblem",
    "PlannedMessage",
    "case_event_id",
]

MAPPING_FILE: Final = Path(__file__).resolve().parent / "mapping.toml"
#: ``uuid5(NAMESPACE_URL, "urn:id.trafficking:adapter:kemlu-case-api")``, written out because changing it
#: would change every event id and defeat deduplication across an upgrade.
EVENT_ID_NAMESPACE: Final = uuid.UUID("de0ac1cc-e481-5bb1-b8a1-94595c86196f")
#: Messages a case item can yield, in publication order (the referral first: it opens the case).
MESSAGES: Final = ("referral", "repatriation_plan", "network_alert")
_CASE_ID_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9-]{5,63}$")
_PLACEHOLDERS: Final = frozenset({"$referred", "$copied", "$escort"})
#: The CloudEvents attributes an ``[updates."<type>"]`` field may read.
EVENT_CONTEXT: Final = ("$event.id", "$event.source", "$event.type", "$event.time")


def case_event_id(key: str, version: str, kind: str) -> str:
    """Deterministic event id: the same case version polled twice gives the same id, so the outbox (and
    every consumer) drops the repeat, while a new version of the case gives a new event."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key}:{version}:{kind}"))


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One message a case item yields: what to hand to ``publish``."""

    message: str
    """Mapping section name (``referral``, ``repatriation_plan``, ``network_alert``)."""
    event_type: str
    payload: dict[str, Any]
    recipients: tuple[str, ...]
    event_id: str
    subject: str
    """The case id or alert id (clear, loggable)."""


class KemluMapping:
    """The parsed ``mapping.toml`` of the Kemlu adapter (see that file for the layout)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        file = MappingFile(document)
        self.tables: Tables = file.tables
        self.messages: dict[str, MessageMap] = {}
        self.event_types: dict[str, str] = {}
        self.requires: dict[str, str] = {}
        for name in MESSAGES:
            section = file.section(name)
            self.messages[name] = file.message(section)
            self.event_types[name] = section.string("type")
            self.requires[name] = section.string("requires")
        recipients = file.section("recipients", required=False)
        self.recipients: dict[str, tuple[str, ...]] = {}
        for name in recipients:
            if name not in MESSAGES:
                raise recipients.fail(name, f"not a message ({', '.join(MESSAGES)})")
            self.recipients[name] = recipients.strings(name)
        self.updates: dict[str, MessageMap] = {
            event_type: file.message(section, context=EVENT_CONTEXT, unmapped=True)
            for event_type, section in file.subsections("updates", required=False).items()
        }
        file.close()

    @classmethod
    def load(cls, path: Path = MAPPING_FILE) -> KemluMapping:
        return load_mapping(path, cls)

    # ---- inbound -------------------------------------------------------------------------------------
    def plan(self, item: Mapping[str, Any], *, version: str) -> list[PlannedMessage | MessageProblem]:
        """What a TPPO case item yields, in publication order: a :class:`PlannedMessage` per message whose
        native section is present, or a :class:`MessageProblem` naming the message and native field that
        could not be mapped (the caller decides what else to skip)."""
        case_id = item.get("id_kasus")
        if not isinstance(case_id, str) or not _CASE_ID_RE.match(case_id):
            return [MessageProblem("case", MappingError("id_kasus", "missing or not an exchange case id"))]
        planned: list[PlannedMessage | MessageProblem] = []
        for name in MESSAGES:
            message = self.messages[name]
            if resolve(item, self.requires[name]) in (None, {}, []):
                continue
            try:
                payload = message.apply(item, self.tables)
                recipients = self._recipients(name, item)
            except MappingError as exc:
                planned.append(MessageProblem(name, exc))
                continue
            if name == "network_alert":
                alert_id = str(payload.get("alert_id", ""))
                network_version = resolve(item, "jaringan.versi")
                # one network is reported by many cases: key the id on the alert and its own version, so
                # the 14 cases that name the same network version publish it once
                key, ver = (
                    (alert_id, str(network_version)) if network_version is not None else (case_id, version)
                )
                event_id, subject = case_event_id(key, ver, name), alert_id
            else:
                event_id, subject = case_event_id(case_id, version, name), case_id
            planned.append(
                PlannedMessage(
                    message=name,
                    event_type=self.event_types[name],
                    payload=payload,
                    recipients=recipients,
                    event_id=event_id,
                    subject=subject,
                )
            )
        return planned

    def _recipients(self, name: str, item: Mapping[str, Any]) -> tuple[str, ...]:
        result: list[str] = []
        for entry in self.recipients.get(name, ()):
            if entry not in _PLACEHOLDERS:
                parties: Sequence[Any] = [entry]
            elif entry == "$referred":
                referred = resolve(item, "rujukan.kepada")
                # no referral (a plan on its own): no one to add here; sealed content without any recipient
                # is then refused by publish (seal.no-recipients) and quarantined
                parties = (
                    []
                    if referred in (None, "")
                    else [self.tables.lookup("pihak", referred, "rujukan.kepada")]
                )
            elif entry == "$copied":
                copied = resolve(item, "rujukan.tembusan") or []
                if not isinstance(copied, list):
                    raise MappingError("rujukan.tembusan", "expected a list")
                parties = [self.tables.lookup("pihak", code, "rujukan.tembusan") for code in copied]
            else:
                escort = resolve(item, "pemulangan.pendamping")
                parties = (
                    []
                    if escort in (None, "")
                    else [self.tables.lookup("pihak", escort, "pemulangan.pendamping")]
                )
            for party in parties:
                if isinstance(party, str) and party and party not in result:
                    result.append(party)
        return tuple(result)

    # ---- outbound ------------------------------------------------------------------------------------
    def update_body(self, accepted: Accepted) -> dict[str, Any]:
        """The native update for an accepted event; ``MappingError`` if the type has no update mapping."""
        event = accepted.event
        message = self.updates.get(event.type)
        if message is None:
            raise MappingError("type", f"no Kemlu update mapping for {event.type}")
        context = {"event": {"id": event.id, "source": event.source, "type": event.type, "time": event.time}}
        return message.apply(accepted.payload(), self.tables, context)


class MessageProblem(Exception):
    """A case item's message ``message`` cannot be mapped; ``error`` names the native field."""

    def __init__(self, message: str, error: MappingError) -> None:
        super().__init__(f"{message}: {error.detail}")
        self.message = message
        self.error = error
