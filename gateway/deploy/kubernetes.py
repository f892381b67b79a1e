"""One party's gateway on Kubernetes: the objects ``gateway deploy render --k8s-gateways`` writes.

:func:`gateway_manifests` renders them as multi-document YAML, one function below per Kubernetes object.
The Kafka side of a gateway -- its topics, its ``KafkaUser`` and that user's LITERAL ACLs -- is rendered by
:mod:`gateway.deploy.strimzi` from what :mod:`gateway.deploy.acls` derived; the names used here (the SCRAM
user, which is also the Strimzi user Secret) come from there.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import tomli_w

from gateway.contract.registry import Registry
from gateway.deploy._notation import DNS_LABEL, DNS_SUBDOMAIN, yaml_documents
from gateway.deploy.acls import SCRAM_MECHANISM, username_for
from gateway.errors import GatewayError, Reason

__all__ = ["K8sGatewayOptions", "gateway_manifests", "k8s_slug"]

_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_GATEWAY_APP: Final = "xchg-gateway"
_OPS_PORT: Final = 8080


@dataclass(frozen=True, slots=True, kw_only=True)
class K8sGatewayOptions:
    """Deployment choices for :func:`gateway_manifests`; defaults match ``deploy/k8s/kafka.yaml``."""

    namespace: str = "xchg"
    image: str = "registry.example.org/xchg/xchg-gateway:0.1.0"
    kafka_cluster: str = "xchg"
    kafka_namespace: str = "xchg"
    kafka_port: int = 9093
    prometheus_namespace: str = "monitoring"
    prometheus_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"}
    )
    agency_cidrs: tuple[str, ...] = ("192.0.2.0/24",)  # TEST-NET-1 placeholder: the agency system's address
    agency_ports: tuple[int, ...] = (443,)
    storage: str = "2Gi"
    storage_class: str | None = None
    topic_partitions: int = 6
    topic_replication: int = 3


def k8s_slug(party: str) -> str:
    """A DNS-1123 label for Kubernetes names: the party id with ``.`` as ``-`` (``kemlu-kbri-kuching``).

    Raises ``GatewayError(CONFIG_INVALID)`` when the result is not a valid label (too long, trailing ``-``).
    Use :func:`gateway_manifests`, which also refuses two parties with the same slug.
    """
    slug = party.replace(".", "-")
    if not DNS_LABEL.match(slug) or len(slug) > 40:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"deploy: party id {party!r} does not give a Kubernetes name (<= 40 chars, no trailing '-')",
        )
    return slug


def gateway_manifests(registry: Registry, party: str, options: K8sGatewayOptions | None = None) -> str:
    """One party's gateway on Kubernetes as multi-document YAML (JSON documents).

    ConfigMap (``gateway.toml``), PersistentVolumeClaim (outbox and inbox survive restarts), Deployment
    (one replica, ``Recreate``: SQLite on a ReadWriteOnce volume has one writer), Service (metrics),
    NetworkPolicy (ingress only from Prometheus; egress only to the Kafka brokers, DNS and the agency
    system) and PodDisruptionBudget. Secrets are referenced, never rendered: ``xchg-gw-<slug>-keys``
    (``signing.pem``, ``sealing.pem``), the Strimzi user Secret ``xchg-<party>`` (``password``) and the
    cluster CA ``<cluster>-cluster-ca-cert`` (``ca.crt``); the registry is the ConfigMap ``xchg-registry``.
    """
    gateway = _gateway(registry, party, options or K8sGatewayOptions())
    config_text = _gateway_toml(gateway)
    checksum = hashlib.sha256(config_text.encode()).hexdigest()
    documents = [
        _config_map(gateway, config_text),
        _persistent_volume_claim(gateway),
        _deployment(gateway, checksum),
        _service(gateway),
        _network_policy(gateway),
        _pod_disruption_budget(gateway),
    ]
    return yaml_documents(documents, _header(gateway))


# ---- the names one gateway's objects share ---------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class _Gateway:
    """One party's gateway: its object name ``xchg-gw-<slug>``, its SCRAM user and the options."""

    party: str
    name: str
    username: str
    opts: K8sGatewayOptions

    @property
    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": _GATEWAY_APP, "app.kubernetes.io/instance": self.name}

    @property
    def labels(self) -> dict[str, str]:
        part = {"app.kubernetes.io/part-of": "xchg", "app.kubernetes.io/component": "gateway"}
        return {**self.selector, **part}

    @property
    def annotations(self) -> dict[str, str]:
        return {"xchg/party": self.party}

    def metadata(self, object_name: str) -> dict[str, Any]:
        return {
            "name": object_name,
            "namespace": self.opts.namespace,
            "labels": self.labels,
            "annotations": self.annotations,
        }


