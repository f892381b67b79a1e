"""One exception root and the machine-readable reason codes every rejection carries.

A rejection is a value (:class:`Rejected`) so tests and the dead-letter path can assert on it; code that
cannot return a value raises :class:`GatewayError` carrying the same :class:`Reason`. Library exceptions
(``InvalidSignature``, ``jsonschema.ValidationError``, aiokafka errors, ``InvalidTag``) are converted at the
boundary where they occur and never escape a public function.

The codes are stable: they are written into DLQ headers, metrics labels and audit reports. Add new codes;
never rename one. ``docs/REASON_CODES.md`` lists them with the check that produces each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["GatewayError", "Reason", "Rejected"]


class Reason(enum.StrEnum):
    """Stable reason codes, in the order the verification pipeline applies its checks."""

    # limits
    SIZE_EXCEEDED = "size.exceeded"
    # parsing (strict JSON)
    PARSE_UTF8 = "parse.invalid-utf8"
    PARSE_JSON = "parse.invalid-json"
    PARSE_DUPLICATE_KEY = "parse.duplicate-key"
    PARSE_NON_FINITE = "parse.non-finite-number"
    PARSE_TOO_DEEP = "parse.too-deep"
    # CloudEvents envelope
    CE_MISSING_ATTRIBUTE = "ce.missing-attribute"
    CE_INVALID_ATTRIBUTE = "ce.invalid-attribute"
    CE_UNSUPPORTED_SPECVERSION = "ce.unsupported-specversion"
    CE_DATA_NOT_CANONICAL = "ce.data-not-canonical"
    CE_TIME_IN_FUTURE = "ce.time-in-future"
    # times (gateway/contract/instants.py): no UTC form, or outside the window around the receive time
    TIME_OUT_OF_RANGE = "time.out-of-range"
    # signature (Verifiable CloudEvents with DSSE)
    SIG_MISSING = "sig.missing"
    SIG_MALFORMED = "sig.malformed"
    SIG_PAYLOAD_TYPE = "sig.payload-type"
    SIG_EXTATTRS_INVALID = "sig.extattrs-invalid"
    SIG_INVALID = "sig.invalid"
    SIG_DIGEST_MISMATCH = "sig.digest-mismatch"
    # keys (party registry)
    KEY_UNKNOWN = "key.unknown"
    KEY_WRONG_PARTY = "key.wrong-party"
    KEY_WRONG_USE = "key.wrong-use"
    KEY_NOT_YET_VALID = "key.not-yet-valid"
    KEY_EXPIRED = "key.expired"
    KEY_REVOKED = "key.revoked"
    # authorisation
    AUTHZ_UNKNOWN_SOURCE = "authz.unknown-source"
    AUTHZ_TYPE_NOT_PERMITTED = "authz.type-not-permitted"
    AUTHZ_TOPIC_MISMATCH = "authz.topic-mismatch"
    AUTHZ_PARTY_MISMATCH = "authz.party-mismatch"
    # schema
    SCHEMA_UNKNOWN = "schema.unknown"
    SCHEMA_TYPE_MISMATCH = "schema.type-mismatch"
    SCHEMA_INVALID = "schema.invalid"
    SCHEMA_CLASSIFICATION = "schema.classification-mismatch"
    SCHEMA_PARTITIONKEY = "schema.partitionkey-mismatch"
    # sealed fields (HPKE)
    SEAL_MALFORMED = "seal.malformed"
    SEAL_OPEN_FAILED = "seal.open-failed"
    SEAL_NO_RECIPIENTS = "seal.no-recipients"
    SEAL_UNKNOWN_RECIPIENT = "seal.unknown-recipient"
    SEAL_RECIPIENT_NOT_PERMITTED = "seal.recipient-not-permitted"
    # delivery receipts at the sender (gateway/bus/receipts.py; docs/REASON_CODES.md)
    RECEIPT_UNKNOWN_EVENT = "receipt.unknown-event"
    RECEIPT_NOT_A_RECIPIENT = "receipt.not-a-recipient"
    RECEIPT_DIGEST_MISMATCH = "receipt.digest-mismatch"
    # privacy rules (UU 27/2022; docs/PRIVACY.md)
    PRIVACY_NO_LEGAL_BASIS = "privacy.no-legal-basis"
    PRIVACY_CONSENT_WITHDRAWN = "privacy.consent-withdrawn"
    # audit log (notes, checkpoints, proofs, cosignatures, tile storage)
    NOTE_MALFORMED = "note.malformed"
    NOTE_KEY_INVALID = "note.key-invalid"
    NOTE_SIGNATURE_INVALID = "note.signature-invalid"
    NOTE_UNVERIFIED = "note.unverified"
    CHECKPOINT_MALFORMED = "checkpoint.malformed"
    CHECKPOINT_ORIGIN_MISMATCH = "checkpoint.origin-mismatch"
    PROOF_MALFORMED = "proof.malformed"
    PROOF_INCLUSION_FAILED = "proof.inclusion-failed"
    PROOF_CONSISTENCY_FAILED = "proof.consistency-failed"
    PROOF_OUT_OF_RANGE = "proof.out-of-range"
    COSIGN_UNKNOWN_ORIGIN = "cosign.unknown-origin"
    COSIGN_SIZE_CONFLICT = "cosign.size-conflict"
    COSIGN_FORK = "cosign.fork"
    COSIGN_QUORUM_NOT_MET = "cosign.quorum-not-met"
    COSIGN_TIME_IN_FUTURE = "cosign.time-in-future"
    COSIGN_SIGNATURE_INVALID = "cosign.signature-invalid"
    TLOG_CORRUPT = "tlog.corrupt"
    TLOG_IO_FAILED = "tlog.io-failed"
    TLOG_LOCKED = "tlog.locked"
    # audit findings and notary refusals (gateway/audit/auditor.py, notary/; docs/AUDIT.md)
    LEAF_MALFORMED = "leaf.malformed"
    LEAF_DUPLICATE = "leaf.duplicate"
    LEAF_OUT_OF_ORDER = "leaf.out-of-order"
    LEAF_RECORD_MISSING = "leaf.record-missing"
    LEAF_RECORD_MISMATCH = "leaf.record-mismatch"
    LEAF_VERDICT_MISMATCH = "leaf.verdict-mismatch"
    RECORD_NOT_LOGGED = "record.not-logged"
    CHECKPOINT_ROOT_MISMATCH = "checkpoint.root-mismatch"
    CHECKPOINT_BEYOND_LOG = "checkpoint.beyond-log"
    CHECKPOINT_INCONSISTENT = "checkpoint.inconsistent"
    LOG_UNSIGNED_TAIL = "log.unsigned-tail"
    LOG_CHECKPOINT_MISSING = "log.checkpoint-missing"
    LOG_STRAY_FILE = "log.stray-file"
    LOG_BEYOND_TREE = "log.beyond-tree"
    LOG_LEFTOVER_MISMATCH = "log.leftover-mismatch"
    LOG_TILE_MISSING = "log.tile-missing"
    # configuration and local key material (raised, never a record rejection)
    CONFIG_INVALID = "config.invalid"
    REGISTRY_INVALID = "registry.invalid"
    KEYFILE_INVALID = "keyfile.invalid"
    # signed registry versions (gateway/contract/registry_chain.py; docs/REGISTRY.md): a refused version
    REGISTRY_FORMAT_UNKNOWN = "registry.format-unknown"
    REGISTRY_DUPLICATE_KEY = "registry.duplicate-key"
    REGISTRY_THRESHOLD_NOT_MET = "registry.threshold-not-met"
    REGISTRY_CHAIN_BROKEN = "registry.chain-broken"
    REGISTRY_ROLLBACK = "registry.rollback"
    REGISTRY_ANCHOR_MISMATCH = "registry.anchor-mismatch"
    REGISTRY_KEY_REQUEST_INVALID = "registry.key-request-invalid"
    # the registry in force (readiness, verdicts): past its expiry (freeze), or none at all
    REGISTRY_EXPIRED = "registry.expired"
    REGISTRY_UNAVAILABLE = "registry.unavailable"
    # runtime (bus, sinks)
    BUS_UNAVAILABLE = "bus.unavailable"
    BUS_NOT_AUTHORIZED = "bus.not-authorized"
    STOPPING = "gateway.stopping"
    OUTBOX_FULL = "outbox.full"
    DUPLICATE = "dedup.duplicate"
    SINK_FAILED = "sink.failed"
    SINK_REFUSED = "sink.refused"
    INTERNAL_ERROR = "gateway.internal-error"
    OUTBOX_UNAVAILABLE = "outbox.unavailable"
    ALREADY_RUNNING = "gateway.already-running"
    # HTTP intake (gateway/runtime/http_intake.py): refusals of a request, never of a record
    AUTH_UNAUTHORIZED = "auth.unauthorized"
    HTTP_UNSUPPORTED_MEDIA_TYPE = "http.unsupported-media-type"
    HTTP_NOT_FOUND = "http.not-found"
    HTTP_METHOD_NOT_ALLOWED = "http.method-not-allowed"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record was not accepted. ``detail`` is for operators: it never contains personal data."""

    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class GatewayError(Exception):
    """Root of every exception this package raises on purpose."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def rejected(self) -> Rejected:
        return Rejected(self.reason, self.detail)
