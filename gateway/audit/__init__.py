"""The audit core: a tamper-evident record of what was exchanged, by whom and when, verifiable by anyone.

Auditors must not have to trust the operator of any gateway, so the notary keeps an RFC 6962 Merkle log with
one leaf per Kafka record and publishes signed checkpoints that other agencies cosign. Everything here is
pure (no Kafka) and follows published formats, so an auditor can check it with independent tools; the exact
formats and algorithms are in ``docs/AUDIT.md``.

* :mod:`.merkle` — RFC 6962 hashes, proofs, iterative verification, a constant-memory accumulator;
* :mod:`.tiles` — the durable log in the C2SP tlog-tiles layout, crash-safe batch appends;
* :mod:`.note` — C2SP signed notes, verifier keys, Ed25519 and cosignature/v1 signature types;
* :mod:`.checkpoint` — C2SP tlog-checkpoint bodies;
* :mod:`.witness` — C2SP tlog-cosignature: a witness that only cosigns consistent growth, k-of-n checking;
* :mod:`.proof` — c2sp.org/tlog-proof@v1 receipts, verifiable offline.

Built on them (imported on demand, they need Kafka and the verification pipeline):

* :mod:`.leaf` — what the notary logs per Kafka record: digests, signature, position, verdict; no victim data;
* :mod:`.notary` — the notary process: every exchange and dead-letter topic into the log, signed checkpoints;
* :mod:`.cosigner` — the cosigner service any party runs against the notary;
* :mod:`.replay` — ``gateway audit verify``: replay log, checkpoints and Kafka records, locate discrepancies.
"""

from __future__ import annotations

from gateway.audit import checkpoint, merkle, note, proof, tiles, witness

__all__ = ["checkpoint", "merkle", "note", "proof", "tiles", "witness"]