def _gateway(registry: Registry, party: str, opts: K8sGatewayOptions) -> _Gateway:
    """Check the party and the names it gives; refuse two parties whose names map to the same slug."""
    if registry.party(party) is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"deploy: party {party!r} is not in the registry")
    slugs: dict[str, str] = {}
    for other in sorted(registry.parties):
        slug = k8s_slug(other)
        if slug in slugs:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"deploy: parties {slugs[slug]!r} and {other!r} both map to Kubernetes name {slug!r}",
            )
        slugs[slug] = other
    username = username_for(party)
    if not DNS_SUBDOMAIN.match(username):
        raise GatewayError(Reason.CONFIG_INVALID, f"deploy: {username!r} is not a valid Secret name")
    return _Gateway(party=party, name=f"xchg-gw-{k8s_slug(party)}", username=username, opts=opts)


def _header(gateway: _Gateway) -> str:
    party, name, username, cluster = gateway.party, gateway.name, gateway.username, gateway.opts.kafka_cluster
    return (
        f"Generated by `gateway deploy render --k8s-gateways` for party {party!r}. Do not edit: re-render.\n"
        f"Needs: Secret {name}-keys (signing.pem, sealing.pem), ConfigMap xchg-registry (registry.json,\n"
        f"registry-anchor.toml: docs/REGISTRY.md), the Strimzi user Secret {username},\n"
        f"the cluster CA Secret {cluster}-cluster-ca-cert.\n"
        "docs/OPERATIONS.md explains each step."
    )


# ---- ConfigMap: gateway.toml -----------------------------------------------------------------------------
def _gateway_toml(gateway: _Gateway) -> str:
    """The gateway's configuration file; its digest is a pod annotation, so a change rolls the pod."""
    party, opts = gateway.party, gateway.opts
    config = {
        "party": party,
        "data_dir": "/var/lib/xchg",
        "registry": "/etc/xchg/registry/registry.json",
        "registry_anchor": "/etc/xchg/registry/registry-anchor.toml",
        "schemas": "/opt/xchg/schemas",
        "keys": {
            "signing_key": "/etc/xchg/secrets/signing.pem",
            "sealing_keys": ["/etc/xchg/secrets/sealing.pem"],
        },
        "kafka": {
            "bootstrap_servers": [
                f"{opts.kafka_cluster}-kafka-bootstrap.{opts.kafka_namespace}.svc:{opts.kafka_port}"
            ],
            "security_protocol": "SASL_SSL",
            "client_id": gateway.username,
            "tls": {"ca_file": "/etc/xchg/secrets/kafka-ca.crt"},
            "sasl": {
                "mechanism": SCRAM_MECHANISM,
                "username": gateway.username,
                "password_file": "/etc/xchg/secrets/kafka-password",
            },
        },
        "topics": {"partitions": opts.topic_partitions, "replication": opts.topic_replication},
        "ops": {"host": "0.0.0.0", "port": _OPS_PORT},  # noqa: S104 - pod network; NetworkPolicy limits it
    }
    return (
        f"# gateway configuration of {party}: docs/OPERATIONS.md. Add [[sources]] and [[sinks]] for the\n"
        "# agency system (the NetworkPolicy allows egress to agency_cidrs only).\n" + tomli_w.dumps(config)
    )


def _config_map(gateway: _Gateway, config_text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": gateway.metadata(f"{gateway.name}-config"),
        "data": {"gateway.toml": config_text},
    }


# ---- PersistentVolumeClaim: the outbox and inbox ---------------------------------------------------------
def _persistent_volume_claim(gateway: _Gateway) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": gateway.opts.storage}},
    }
    if gateway.opts.storage_class:
        spec["storageClassName"] = gateway.opts.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": gateway.metadata(f"{gateway.name}-state"),
        "spec": spec,
    }


