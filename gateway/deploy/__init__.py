"""Production deployment files, derived from the party registry (``gateway deploy render``).

The registry says who may publish and read what; this package turns that into what a Kafka cluster and
Kubernetes need to enforce the same thing. One derivation, several notations:

* :mod:`gateway.deploy.acls` -- the derivation: every topic, one SCRAM user per party (and the notary) and
  their ACLs; why every ACL is LITERAL is stated there;
* :mod:`gateway.deploy.manifest` -- ``acls.json``, the derivation as JSON for review and diffing;
* :mod:`gateway.deploy.script` -- ``kafka-init.sh`` for Kafka's ``kafka-*.sh`` tools (its fixed part is the
  package file ``templates/kafka-init.sh``);
* :mod:`gateway.deploy.strimzi` -- ``strimzi-topics-users.yaml``: ``KafkaTopic`` and ``KafkaUser`` resources;
* :mod:`gateway.deploy.kubernetes` -- ``k8s-gateways/<party>.yaml``: one party's gateway on Kubernetes.

It renders text and talks to nothing: no broker, no cluster, no network library (checked by
``tests/unit/test_imports.py``). ``docs/OPERATIONS.md`` says how each file is applied.
"""
