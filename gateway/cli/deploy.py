"""``gateway deploy render``: Kafka topics, SCRAM users and literal ACLs derived from the registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli._common import ENV_REGISTRY, ENV_SCHEMAS, load_registry, load_schemas
from gateway.contract.policy import CHECKPOINT_TOPIC
from gateway.errors import GatewayError, Reason

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """``gateway deploy render``: Kafka topics, users and LITERAL ACLs derived from the registry."""
    from gateway.deploy.acls import DEFAULT_RETENTION_MS  # noqa: PLC0415 - deploy-only
    from gateway.deploy.strimzi import STRIMZI_API_VERSIONS  # noqa: PLC0415 - deploy-only

    actions = sub.add_parser("deploy", help="production deployment files").add_subparsers(
        required=True, metavar="ACTION"
    )
    render = actions.add_parser(
        "render",
        help="topics, SCRAM users and ACLs from the registry: acls.json, kafka-init.sh, Strimzi YAML",
        description="Derive every exchange topic, one SCRAM-SHA-512 user per party (plus the notary) and "
        "LITERAL ACLs from the registry and the schema majors, and write acls.json (review), kafka-init.sh "
        "(kafka-*.sh tools) and strimzi-topics-users.yaml (Strimzi). See docs/OPERATIONS.md.",
    )
    render.add_argument("--registry", help=f"party registry TOML (default ${ENV_REGISTRY})")
    render.add_argument("--schemas", help=f"schema directory (default ${ENV_SCHEMAS} or bundled schemas/)")
    render.add_argument("--out", required=True, help="output directory (created if missing)")
    render.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    render.add_argument("--replication", type=int, default=3, help="replication factor (default 3)")
    render.add_argument("--min-insync", type=int, default=2, help="min.insync.replicas (default 2)")
    render.add_argument(
        "--retention-days",
        type=int,
        default=DEFAULT_RETENTION_MS // 86_400_000,
        help="retention of exchange and dead-letter topics in days; -1 keeps forever (default 30, the "
        "inbox de-duplication window)",
    )
    render.add_argument(
        "--retention-days-for",
        action="append",
        default=[],
        metavar="KIND=DAYS",
        help="retention of one topic kind (case, alert, delivery, dlq) in days, overriding --retention-days; "
        "repeat per kind, e.g. --retention-days-for case=90",
    )
    render.add_argument("--no-notary", action="store_true", help="leave out the audit notary's user")
    render.add_argument("--notary-user", default="xchg-notary")
    render.add_argument("--notary-group", default="xchg.notary")
    render.add_argument("--notary-checkpoint-topic", default=CHECKPOINT_TOPIC)
    render.add_argument("--strimzi-cluster", default="xchg", help="Strimzi Kafka cluster name (default xchg)")
    render.add_argument("--strimzi-namespace", help="namespace written into the Strimzi resources")
    render.add_argument(
        "--strimzi-api-version",
        default=STRIMZI_API_VERSIONS[0],
        choices=STRIMZI_API_VERSIONS,
        help="kafka.strimzi.io/v1 for Strimzi >= 0.49 (required from 1.0); v1beta2 for older operators",
    )
    render.add_argument(
        "--k8s-gateways", action="store_true", help="also write k8s-gateways/<party>.yaml for every party"
    )
    render.add_argument("--k8s-namespace", default="xchg", help="namespace of the gateways (default xchg)")
    render.add_argument("--image", help="gateway container image for --k8s-gateways")
    render.set_defaults(handler=_deploy_render)


def _deploy_render(args: argparse.Namespace) -> int:
    from gateway.deploy.acls import NotarySpec, prefix_conflicts, render  # noqa: PLC0415 - deploy-only
    from gateway.deploy.kubernetes import K8sGatewayOptions, gateway_manifests  # noqa: PLC0415 - deploy-only
    from gateway.deploy.manifest import to_manifest  # noqa: PLC0415 - deploy-only
    from gateway.deploy.script import to_shell_script  # noqa: PLC0415 - deploy-only
    from gateway.deploy.strimzi import to_strimzi  # noqa: PLC0415 - deploy-only

    registry = load_registry(args)
    retention = _retention_ms(args.retention_days)
    by_kind: dict[str, int] = {}
    for item in args.retention_days_for:
        kind, equals, days = item.partition("=")
        if not equals or not kind or not days.strip().lstrip("-").isdigit():
            raise GatewayError(Reason.CONFIG_INVALID, f"--retention-days-for {item!r}: expected KIND=DAYS")
        by_kind[kind.strip()] = _retention_ms(int(days))
    notary = NotarySpec(
        username=args.notary_user, group=args.notary_group, checkpoint_topic=args.notary_checkpoint_topic
    )
    rendered = render(
        registry,
        load_schemas(args),
        partitions=args.partitions,
        replication=args.replication,
        min_insync=args.min_insync,
        retention_ms=retention,
        retention_ms_by_kind=by_kind,
        notary=notary,
        with_notary=not args.no_notary,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "acls.json": to_manifest(rendered),
        "kafka-init.sh": to_shell_script(rendered),
        "strimzi-topics-users.yaml": to_strimzi(
            rendered,
            cluster=args.strimzi_cluster,
            namespace=args.strimzi_namespace,
            api_version=args.strimzi_api_version,
        ),
    }
    if args.k8s_gateways:
        defaults = K8sGatewayOptions()
        options = K8sGatewayOptions(
            namespace=args.k8s_namespace,
            image=args.image or defaults.image,
            kafka_cluster=args.strimzi_cluster,
            kafka_namespace=args.strimzi_namespace or args.k8s_namespace,
            topic_partitions=rendered.partitions,
            topic_replication=rendered.replication,
        )
        for party in sorted(registry.parties):
            files[f"k8s-gateways/{party}.yaml"] = gateway_manifests(registry, party, options)
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
        print(f"wrote {path}", file=sys.stderr)

    print(
        f"{len(rendered.topics)} topics, {len(rendered.users)} users, {len(rendered.acls)} ACLs "
        f"(all LITERAL; partitions={rendered.partitions} replication={rendered.replication} "
        f"min.insync.replicas={rendered.min_insync})"
    )
    roles = {topic.name: topic.role for topic in rendered.topics}
    for user in rendered.users:
        own = rendered.acls_for(user.principal)
        acls = [a for a in own if roles.get(a.resource_name) in ("case", "alert", "delivery")]
        writes = {a.resource_name for a in acls if a.operation == "Write"}
        reads = {a.resource_name for a in acls if a.operation == "Read"}
        print(
            f"  {user.principal}: writes {len(writes)} and reads {len(reads)} exchange topic(s), "
            f"consumer group {user.group or '-'}"
        )
    for party, covered in prefix_conflicts(registry).items():
        print(
            f"  note: a PREFIXED ACL on xchg.{party}. would also cover {', '.join(covered)}: "
            "that is why every ACL is LITERAL"
        )
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _retention_ms(days: int) -> int:
    """Days as Kafka's ``retention.ms``; -1 (keep for ever) stays -1."""
    return -1 if days == -1 else days * 86_400_000
