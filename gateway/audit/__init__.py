"""The audit core: a tamper-evident record of what was exchanged, by whom and when, verifiable by anyone.

Auditors must not have to trust the operator of any gateway, so the notary keeps an RFC 6962 Merkle log with
one leaf per Kafka record and publishes signed checkpoints that other agencies cosign. Everything here is
pure (no Kafka) and follows published formats, so an auditor can check it with independent tools; the exact
formats and algorithms are in ``docs/AUDIT.md``.

* :mod:`.merkle` — RFC 6962 hashes, proofs, iterative verification, a constant-memory accumulator;
* :mod:`.layout` — where everything lives in a log directory, and the formats of its files (tiles, entry
  bundles, ``state``, checkpoints);
* :mod:`.tiles` — the durable log in the C2SP tlog-tiles layout, crash-safe batch appends;
* :mod:`.note` — C2SP signed notes, verifier keys, Ed25519 and cosignature/v1 signature types;
* :mod:`.checkpoint` — C2SP tlog-checkpoint bodies;
* :mod:`.witness` — C2SP tlog-cosignature: a witness that only cosigns consistent growth, k-of-n checking;
* :mod:`.proof` — c2sp.org/tlog-proof@v1 receipts, verifiable offline.

Built on them (imported on demand):

* :mod:`.leaf` — what the notary logs per Kafka record: digests, signature, position, verdict; no victim data;
* :mod:`.auditor` — ``gateway audit verify``: replay log, checkpoints and records, locate discrepancies,
  with :mod:`.report` (findings and the report format) and :mod:`.records` (records dumps); no Kafka, no
  HTTP: it runs on a copy of the log;
* :mod:`.kafka_records` — the same audit against a broker, and the records read from Kafka (aiokafka);
* :mod:`.notary` — the notary service: every exchange and dead-letter topic into the log, signed checkpoints;
* :mod:`.cosigner` — the cosigner service any party runs against the notary.
"""

from __future__ import annotations

from gateway.audit import checkpoint, layout, merkle, note, proof, tiles, witness

__all__ = ["checkpoint", "layout", "merkle", "note", "proof", "tiles", "witness"]
