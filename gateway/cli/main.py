"""The ``gateway`` command line. The only place that reads the environment or the terminal.

Exit codes: 0 success (``verify``: accepted), 1 rejected / check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import structlog

from gateway.contract.keys import (
    ALG_ED25519,
    SIGNATURE_ALGORITHMS,
    PublicKey,
    SealingKey,
    SigningKey,
    write_private_pem,
)
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.sign import EventSigner, build_event
from gateway.contract.strictjson import parse_json
from gateway.contract.verify import Accepted, EventVerifier
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig, env_overrides
from gateway.runtime.gateway import Gateway
from gateway.runtime.logs import configure_logging
from gateway.runtime.signals import stop_on_signals
from gateway.sandbox.broker import EmbeddedBroker
from gateway.settings import read_passphrase

__all__ = ["main"]

_log = structlog.get_logger(__name__)

ENV_REGISTRY = "XCHG_REGISTRY"
ENV_SCHEMAS = "XCHG_SCHEMAS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except GatewayError as exc:
        print(f"error: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 2


# ---- keys ---------------------------------------------------------------------------------------------
def _keys_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = _passphrase(args)
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(days=args.valid_days)
    signing = SigningKey.generate(args.alg)
    sealing = SealingKey.generate()
    entries = []
    for use, private_pem, public in (
        ("sig", signing.to_pem(passphrase), signing.public_key),
        ("seal", sealing.to_pem(passphrase), sealing.public_key),
    ):
        kid = f"{args.party}-{use}-{now:%Y%m%d}-{hashlib.sha256(public.raw).hexdigest()[:8]}"
        write_private_pem(out / f"{kid}.pem", private_pem)
        entries.append(_registry_entry(kid, use, public, now, until))
        print(f"wrote {out / (kid + '.pem')} (mode 0600)", file=sys.stderr)
    print(f"# public registry entries for party {args.party!r}: add under its [[parties]] table")
    print("\n".join(entries), end="")
    return 0


def _registry_entry(kid: str, use: str, public: PublicKey, since: datetime, until: datetime) -> str:
    return (
        "[[parties.keys]]\n"
        f'kid = "{kid}"\n'
        f'use = "{use}"\n'
        f'alg = "{public.alg}"\n'
        f'public_key = "{base64.b64encode(public.raw).decode("ascii")}"\n'
        f"valid_from = {since:%Y-%m-%dT%H:%M:%SZ}\n"
        f"valid_until = {until:%Y-%m-%dT%H:%M:%SZ}\n\n"
    )


# ---- sign / verify ------------------------------------------------------------------------------------
def _sign(args: argparse.Namespace) -> int:
    registry = _registry(args)
    passphrase = _passphrase(args)
    key = SigningKey.load(Path(args.key), passphrase)
    kid = args.kid or _kid_for(registry, args.party, key.public_key)
    data = parse_json(_read_input(args.data))
    if not isinstance(data, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "the payload must be a JSON object")
    event = build_event(
        signer=EventSigner(party=args.party, kid=kid, key=key),
        registry=registry,
        schemas=_schemas(args),
        event_type=args.type,
        data=data,
        recipients=args.recipient,
        subject=args.subject,
        dataschema=args.dataschema,
    )
    sys.stdout.buffer.write(event.to_structured() + b"\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    registry = _registry(args)
    passphrase = _passphrase(args)
    sealing = {}
    for path in args.seal_key:
        key = SealingKey.load(Path(path), passphrase)
        sealing[_kid_for(registry, args.party, key.public_key)] = key
    verifier = EventVerifier(
        registry=registry, schemas=_schemas(args), party=args.party, sealing_keys=sealing
    )
    verdict = verifier.verify_structured(_read_input(args.event))
    if isinstance(verdict, Accepted):
        event = verdict.event
        opened = "yes" if verdict.unsealed is not None else "no"
        print(
            f"ACCEPTED id={event.id} source={event.source} type={event.type} "
            f"dataschema={event.dataschema} kid={verdict.kid} unsealed={opened}"
        )
        if args.show_payload:
            sys.stdout.buffer.write(_pretty(verdict.payload()))
        return 0
    print(f"REJECTED {verdict.reason} {verdict.detail}")
    return 1


# ---- schemas ------------------------------------------------------------------------------------------
def _schemas_list(args: argparse.Namespace) -> int:
    for schema in _schemas(args).schemas():
        sealed = ",".join(sorted(set(schema.sealed_fields.values()))) or "-"
        print(f"{schema.id}  type={schema.type}  class={schema.classification}  sealed={sealed}")
    return 0


def _schemas_check(args: argparse.Namespace) -> int:
    store = _schemas(args)
    problems = store.check()
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{len(store.schemas())} schemas checked, {len(problems)} problems")
    return 1 if problems else 0


# ---- run / broker -------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level, json_output=True if args.log_json else None)
    config = GatewayConfig.load(Path(args.config), env_overrides(os.environ))
    asyncio.run(_run_gateway(config))
    return 0


async def _run_gateway(config: GatewayConfig) -> None:
    broker: EmbeddedBroker | None = None
    kafka = config.kafka
    if kafka.embedded:
        broker = EmbeddedBroker(log_path=config.data_dir / "embedded-broker.log")
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await broker.start()
        kafka = kafka.for_embedded(broker.bootstrap_servers)
        _log.info("embedded broker started", bootstrap_servers=broker.bootstrap_servers)
    gateway = Gateway(config, kafka=kafka)
    try:
        await gateway.start()
        print(f"gateway {config.party} running; ops http://{config.ops.host}:{gateway.ops_port}/readyz",
              file=sys.stderr, flush=True)  # fmt: skip
        await gateway.run_until_signalled()
    finally:
        if broker is not None:
            await broker.stop()


def _demo(args: argparse.Namespace) -> int:
    # The scenario composes the agency adapters and their simulators: application code, imported here only.
    from adapters.scenario import run_scenario  # noqa: PLC0415

    configure_logging(level=args.log_level, json_output=True, stream=_demo_log(args.log_file))
    asyncio.run(run_scenario(directory=Path(args.dir) if args.dir else None, once=args.once))
    return 0


def _demo_log(name: str) -> TextIO:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")


def _broker(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level)
    asyncio.run(_run_broker(args.host, args.port))
    return 0


async def _run_broker(host: str, port: int | None) -> None:
    async with stop_on_signals() as stop, EmbeddedBroker(host=host, port=port) as broker:
        print(
            f"embedded Kafka-protocol broker (Tansu) on {broker.bootstrap_servers}; Ctrl-C stops it",
            flush=True,
        )
        await stop.wait()


# ---- helpers ------------------------------------------------------------------------------------------
def _registry(args: argparse.Namespace) -> Registry:
    path = args.registry or os.environ.get(ENV_REGISTRY)
    if not path:
        raise GatewayError(Reason.CONFIG_INVALID, f"--registry or ${ENV_REGISTRY} is required")
    return Registry.load(Path(path))


def _schemas(args: argparse.Namespace) -> SchemaStore:
    root = args.schemas or os.environ.get(ENV_SCHEMAS)
    return SchemaStore.load(Path(root) if root else default_schema_root())


def _kid_for(registry: Registry, party_id: str | None, public: PublicKey) -> str:
    """Find the registry kid of a private key we hold (by its public half) so users need not type kids."""
    party = registry.party(party_id or "")
    if party is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"--party {party_id!r} is not in the registry")
    for key in party.keys:
        if key.public_key.raw == public.raw and key.public_key.alg == public.alg:
            return key.kid
    raise GatewayError(Reason.KEYFILE_INVALID, f"the key file's public key is not registered for {party.id}")


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {name}: {exc.strerror}") from exc


def _passphrase(args: argparse.Namespace) -> bytes | None:
    return read_passphrase(Path(args.passphrase_file) if args.passphrase_file else None, "--passphrase-file")


def _pretty(value: object) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Inter-agency exchange gateway: signed, sealed CloudEvents over Kafka."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, registry: bool = True) -> None:
        if registry:
            p.add_argument("--registry", help=f"party registry TOML (default ${ENV_REGISTRY})")
        p.add_argument("--schemas", help=f"schema directory (default ${ENV_SCHEMAS} or the bundled schemas/)")

    keys = sub.add_parser("keys", help="key management").add_subparsers(required=True, metavar="ACTION")
    new = keys.add_parser("new", help="create a signing and a sealing key for a party")
    new.add_argument("--party", required=True)
    new.add_argument("--out", default="keys", help="directory for the private key files (mode 0600)")
    new.add_argument("--alg", default=ALG_ED25519, choices=sorted(SIGNATURE_ALGORITHMS))
    new.add_argument("--valid-days", type=int, default=365)
    new.add_argument("--passphrase-file", help="encrypt the private keys with the passphrase in this file")
    new.set_defaults(handler=_keys_new)

    sign = sub.add_parser("sign", help="payload JSON -> signed structured CloudEvent on stdout")
    common(sign)
    sign.add_argument("--party", required=True, help="producing party (the event source)")
    sign.add_argument("--key", required=True, help="private signing key file (PEM)")
    sign.add_argument("--kid", help="key id (default: looked up in the registry by public key)")
    sign.add_argument("--passphrase-file")
    sign.add_argument("--type", required=True, help="e.g. id.trafficking.case.referral")
    sign.add_argument("--subject", help="case or alert id; must equal the payload's partition key")
    sign.add_argument("--dataschema", help="exact schema id (default: newest version for the type)")
    sign.add_argument("--recipient", action="append", default=[], help="party to seal sensitive fields for")
    sign.add_argument("data", nargs="?", default="-", help="payload JSON file (default stdin)")
    sign.set_defaults(handler=_sign)

    verify = sub.add_parser(
        "verify",
        help="verify a structured CloudEvent; exit 0 only if accepted",
        description="Verify a structured CloudEvent and print one verdict line; exit 0 only if accepted, "
        "1 if rejected, 2 on a usage or configuration error.",
    )
    common(verify)
    verify.add_argument("--party", help="verify as this party (needed to open sealed fields)")
    verify.add_argument("--seal-key", action="append", default=[], help="our private sealing key file(s)")
    verify.add_argument("--passphrase-file")
    verify.add_argument("--show-payload", action="store_true", help="print the verified payload")
    verify.add_argument("event", nargs="?", default="-", help="event JSON file (default stdin)")
    verify.set_defaults(handler=_verify)

    _add_runtime_commands(sub)
    _add_deploy_commands(sub)
    _add_audit_commands(sub)

    schemas = sub.add_parser("schemas", help="message schemas").add_subparsers(
        required=True, metavar="ACTION"
    )
    listing = schemas.add_parser("list", help="list schema versions")
    common(listing, registry=False)
    listing.set_defaults(handler=_schemas_list)
    check = schemas.add_parser("check", help="meta-schema, examples and minor-version compatibility")
    common(check, registry=False)
    check.set_defaults(handler=_schemas_check)
    return parser


def _add_runtime_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run one party's gateway until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="gateway TOML configuration (see docs/CONFIGURATION.md)")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true", help="JSON logs even on a terminal")
    run.set_defaults(handler=_run)

    demo = sub.add_parser("demo", help="the three-agency scenario on an embedded broker")
    demo.add_argument(
        "--once", action="store_true", help="exit after the summary instead of serving /metrics"
    )
    demo.add_argument("--dir", help="keep the generated deployment here (default: a temporary folder)")
    demo.add_argument("--log-file", default="var/demo.log", help="JSON logs go here, not to the terminal")
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(handler=_demo)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker alone")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--log-level", default="info")
    broker.set_defaults(handler=_broker)


# ---- audit --------------------------------------------------------------------------------------------
def _add_audit_commands(sub: Any) -> None:
    """``gateway notary run`` and ``gateway audit keygen|verify|prove|check-receipt|cosign|export-records``
    (docs/AUDIT.md). The registry and schemas are found as for every other command (options, then env)."""
    from gateway.cli.audit import add_commands  # noqa: PLC0415 - audit-only code stays out of start-up

    add_commands(sub, registry=_registry, schemas=_schemas)


# ---- deploy -------------------------------------------------------------------------------------------
def _add_deploy_commands(sub: Any) -> None:
    """``gateway deploy render``: Kafka topics, users and LITERAL ACLs derived from the registry."""
    from gateway.deploy.kafka import DEFAULT_RETENTION_MS, STRIMZI_API_VERSIONS  # noqa: PLC0415 - deploy-only

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
    render.add_argument("--no-notary", action="store_true", help="leave out the audit notary's user")
    render.add_argument("--notary-user", default="xchg-notary")
    render.add_argument("--notary-group", default="xchg.notary")
    render.add_argument("--notary-checkpoint-topic", default="xchg.notary.checkpoints.v1")
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
    from gateway.deploy import kafka as deploy  # noqa: PLC0415 - only this command needs it

    registry = _registry(args)
    retention = -1 if args.retention_days == -1 else args.retention_days * 86_400_000
    notary = deploy.NotarySpec(
        username=args.notary_user, group=args.notary_group, checkpoint_topic=args.notary_checkpoint_topic
    )
    rendered = deploy.render(
        registry,
        _schemas(args),
        partitions=args.partitions,
        replication=args.replication,
        min_insync=args.min_insync,
        retention_ms=retention,
        notary=notary,
        with_notary=not args.no_notary,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "acls.json": deploy.to_manifest(rendered),
        "kafka-init.sh": deploy.to_shell_script(rendered),
        "strimzi-topics-users.yaml": deploy.to_strimzi(
            rendered,
            cluster=args.strimzi_cluster,
            namespace=args.strimzi_namespace,
            api_version=args.strimzi_api_version,
        ),
    }
    if args.k8s_gateways:
        defaults = deploy.K8sGatewayOptions()
        options = deploy.K8sGatewayOptions(
            namespace=args.k8s_namespace,
            image=args.image or defaults.image,
            kafka_cluster=args.strimzi_cluster,
            kafka_namespace=args.strimzi_namespace or args.k8s_namespace,
            topic_partitions=rendered.partitions,
            topic_replication=rendered.replication,
        )
        for party in sorted(registry.parties):
            files[f"k8s-gateways/{party}.yaml"] = deploy.gateway_manifests(registry, party, options)
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
        acls = [a for a in own if roles.get(a.resource_name) in ("case", "alert")]
        writes = {a.resource_name for a in acls if a.operation == "Write"}
        reads = {a.resource_name for a in acls if a.operation == "Read"}
        print(
            f"  {user.principal}: writes {len(writes)} and reads {len(reads)} exchange topic(s), "
            f"consumer group {user.group or '-'}"
        )
    for party, covered in deploy.prefix_conflicts(registry).items():
        print(
            f"  note: a PREFIXED ACL on xchg.{party}. would also cover {', '.join(covered)}: "
            "that is why every ACL is LITERAL"
        )
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
