"""The message contract: what an event is, who may send it, and how anyone checks it. Pure, no I/O.

Build an event with :func:`gateway.contract.sign.build_event`; accept one only through
:class:`gateway.contract.verify.EventVerifier`. Underneath: strict JSON and RFC 8785 bytes
(:mod:`.strictjson`, :mod:`.canonical`), the CloudEvents envelope (:mod:`.envelope`), Verifiable CloudEvents
with DSSE (:mod:`.dsse`), keys (:mod:`.keys`), HPKE-sealed fields (:mod:`.seal`), the party registry
(:mod:`.registry`), message schemas and their evolution rules (:mod:`.schemas`, :mod:`.evolution`), and the
exchange policy every role applies alike — topic names, publish permission, signed extensions
(:mod:`.policy`). Nothing here imports the bus, the runtime or a network library.
"""
