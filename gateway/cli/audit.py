"""``gateway audit ...`` and ``gateway notary run``: the command-line side of the audit log.

Registered by :mod:`gateway.cli.main`; the registry and schemas are found as for every other command
(:mod:`gateway.cli._common`).

Exit codes as everywhere: 0 success (``verify``/``check-receipt``: verified), 1 a finding or a failed
verification, 2 usage or configuration error (``GatewayError`` raised to ``main``).

About 620 lines: the options and handlers of the ten commands of the group (keygen, verify, report, prove,
check-receipt, cosign, export-records, notary run); what they do lives in :mod:`gateway.audit`
(``auditor``, ``html_report``, ``receipts``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.progress import Progress
from gateway.cli._common import load_registry, load_schemas
from gateway.errors import GatewayError, Reason
from gateway.runtime.signals import stop_on_signals
from gateway.settings import read_passphrase

__all__ = ["add_commands"]

Loader = Callable[[argparse.Namespace], Any]


def add_commands(sub: Any) -> None:
    """Add the ``notary`` and ``audit`` command groups to the ``gateway`` parser's subcommands."""

    def with_loaders(handler: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: handler(args, load_registry, load_schemas)

    notary = sub.add_parser("notary", help="the audit notary").add_subparsers(required=True, metavar="ACTION")
    run = notary.add_parser(
        "run",
        help="log every exchange and dead-letter record; sign checkpoints (until SIGTERM/SIGINT)",
        description="Consume every exchange and dead-letter topic, append one leaf per record to the tile "
        "log and publish signed checkpoints (Kafka and HTTP). See docs/AUDIT.md section 11.",
    )
    run.add_argument("--config", required=True, help="notary TOML configuration")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true", help="JSON logs even on a terminal")
    run.set_defaults(handler=_notary_run)

    audit = sub.add_parser("audit", help="audit log: keys, verification, receipts, cosigning")
    actions = audit.add_subparsers(required=True, metavar="ACTION")
    _add_keygen(actions)
    _add_verify(actions, with_loaders(_verify))
    actions.choices["report"].set_defaults(handler=with_loaders(_report))
    _add_receipts(actions)
    _add_services(actions)


def _add_keygen(actions: Any) -> None:
    keygen = actions.add_parser("keygen", help="an Ed25519 key for the notary or a cosigner, and its vkey")
    who = keygen.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--notary", metavar="DEPLOYMENT", help="notary key named id.trafficking.xchg/notary/<it>"
    )
    who.add_argument("--cosigner", metavar="NAME", help="cosigner key name, e.g. kemensos.cosigner")
    keygen.add_argument("--out", required=True, help="private key file (PKCS#8 PEM, 0600); vkey next to it")
    keygen.add_argument("--passphrase-file", help="encrypt the private key with the passphrase in this file")
    keygen.set_defaults(handler=_keygen)


