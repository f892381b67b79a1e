"""The verification pipeline: bytes (+ headers) in, :class:`Accepted` or :class:`Rejected` out. No I/O.

Checks run in a fixed order and the first failure decides the reason code (``docs/REASON_CODES.md``):

1. size limit; 2. strict JSON parse; 3. CloudEvents attributes (profile in :mod:`gateway.contract.envelope`);
4. signature present and well-formed, ``signedextattrs`` valid; 5. key known and owned by the event's
``source``, a signing key; 6. DSSE signature valid, verification material recomputed and equal;
7. event time not older than ``max_event_age`` (``time.out-of-range``), key valid at the event time (not
before ``valid_from``, not at/after ``valid_until`` or ``revoked_at``), event time not ahead by more than
``max_clock_skew`` (``ce.time-in-future``); 8. source permitted to publish the type; 9. schema of the
exact version named, matching the type; the record read from the topic the source publishes that type to
(Kafka); classification and partition key as the schema says; wire form valid; payload fields marked
``x-party: source`` equal to the source; a signed ``formulacells`` equal to the formula cells of the clear
data (:mod:`gateway.contract.formulas`); every sealed recipient known and entitled to the topic; 10. our
sealed entry opened (if addressed to us) and the full payload valid against the logical schema;
11. a referral's lawful basis (:mod:`gateway.contract.lawful`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from gateway.contract.dsse import (
    PAYLOAD_TYPE,
    DsseEnvelope,
    check_signed_extensions,
    verification_material,
)
from gateway.contract.envelope import DEFAULT_LIMITS, Envelope, Limits
from gateway.contract.formulas import FORMULA_EXTENSION, flag_value, formula_pointers
from gateway.contract.instants import DEFAULT_WINDOW, parse_instant
from gateway.contract.keys import SealingKey
from gateway.contract.lawful import check_lawful_basis
from gateway.contract.policy import SIGNED_EXTENSIONS, event_topic, may_publish
from gateway.contract.registry import KeyEntry, Registry
from gateway.contract.schemas import MessageSchema, SchemaStore
from gateway.contract.seal import EventBinding, open_sealed
from gateway.errors import GatewayError, Reason, Rejected

__all__ = ["Accepted", "EventVerifier", "Rejected", "Verdict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A verified event. ``event`` keeps only signed extensions; ``unsealed`` is what was sealed for us."""

    event: Envelope
    schema: MessageSchema
    kid: str
    data: Mapping[str, Any]
    """The wire data (clear fields and, if present, the ``sealed`` block)."""
    unsealed: Mapping[str, Any] | None = None

    @property
    def formula_cells(self) -> list[str]:
        """JSON Pointers of the spreadsheet-formula values we can see (clear and unsealed), whether or not
        the producer flagged them (:mod:`gateway.contract.formulas`)."""
        return formula_pointers(self.payload())

    def payload(self) -> dict[str, Any]:
        """The logical payload as far as we may see it: clear fields plus what was sealed for us."""
        merged = {k: v for k, v in self.data.items() if k != "sealed"}
        if self.unsealed:
            merged.update(self.unsealed)
        return merged