# ---- Deployment: one locked-down pod ---------------------------------------------------------------------
def _deployment(gateway: _Gateway, config_sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": gateway.metadata(gateway.name),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": gateway.selector},
            "template": _pod_template(gateway, config_sha256),
        },
    }


def _pod_template(gateway: _Gateway, config_sha256: str) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": gateway.labels,
            "annotations": {**gateway.annotations, "xchg/config-sha256": config_sha256},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 45,  # shutdown.timeout_seconds (30) + margin
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [_container(gateway)],
            "volumes": _volumes(gateway),
        },
    }


def _container(gateway: _Gateway) -> dict[str, Any]:
    http = {"port": "ops"}
    return {
        "name": "gateway",
        "image": gateway.opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["run", "--config", "/etc/xchg/config/gateway.toml", "--log-json"],
        "ports": [{"name": "ops", "containerPort": _OPS_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "256Mi"},
        },
        "startupProbe": {"httpGet": {"path": "/healthz", **http}, "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 4,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/xchg/config", "readOnly": True},
            {"name": "registry", "mountPath": "/etc/xchg/registry", "readOnly": True},
            {"name": "secrets", "mountPath": "/etc/xchg/secrets", "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/xchg"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir: the root file system is read-only
        ],
    }


def _volumes(gateway: _Gateway) -> list[dict[str, Any]]:
    """Configuration, registry, the referenced Secrets (projected into one directory), state, ``/tmp``."""
    name = gateway.name
    return [
        {"name": "config", "configMap": {"name": f"{name}-config"}},
        {"name": "registry", "configMap": {"name": "xchg-registry"}},
        {
            "name": "secrets",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {
                        "secret": {
                            "name": f"{name}-keys",
                            "items": [
                                {"key": "signing.pem", "path": "signing.pem"},
                                {"key": "sealing.pem", "path": "sealing.pem"},
                            ],
                        }
                    },
                    {
                        "secret": {
                            "name": gateway.username,
                            "items": [{"key": "password", "path": "kafka-password"}],
                        }
                    },
                    {
                        "secret": {
                            "name": f"{gateway.opts.kafka_cluster}-cluster-ca-cert",
                            "items": [{"key": "ca.crt", "path": "kafka-ca.crt"}],
                        }
                    },
                ],
            },
        },
        {"name": "state", "persistentVolumeClaim": {"claimName": f"{name}-state"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


# ---- Service: metrics ------------------------------------------------------------------------------------
def _service(gateway: _Gateway) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": gateway.metadata(gateway.name),
        "spec": {
            "type": "ClusterIP",
            "selector": gateway.selector,
            "ports": [{"name": "metrics", "port": _OPS_PORT, "targetPort": "ops", "protocol": "TCP"}],
        },
    }


# ---- NetworkPolicy: in from Prometheus; out to Kafka, DNS and the agency system --------------------------
def _network_policy(gateway: _Gateway) -> dict[str, Any]:
    opts = gateway.opts
    for key, value in opts.prometheus_labels.items():
        if not _LABEL_VALUE.match(value) or not key:
            raise GatewayError(Reason.CONFIG_INVALID, f"deploy: bad Prometheus label {key}={value}")
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": _namespace(opts.kafka_namespace),
                    "podSelector": {
                        "matchLabels": {"strimzi.io/cluster": opts.kafka_cluster, "strimzi.io/kind": "Kafka"}
                    },
                }
            ],
            "ports": [{"protocol": "TCP", "port": opts.kafka_port}],
        },
        {
            "to": [
                {
                    "namespaceSelector": _namespace("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]
    if opts.agency_cidrs:
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in opts.agency_cidrs],
                "ports": [{"protocol": "TCP", "port": port} for port in opts.agency_ports],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": gateway.metadata(gateway.name),
        "spec": {
            "podSelector": {"matchLabels": gateway.selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": _namespace(opts.prometheus_namespace),
                            "podSelector": {"matchLabels": dict(opts.prometheus_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": _OPS_PORT}],
                }
            ],
            "egress": egress,
        },
    }


def _namespace(namespace: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


# ---- PodDisruptionBudget ---------------------------------------------------------------------------------
def _pod_disruption_budget(gateway: _Gateway) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": gateway.metadata(gateway.name),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": gateway.selector}},
    }