def _add_verify(actions: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    verify = actions.add_parser(
        "verify",
        help="replay the log against its signed checkpoints and the Kafka records; exit 0 only if clean",
        description="Recompute every leaf and root, check every signed checkpoint, re-verify every record "
        "and cross-check records and leaves. Prints a summary; --json writes the full report. Exit 0 when "
        "there is no finding, 1 otherwise, 2 on a usage or configuration error.",
    )
    _add_audit_inputs(verify)
    verify.add_argument("--json", help="write the JSON report here ('-' for stdout)")
    verify.set_defaults(handler=handler)

    report = actions.add_parser(
        "report",
        help="the auditor's report: self-contained HTML (and PDF) in Bahasa Indonesia or English",
        description="Run the audit as 'verify' does (same options), or take a kept JSON report "
        "(--from-json), and write a self-contained HTML report an auditor can read: the verdict in plain "
        "words, what was checked against which keys and checkpoints, each finding explained, per-party "
        "counts. Exit 0 when the audit found nothing, 1 otherwise (the report is written either way), 2 on "
        "a usage error.",
    )
    report.add_argument("--from-json", metavar="REPORT", help="render this JSON report instead of auditing")
    _add_audit_inputs(report, required=False)
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--pdf", help="also write a PDF of it here (needs the 'pdf' extra: WeasyPrint)")
    report.add_argument(
        "--lang", choices=("id", "en"), default="en", help="id: Bahasa Indonesia; en: English"
    )
    report.add_argument(
        "--timezone", default="UTC", help="IANA time zone of the times shown, e.g. Asia/Jakarta (default UTC)"
    )
    report.add_argument("--json", help="also write the JSON report here")
    report.set_defaults(handler=handler)


def _add_audit_inputs(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """What an audit reads and trusts (``verify`` and ``report``)."""
    parser.add_argument("--log", required=required, help="the notary's log directory (or a copy of it)")
    parser.add_argument(
        "--vkey", action="append", required=required, help="notary vkey (or a file holding it)"
    )
    parser.add_argument(
        "--registry-anchor",
        help="the registry's trust anchor: re-verify each record against the registry version in force at "
        "its position in the log (the versions are read from xchg.registry.v1 or the records dump)",
    )
    parser.add_argument(
        "--registry", help="one registry for every record instead (logs without registry versions)"
    )
    parser.add_argument("--schemas", help="schema directory (default: bundled)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bootstrap-servers", help="read the records (and published checkpoints) from Kafka")
    source.add_argument("--records", help="a records dump (gateway audit export-records) instead of Kafka")
    parser.add_argument("--kafka-config", help="TOML file with a [kafka] table (TLS, SASL) for the broker")
    parser.add_argument("--checkpoint", action="append", default=[], help="more signed checkpoints to check")
    parser.add_argument("--cosigner", action="append", default=[], help="trusted cosigner vkey (or file)")
    parser.add_argument("--quorum", type=int, default=0, help="cosignatures required (k of the --cosigner)")
    parser.add_argument(
        "--allow-unsigned",
        type=_count,
        default=0,
        metavar="N",
        help="tolerate up to N entries after the newest signed checkpoint (a notary between checkpoints)",
    )
    parser.add_argument("--tolerate-lag", action="store_true", help="records after the log's end are pending")
    parser.add_argument(
        "--topic-pattern", default=None, help="exchange topics to read (default: the notary's)"
    )
    parser.add_argument("--checkpoint-topic", default=None, help="default xchg.notary.checkpoints.v1")
    parser.add_argument(
        "--fetch-idle-ms", type=int, default=1000, help="an empty fetch this long ends reading"
    )
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help="processes re-verifying records (default: one per CPU; 1: all in this process)",
    )


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, not {value!r}")
    return count


def _worker_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return count


def _default_workers() -> int:
    """The CPUs this process may run on (what Python 3.13's ``os.process_cpu_count()`` returns)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no CPU affinity on this platform
        return os.cpu_count() or 1


def _add_receipts(actions: Any) -> None:
    prove = actions.add_parser(
        "prove",
        help="c2sp.org/tlog-proof@v1 receipts: for an event, or for every event of a case",
        description="EVENT_ID: the receipt of that event's first leaf against the latest checkpoint. "
        "--case CASE_ID: the auditor's records (--records or the broker) name the case's events (the "
        "record key is the case id); each gets the receipt of its leaf, written with a manifest "
        "(case.json) to the --out folder. Exit 1 when an event is missing from the signed log.",
    )
    prove.add_argument("event_id", metavar="EVENT_ID", nargs="?")
    prove.add_argument("--case", metavar="CASE_ID", help="every event of this case (needs the records)")
    where = prove.add_mutually_exclusive_group(required=True)
    where.add_argument("--log", help="the notary's log directory (uses its latest checkpoint)")
    where.add_argument("--notary", help="the notary's URL (GET /proof/<event id>)")
    prove.add_argument("--source", help="only the event from this party (ids are unique per source)")
    prove.add_argument("--out", help="EVENT_ID: the receipt file (default stdout); --case: a folder")
    prove.add_argument(
        "--delivery",
        action="store_true",
        help="EVENT_ID with --log and --out FOLDER: also prove the recipients' signed delivery receipts "
        "(publication.tlog-proof and delivery.<party>.<outcome>.tlog-proof)",
    )
    records = prove.add_mutually_exclusive_group()
    records.add_argument("--records", help="--case: a records dump (gateway audit export-records)")
    records.add_argument("--bootstrap-servers", help="--case: read the records from Kafka")
    prove.add_argument("--kafka-config", help="TOML file with a [kafka] table (TLS, SASL) for the broker")
    prove.add_argument("--topic-pattern", default=None)
    prove.add_argument("--fetch-idle-ms", type=int, default=1000)
    prove.add_argument(
        "--vkey", action="append", default=[], help="--case: verify the checkpoint and every receipt"
    )
    prove.set_defaults(handler=_prove)

    check = actions.add_parser(
        "check-receipt", help="verify a receipt offline against the notary's key (and cosigners)"
    )
    check.add_argument("receipt", metavar="RECEIPT")
    check.add_argument("--vkey", action="append", required=True, help="notary vkey (or a file holding it)")
    check.add_argument("--cosigner", action="append", default=[], help="trusted cosigner vkey (or file)")
    check.add_argument("--quorum", type=int, default=0)
    check.add_argument("--data", help="the event's data bytes (a Kafka record value): must match the leaf")
    check.set_defaults(handler=_check_receipt)


def _add_services(actions: Any) -> None:
    cosign = actions.add_parser("cosign", help="cosign the notary's checkpoints (until SIGTERM/SIGINT)")
    cosign.add_argument("--config", required=True, help="cosigner TOML configuration")
    cosign.add_argument("--once", action="store_true", help="poll once and exit (0 cosigned or current)")
    cosign.add_argument("--log-level", default="info")
    cosign.set_defaults(handler=_cosign)

    export = actions.add_parser(
        "export-records", help="dump every exchange record (JSON Lines) for an offline audit"
    )
    export.add_argument("--out", required=True, help="records dump file (as sensitive as the topics)")
    export.add_argument("--bootstrap-servers")
    export.add_argument("--kafka-config", help="TOML file with a [kafka] table (TLS, SASL)")
    export.add_argument("--topic-pattern", default=None)
    export.add_argument("--fetch-idle-ms", type=int, default=1000)
    export.set_defaults(handler=_export)


# ---- notary / cosigner processes --------------------------------------------------------------------------
def _notary_run(args: argparse.Namespace) -> int:
    from gateway.audit.notary import Notary, NotaryConfig  # noqa: PLC0415 - Kafka only for this command
    from gateway.runtime.logs import configure_logging  # noqa: PLC0415 - same

    configure_logging(level=args.log_level, json_output=True if args.log_json else None)
    config = NotaryConfig.load(Path(args.config))

    async def main() -> None:
        notary = Notary(config)
        await notary.start()
        print(
            f"notary {notary.origin} running; http://{config.http_host}:{notary.http_port}/checkpoint; "
            f"vkey {notary.vkey}",
            file=sys.stderr,
            flush=True,
        )
        await notary.run_until_signalled()

    asyncio.run(main())
    return 0


def _cosign(args: argparse.Namespace) -> int:

    from gateway.audit.cosigner import CosignerConfig, CosignerService  # noqa: PLC0415 - same
    from gateway.runtime.logs import configure_logging  # noqa: PLC0415 - same

    configure_logging(level=args.log_level)
    config = CosignerConfig.load(Path(args.config))
    service = CosignerService.from_config(config)
    print(f"cosigner {service.cosigner.name} polling {service.url}", file=sys.stderr, flush=True)

    async def main() -> int:
        try:
            if args.once:
                outcome = await service.poll_once()
                print(
                    f"size {outcome.size}: "
                    + (
                        "cosigned"
                        if outcome.cosigned
                        else f"refused {outcome.reason}: {outcome.detail}"
                        if outcome.reason
                        else outcome.detail
                    )
                )
                return 1 if outcome.reason else 0
            async with stop_on_signals() as stop:
                await service.run(stop, config.interval_seconds)
            return 0
        finally:
            await service.close()

    return asyncio.run(main())


# ---- keys --------------------------------------------------------------------------------------------
def _keygen(args: argparse.Namespace) -> int:
    from gateway.audit.checkpoint import deployment_origin  # noqa: PLC0415 - keep CLI start-up light
    from gateway.audit.note import CosignatureV1Signer, Ed25519Signer  # noqa: PLC0415 - same
    from gateway.contract.keys import SigningKey, write_private_pem  # noqa: PLC0415 - same

    key = SigningKey.generate()
    passphrase = read_passphrase(
        Path(args.passphrase_file) if args.passphrase_file else None, "--passphrase-file"
    )
    if args.notary:
        vkey = str(Ed25519Signer(deployment_origin(args.notary), key).verifier().vkey())
    else:
        vkey = str(CosignatureV1Signer(args.cosigner, key).verifier().vkey())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_pem(out, key.to_pem(passphrase))
    out.with_suffix(".vkey").write_text(vkey + "\n", encoding="utf-8")
    print(f"wrote {out} (mode 0600) and {out.with_suffix('.vkey')}", file=sys.stderr)
    print(vkey)
    return 0


def _vkeys(values: list[str]) -> list[Any]:
    from gateway.audit.note import verifier_from_vkey  # noqa: PLC0415 - keep CLI start-up light

    verifiers = []
    for value in values:
        path = Path(value)
        text = path.read_text(encoding="utf-8").strip() if "+" not in value and path.is_file() else value
        verifiers.append(verifier_from_vkey(text))
    return verifiers


# ---- verify ------------------------------------------------------------------------------------------
def _kafka(args: argparse.Namespace) -> Any:
    from gateway.cli._common import kafka_from_args  # noqa: PLC0415 - keep CLI start-up light

    return kafka_from_args(args)


def _event_verifier(registry: Loader, schemas: Loader, args: argparse.Namespace) -> Any:
    """The records' verifier (registry and schemas, no sealing key). Module level, so that with
    ``--workers`` each worker process builds its own the same way from the same options (it pickles)."""
    from gateway.contract.verify import EventVerifier  # noqa: PLC0415 - keep CLI start-up light

    return EventVerifier(registry=registry(args), schemas=schemas(args))


def _audit(args: argparse.Namespace, registry: Loader, schemas: Loader) -> Any:
    """Run the audit the options describe; the :class:`~gateway.audit.report.AuditReport`."""
    from gateway.audit.auditor import Auditor  # noqa: PLC0415 - keep CLI start-up light

    kafka = _kafka(args)
    if args.records is None and kafka is None and args.kafka_config:
        raise GatewayError(Reason.CONFIG_INVALID, "--kafka-config names no kafka.bootstrap_servers")
    checking_records = args.records is not None or kafka is not None
    event_verifier = None
    workers = args.workers or _default_workers()
    factory = None
    anchor = None
    schemas_factory = None
    options = argparse.Namespace(registry=args.registry, schemas=args.schemas)
    if checking_records and args.registry_anchor:
        from gateway.contract.registry_chain import Anchor  # noqa: PLC0415 - keep CLI start-up light

        anchor = Anchor.load(Path(args.registry_anchor))
        schemas_factory = functools.partial(schemas, options)
    elif checking_records:
        event_verifier = _event_verifier(registry, schemas, options)
        factory = functools.partial(_event_verifier, registry, schemas, options)
    auditor = Auditor(
        Path(args.log),
        notary_keys=_vkeys(args.vkey),
        event_verifier=event_verifier,
        cosigners=_vkeys(args.cosigner),
        quorum=args.quorum,
        allow_unsigned=args.allow_unsigned,
        tolerate_lag=args.tolerate_lag,
        progress=sys.stderr,
        workers=workers,
        verifier_factory=factory,
        registry_anchor=anchor,
        schemas_factory=schemas_factory,
    )
    if checking_records:
        auditor.report.registry = _registry_file(args)
    try:
        auditor.load_stored_checkpoints()
        for name in args.checkpoint:
            auditor.add_checkpoint(Path(name).read_bytes(), name)
        if kafka is not None:
            from gateway.audit.kafka_records import audit_kafka  # noqa: PLC0415 - Kafka only when asked
            from gateway.contract.policy import CHECKPOINT_TOPIC, NOTARISED_TOPICS  # noqa: PLC0415 - same

            return asyncio.run(
                audit_kafka(
                    auditor,
                    kafka,
                    pattern=args.topic_pattern or NOTARISED_TOPICS,
                    checkpoint_topic=args.checkpoint_topic or CHECKPOINT_TOPIC,
                    idle_ms=args.fetch_idle_ms,
                )
            )
        auditor.scan_log()
        if args.records is not None:
            from gateway.audit.records import registry_records  # noqa: PLC0415 - this command only

            for record in registry_records(Path(args.records)):
                auditor.add_registry_record(record)
            auditor.check_records_dump(Path(args.records))
            auditor.finish_records(f"file {args.records}")
        return auditor.finish()
    finally:
        auditor.close()


def _registry_file(args: argparse.Namespace) -> dict[str, str] | None:
    """The registry anchor (or the one registry file) the records are re-verified with, and its SHA-256
    (for the report; with an anchor, the auditor adds the versions it found in the log)."""
    import hashlib  # noqa: PLC0415 - this command only

    from gateway.cli._common import ENV_REGISTRY  # noqa: PLC0415 - same

    name = args.registry_anchor or args.registry or os.environ.get(ENV_REGISTRY)
    if not name:
        return None
    try:
        digest = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    except OSError:
        return None
    return {"file": str(name), "sha256": digest}


def _write_json(report: Any, target: str) -> None:
    data = orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    if target == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(target).write_bytes(data)


def _verify(args: argparse.Namespace, registry: Loader, schemas: Loader) -> int:
    report = _audit(args, registry, schemas)
    print(report.summary())
    if args.json:
        _write_json(report, args.json)
    return 0 if report.ok else 1


def _report(args: argparse.Namespace, registry: Loader, schemas: Loader) -> int:
    import zoneinfo  # noqa: PLC0415 - this command only

    from gateway.audit.html_report import render_html, write_pdf  # noqa: PLC0415 - same

    try:
        zone = zoneinfo.ZoneInfo(args.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"--timezone {args.timezone!r}: unknown time zone") from exc
    if args.from_json:
        if args.log or args.vkey:
            raise GatewayError(Reason.CONFIG_INVALID, "--from-json renders a kept report: no --log or --vkey")
        try:
            document = orjson.loads(Path(args.from_json).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise GatewayError(Reason.CONFIG_INVALID, f"--from-json {args.from_json}: {exc}") from exc
    else:
        if not args.log or not args.vkey:
            raise GatewayError(Reason.CONFIG_INVALID, "give --log and --vkey (or --from-json REPORT)")
        report = _audit(args, registry, schemas)
        print(report.summary())
        if args.json:
            _write_json(report, args.json)
        document = report.to_json()
    page = render_html(document, lang=args.lang, zone=zone)
    Path(args.out).write_text(page, encoding="utf-8")
    if args.pdf:
        write_pdf(page, Path(args.pdf))
    print(f"wrote {args.out}" + (f" and {args.pdf}" if args.pdf else ""), file=sys.stderr)
    return 0 if document.get("ok") else 1


def _export(args: argparse.Namespace) -> int:
    from gateway.audit.kafka_records import read_kafka_records  # noqa: PLC0415 - Kafka only for this command
    from gateway.audit.records import RecordsDumpWriter  # noqa: PLC0415 - same
    from gateway.contract.policy import NOTARISED_TOPICS  # noqa: PLC0415 - same

    kafka = _kafka(args)
    if kafka is None:
        raise GatewayError(Reason.CONFIG_INVALID, "--bootstrap-servers or --kafka-config is required")
    progress = Progress(sys.stderr)

    def write(record: Any) -> None:
        dump.write(record)
        progress.update("exporting records", dump.count, None)

    with RecordsDumpWriter(Path(args.out)) as dump:
        try:
            asyncio.run(
                read_kafka_records(
                    kafka, write, pattern=args.topic_pattern or NOTARISED_TOPICS, idle_ms=args.fetch_idle_ms
                )
            )
        finally:
            progress.clear()
    print(
        f"wrote {dump.count} records to {dump.path} (mode 0600; it holds the records' data bytes)",
        file=sys.stderr,
    )
    return 0


# ---- receipts ----------------------------------------------------------------------------------------
def _prove(args: argparse.Namespace) -> int:
    from gateway.audit.receipts import event_receipt  # noqa: PLC0415 - keep CLI start-up light

    if (args.event_id is None) == (args.case is None):
        raise GatewayError(Reason.CONFIG_INVALID, "give an EVENT_ID or --case CASE_ID")
    if args.case is not None:
        return _prove_case(args)
    if args.delivery:
        return _prove_delivery(args)
    if args.notary:
        receipt = _fetch_receipt(args.notary, args.event_id, args.source)
    else:
        found = event_receipt(Path(args.log), args.event_id, args.source)
        if found is None:
            print(f"event {args.event_id} is not in the log's latest checkpoint", file=sys.stderr)
            return 1
        receipt = found
    if args.out:
        Path(args.out).write_bytes(receipt)
    else:
        sys.stdout.buffer.write(receipt)
    return 0


def _prove_delivery(args: argparse.Namespace) -> int:
    """Proof of publication and of every delivery receipt of one event, as files in ``--out``."""
    from gateway.audit.receipts import event_and_delivery_proofs  # noqa: PLC0415 - keep CLI start-up light

    if not args.log or not args.out:
        raise GatewayError(Reason.CONFIG_INVALID, "--delivery needs --log (a copy of the log), --out FOLDER")
    found = event_and_delivery_proofs(Path(args.log), args.event_id, args.source)
    if found is None:
        print(f"event {args.event_id} is not in the log's latest checkpoint", file=sys.stderr)
        return 1
    publication, leaf, deliveries = found
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "publication.tlog-proof").write_bytes(publication)
    where = f"{leaf.topic}:{leaf.partition}:{leaf.offset}"
    print(f"publication  {leaf.source}  {leaf.type}  id={leaf.id}  {where}")
    for proof in deliveries:
        name = f"delivery.{proof.party}.{proof.outcome}.tlog-proof"
        (out / name).write_bytes(proof.proof)
        print(f"receipt      {proof.party}  {proof.outcome}  id={proof.receipt_id}  {name}")
    if not deliveries:
        print("no delivery receipt for this event in the log", file=sys.stderr)
        return 1
    return 0


def _prove_case(args: argparse.Namespace) -> int:
    from gateway.audit.receipts import case_proofs  # noqa: PLC0415 - keep CLI start-up light

    if not args.log or not args.out:
        raise GatewayError(Reason.CONFIG_INVALID, "--case needs --log (a copy of the log) and --out FOLDER")
    records: list[Any] = []
    key = args.case.encode("utf-8")
    if args.records:
        from gateway.audit.records import read_records_dump  # noqa: PLC0415 - same

        records = [r for r in read_records_dump(Path(args.records)) if r.key == key]
    else:
        kafka = _kafka(args)
        if kafka is None:
            raise GatewayError(
                Reason.CONFIG_INVALID, "--case needs the records: --records FILE or --bootstrap-servers"
            )
        from gateway.audit.kafka_records import read_kafka_records  # noqa: PLC0415 - Kafka only when asked
        from gateway.contract.policy import NOTARISED_TOPICS  # noqa: PLC0415 - same

        def keep(record: Any) -> None:
            if record.key == key:
                records.append(record)

        asyncio.run(
            read_kafka_records(
                kafka, keep, pattern=args.topic_pattern or NOTARISED_TOPICS, idle_ms=args.fetch_idle_ms
            )
        )
    proofs = case_proofs(Path(args.log), records, args.case, verifiers=_vkeys(args.vkey))
    manifest = proofs.write(Path(args.out))
    print(f"case {args.case}: {len(proofs.events)} event(s) in the log of {proofs.origin} at size "
          f"{proofs.checkpoint_size}; receipts and {manifest.name} in {args.out}")  # fmt: skip
    for event in proofs.events:
        leaf = event.leaf
        status = "" if event.record_matches else "  RECORD DIFFERS FROM ITS LEAF"
        print(f"  {event.receipt_file}  leaf {event.index}  {leaf.source}  {leaf.type}  id={leaf.id}{status}")
    for missing in proofs.not_in_log:
        print(
            f"  NOT IN THE LOG  {missing['topic']}:{missing['partition']}:{missing['offset']}: "
            f"{missing['why']}"
        )
    if not proofs.events and not proofs.not_in_log:
        print(f"  the records hold no event of case {args.case}")
    return 0 if proofs.complete else 1


def _fetch_receipt(url: str, event_id: str, source: str | None) -> bytes:
    import urllib.error  # noqa: PLC0415 - this command only
    import urllib.parse  # noqa: PLC0415 - same
    import urllib.request  # noqa: PLC0415 - same

    target = f"{url.rstrip('/')}/proof/{urllib.parse.quote(event_id, safe='')}"
    if source:
        target += "?source=" + urllib.parse.quote(source, safe="")
    if not target.startswith(("http://", "https://")):
        raise GatewayError(Reason.CONFIG_INVALID, "--notary must be an http(s) URL")
    try:
        with urllib.request.urlopen(target, timeout=30) as response:  # noqa: S310 - scheme checked above
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise GatewayError(
            Reason.PROOF_OUT_OF_RANGE, f"notary answered {exc.code}: {exc.read()[:300]!r}"
        ) from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise GatewayError(Reason.BUS_UNAVAILABLE, f"notary unreachable: {exc}") from exc


def _check_receipt(args: argparse.Namespace) -> int:
    import hashlib  # noqa: PLC0415 - this command only

    from gateway.audit.leaf import Leaf  # noqa: PLC0415 - keep CLI start-up light
    from gateway.audit.proof import TlogProof, verify_proof  # noqa: PLC0415 - same

    data = Path(args.receipt).read_bytes()
    keys = _vkeys(args.vkey)
    try:
        parsed = TlogProof.parse(data)
        if parsed.extra is None:
            raise GatewayError(Reason.PROOF_MALFORMED, "the receipt carries no entry (no 'extra' line)")
        verified = verify_proof(
            data,
            origin=keys[0].name,
            log_verifiers=keys,
            entry=parsed.extra,
            cosigners=_vkeys(args.cosigner),
            quorum=args.quorum,
        )
        leaf = Leaf.decode(parsed.extra)
        if args.data is not None:
            digest = hashlib.sha256(Path(args.data).read_bytes()).hexdigest()
            if digest != leaf.data_sha256:
                raise GatewayError(Reason.LEAF_RECORD_MISMATCH, "the data bytes are not the logged ones")
    except GatewayError as exc:
        print(f"FAIL {exc.reason}: {exc.detail}")
        return 1
    cosigners = ", ".join(name for name, _ in verified.cosignatures) or "none required"
    verdict = "accepted" if leaf.verdict == "accepted" else f"rejected {leaf.reason}"
    print(
        f"OK leaf {verified.index} of {verified.checkpoint.origin} at size {verified.checkpoint.size} "
        f"(cosigned by: {cosigners})"
    )
    print(f"  event id={leaf.id} source={leaf.source} type={leaf.type} time={leaf.time}")
    print(
        f"  record {leaf.topic}:{leaf.partition}:{leaf.offset} timestamp={leaf.timestamp} "
        f"data sha256={leaf.data_sha256} notary verdict: {verdict}"
    )
    return 0