Verdict = Accepted | Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class EventVerifier:
    """Verification policy for one party. Construct once; call ``verify_*`` per record."""

    registry: Registry
    schemas: SchemaStore
    party: str | None = None
    """Who we are: sealed entries addressed to this party are opened with ``sealing_keys``."""
    sealing_keys: Mapping[str, SealingKey] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = DEFAULT_LIMITS
    max_clock_skew: timedelta = DEFAULT_WINDOW.max_skew
    """How far the event ``time`` may be ahead of ``now`` (``ce.time-in-future`` beyond)."""
    max_event_age: timedelta = DEFAULT_WINDOW.max_age
    """How far the event ``time`` may be behind ``now`` (``time.out-of-range`` beyond)."""

    def verify_structured(self, raw: bytes, *, now: datetime | None = None) -> Verdict:
        try:
            envelope = Envelope.from_structured(raw, limits=self.limits)
        except GatewayError as exc:
            return exc.rejected()
        return self.verify_envelope(envelope, now=now)

    def verify_kafka(
        self,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
        key: bytes | None,
        *,
        now: datetime | None = None,
        topic: str | None = None,
    ) -> Verdict:
        """Verify a Kafka record. With ``topic`` (the topic it was read from), the event must also belong
        there: its ``source`` owns the topic, and the topic is the one its type and major version map to
        (``authz.topic-mismatch`` otherwise: a party cannot inject events into another party's topic)."""
        try:
            envelope, data = Envelope.parse_kafka(value, headers, key, limits=self.limits)
        except GatewayError as exc:
            return exc.rejected()
        try:  # verify_envelope, reusing the data value parse_kafka already made
            return self._verify(envelope, now or datetime.now(UTC), data, topic)
        except GatewayError as exc:
            return exc.rejected()

    def verify_envelope(self, envelope: Envelope, *, now: datetime | None = None) -> Verdict:
        try:
            return self._verify(envelope, now or datetime.now(UTC))
        except GatewayError as exc:
            return exc.rejected()

    # ---- the checks, in order (``data``: the data value if the caller already parsed it) -------------
    def _verify(
        self, envelope: Envelope, now: datetime, data: Any = None, topic: str | None = None
    ) -> Accepted:
        key, signed_ext = self._check_signature(envelope)
        self._check_time(envelope, key, now)

        party = self.registry.party(envelope.source)
        if party is None:  # unreachable while keys are owned by registered parties; kept as a guard
            raise GatewayError(Reason.AUTHZ_UNKNOWN_SOURCE, f"{envelope.source!r} is not a registered party")
        if not may_publish(party, envelope.type):
            raise GatewayError(
                Reason.AUTHZ_TYPE_NOT_PERMITTED, f"{envelope.source} may not publish {envelope.type}"
            )

        schema = self.schemas.get(envelope.dataschema)
        if schema.type != envelope.type:
            raise GatewayError(Reason.SCHEMA_TYPE_MISMATCH, f"{schema.id} does not describe {envelope.type}")
        if topic is not None and topic != event_topic(envelope.source, schema):
            raise GatewayError(
                Reason.AUTHZ_TOPIC_MISMATCH, f"an event of {envelope.source} arrived on another topic"
            )
        if schema.classification != envelope.dataclassification:
            raise GatewayError(
                Reason.SCHEMA_CLASSIFICATION, f"{envelope.type} must be {schema.classification}"
            )
        data = envelope.data_value() if data is None else data
        schema.validate_wire(data)
        if str(data[schema.partition_key_field]) != envelope.partitionkey:
            raise GatewayError(Reason.SCHEMA_PARTITIONKEY, "partitionkey differs from the payload")
        schema.check_parties(data, envelope.source)
        flagged = envelope.extensions.get(FORMULA_EXTENSION)
        if flagged is not None and flagged != flag_value(
            formula_pointers({k: v for k, v in data.items() if k != "sealed"})
        ):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{FORMULA_EXTENSION} differs from the data")

        unsealed = None
        if "sealed" in data:
            self._check_recipients(data["sealed"], envelope.source, schema)
            if self.party is not None:
                binding = EventBinding(envelope.id, envelope.source, envelope.type)
                unsealed = open_sealed(data["sealed"], binding, self.party, self.sealing_keys)
        if unsealed is not None:
            if not set(unsealed) <= set(schema.sealed_fields):  # a sealed copy must not override clear fields
                raise GatewayError(Reason.SEAL_MALFORMED, "sealed plaintext holds unsealed properties")
            schema.validate({**{k: v for k, v in data.items() if k != "sealed"}, **unsealed})
            schema.check_parties(unsealed, envelope.source)
        check_lawful_basis(envelope.type, {**data, **unsealed} if unsealed else data)
        return Accepted(
            event=envelope.only_extensions((*signed_ext, "signedextattrs", "dssematerial")),
            schema=schema,
            kid=key.kid,
            data=data,
            unsealed=unsealed,
        )

    def _check_signature(self, envelope: Envelope) -> tuple[KeyEntry, tuple[str, ...]]:
        """Steps 4-6: the DSSE signature by a signing key of ``source`` over exactly this event."""
        if not envelope.dssematerial:
            raise GatewayError(Reason.SIG_MISSING, "event is not signed (no dssematerial)")
        dsse = DsseEnvelope.from_b64(envelope.dssematerial)
        if dsse.payload_type != PAYLOAD_TYPE:
            raise GatewayError(Reason.SIG_PAYLOAD_TYPE, "DSSE payloadType is not the CloudEvents DSSE type")
        signed_ext = check_signed_extensions(envelope.signedextattrs)
        if not set(SIGNED_EXTENSIONS) <= set(signed_ext):
            raise GatewayError(
                Reason.SIG_EXTATTRS_INVALID, "partitionkey and dataclassification must be signed"
            )
        if len(dsse.payload) != 32:
            raise GatewayError(Reason.SIG_MALFORMED, "DSSE payload is not a 32-byte digest")

        missing = [name for name in signed_ext if name not in envelope.extensions]
        if missing:
            raise GatewayError(Reason.SIG_EXTATTRS_INVALID, f"signed extension {missing[0]!r} is absent")

        message = dsse.signed_message()
        candidates = self._signing_keys(dsse, envelope.source)
        key = next((k for k, sig in candidates if k.public_key.verify(sig, message)), None)
        if key is None:
            raise GatewayError(Reason.SIG_INVALID, f"signature by {candidates[0][0].kid} does not verify")
        if verification_material(envelope.attributes(), envelope.data, signed_ext) != dsse.payload:
            raise GatewayError(Reason.SIG_DIGEST_MISMATCH, "event differs from what was signed")
        return key, signed_ext

    def _check_time(self, envelope: Envelope, key: KeyEntry, now: datetime) -> None:
        """Step 7: the event time inside the window around ``now``, the key valid at that time."""
        event_time = parse_instant(envelope.time)  # representable: the envelope was checked
        if event_time < now - self.max_event_age:
            raise GatewayError(
                Reason.TIME_OUT_OF_RANGE,
                f"event time is more than {self.max_event_age.days} days before this gateway's clock",
            )
        problem = key.problem_at(event_time)
        if problem is not None:
            raise GatewayError(problem, f"key {key.kid} is not valid at the event time")
        if event_time > now + self.max_clock_skew:
            raise GatewayError(Reason.CE_TIME_IN_FUTURE, "event time is ahead of this gateway's clock")

    def _signing_keys(self, dsse: DsseEnvelope, source: str) -> list[tuple[KeyEntry, bytes]]:
        """Signatures whose keyid is a registered signing key of ``source`` (DSSE: filter by keyid)."""
        foreign: KeyEntry | None = None
        found: list[tuple[KeyEntry, bytes]] = []
        for signature in dsse.signatures:
            key = self.registry.key(signature.keyid)
            if key is None:
                continue
            if key.party != source:
                foreign = foreign or key
                continue
            if key.use != "sig":
                raise GatewayError(Reason.KEY_WRONG_USE, f"{key.kid} is not a signing key")
            found.append((key, signature.sig))
        if found:
            return found
        if foreign is not None:
            raise GatewayError(
                Reason.KEY_WRONG_PARTY,
                f"signed by {foreign.kid} of {foreign.party}, but source is {source!r}",
            )
        named = ", ".join(_printable(s.keyid) for s in dsse.signatures[:3])
        raise GatewayError(Reason.KEY_UNKNOWN, f"no signature by a key in the registry (keyid {named})")

    def _check_recipients(self, block: object, source: str, schema: MessageSchema) -> None:
        """Every sealed entry must name a registered party entitled to read the topic, with its seal key."""
        if not isinstance(block, dict) or not isinstance(block.get("recipients"), list):
            raise GatewayError(Reason.SEAL_MALFORMED, "sealed block has no recipients list")
        topic = event_topic(source, schema)
        parties = [e.get("party") if isinstance(e, dict) else None for e in block["recipients"]]
        if len(set(map(str, parties))) != len(parties):
            raise GatewayError(Reason.SEAL_MALFORMED, "sealed block addresses a party twice")
        for entry in block["recipients"]:
            party_id = entry.get("party") if isinstance(entry, dict) else None
            party = self.registry.party(party_id) if isinstance(party_id, str) else None
            key = self.registry.key(str(entry.get("kid"))) if isinstance(entry, dict) else None
            if party is None or key is None or key.party != party.id or key.use != "seal":
                raise GatewayError(
                    Reason.SEAL_UNKNOWN_RECIPIENT, "sealed for a party or key not in the registry"
                )
            if not party.may_read(topic):
                raise GatewayError(
                    Reason.SEAL_RECIPIENT_NOT_PERMITTED, f"sealed for {party.id}, who may not read {topic}"
                )


def _printable(keyid: str) -> str:
    """A DSSE keyid as a detail may show it: quoted, at most 64 characters, control characters escaped."""
    shown = repr(keyid[:64])
    return shown if len(keyid) <= 64 else shown + "..."
