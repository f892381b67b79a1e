"""Inter-agency exchange gateway for the protection of trafficking victims (Kemensos, Kemlu/KBRI, IOM).

The packages are the layers (docs/ARCHITECTURE.md); each imports only the ones listed before it
(``tests/unit/test_imports.py`` enforces this):

* :mod:`gateway.errors`, :mod:`gateway.settings` — the exception root and reason codes; reading configuration;
* :mod:`gateway.contract` — the message contract: envelope, schemas, registry, sealing, signing, verifying;
* :mod:`gateway.bus` — Kafka settings, outbox, inbox, publisher, subscriber, delivery to sinks;
* :mod:`gateway.runtime` — one party's gateway process: configuration, lifecycle, sources, sinks, operations;
* :mod:`gateway.audit` — the tamper-evident log: notary, cosigner, the offline auditor;
* :mod:`gateway.deploy` — topics, users and ACLs for Apache Kafka, Strimzi and Kubernetes files;
* :mod:`gateway.sandbox` — an embedded broker and generated deployments for trials, the demo and tests;
* :mod:`gateway.cli` — the ``gateway`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xchg-gateway")  # the one version source: pyproject.toml's [project] version
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
