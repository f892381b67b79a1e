"""The notary: logs every record of every exchange and dead-letter topic and signs C2SP checkpoints.

Why a separate role: auditors must be able to prove what was exchanged without trusting any gateway's
operator, so one process that can read every topic but open nothing (no sealing key) appends one leaf per
Kafka record (:mod:`gateway.audit.leaf`) to an RFC 6962 tile log (:class:`~gateway.audit.tiles.TileLog`) and
publishes signed checkpoints that other agencies cosign (:mod:`gateway.audit.cosigner`).

Guarantees and how they are kept:

* **No gap, no duplicate, across crashes.** The notary has no consumer group and commits no offsets: its
  position in each (topic, partition) is *derived from the log* — the next offset is one past the highest
  offset any leaf of that partition records. An append is one atomic batch (``TileLog.append``); the
  derived positions are kept in ``index.sqlite`` next to the tiles, which is updated *after* each append
  and brought up to the log's size from the entries themselves at start (so it can lag, be deleted or be
  corrupt: it is rebuilt, never trusted over the log). Records at offsets below a partition's position are
  dropped as re-deliveries. A SIGKILL at any instant therefore resumes exactly after the last committed
  batch.
* **Every topic, including future ones.** Topics are discovered every ``refresh_seconds`` by listing the
  cluster's topics and matching ``topic_pattern`` (default :data:`NOTARISED_TOPICS`), which covers every
  party's case/alert topics of every schema major and every dead-letter topic, including those created
  later. Partitions are assigned manually (not ``subscribe(pattern=...)``: a group-less pattern
  subscription re-assigns everything on each metadata change and resets positions, while manual assignment
  plus ``seek`` keeps the position exactly where the log says it is). The topics the registry and schemas
  predict (:func:`gateway.contract.policy.exchange_topics`) are logged when missing, never probed: on Tansu a
  metadata request naming a topic creates it.
* **Never two inconsistent checkpoints.** The last signed checkpoint is kept durably (``checkpoint`` and
  ``checkpoints/<size>`` in the log directory, written before it is published anywhere). Before signing a
  new one the notary proves, from its own log, that the new tree extends it (an RFC 6962 consistency proof,
  verified); on start it checks the log still reproduces it. If either fails it refuses to sign, logs
  ``notary.refused`` and answers 503 on ``/healthz`` (``checkpoint.inconsistent``): someone changed the log
  under it, and signing would publish a fork.
* **Deterministic verdicts.** Each leaf's verdict comes from :func:`~gateway.audit.leaf.leaf_for_record`,
  a pure function of the record, the registry and the schemas, so ``gateway audit verify`` recomputes every
  leaf byte for byte. The registry file is re-read when it changes.

A checkpoint is signed every ``checkpoint.entries`` new entries or ``checkpoint.interval_seconds``, whichever
comes first (and at shutdown), published to Kafka (``xchg.notary.checkpoints.v1``, value = the note bytes,
key = the origin; again with every cosignature attached) and served over HTTP (checkpoints, consistency
proofs, receipts, cosignatures, health and the tiles themselves: :mod:`._http`).

``gateway notary run --config FILE`` runs it; :class:`Notary` is the in-process API (tests, the demo).

Modules, by job: :mod:`.config` (:class:`NotaryConfig`, read with :class:`gateway.settings.Table`),
:mod:`.checkpoints` (:class:`CheckpointStore`, the signed checkpoints on disk), :mod:`._index` (the derived
SQLite index), :mod:`.service` (:class:`Notary`: consume, append, sign, publish) and :mod:`._http` (the HTTP
endpoints). File names and formats in the log directory: :mod:`gateway.audit.layout`.
"""

from __future__ import annotations

from gateway.audit.notary.checkpoints import CheckpointStore
from gateway.audit.notary.config import NotaryConfig
from gateway.audit.notary.service import Notary

__all__ = ["CheckpointStore", "Notary", "NotaryConfig"]
