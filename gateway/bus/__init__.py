"""Moving events between the outbox, Kafka, the inbox and the sinks, at least once and never silently lost.

:mod:`.kafka` (connection settings: TLS, SASL/SCRAM), :mod:`.admin` (topic provisioning), :mod:`.database`
(SQLite, one thread per file), :mod:`.outbox` and :mod:`.publisher` (accepted = on disk, then sent in order),
:mod:`.subscriber` and :mod:`.inbox` (verify, de-duplicate, deliver, dead-letter, then commit),
:mod:`.delivery` (the sink interface and retry policy), :mod:`.metrics` (what all of them count).
"""
