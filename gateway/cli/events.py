"""``gateway sign`` and ``gateway verify``: the message contract by hand (verdicts: docs/REASON_CODES.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    add_contract_options,
    kid_for,
    load_registry,
    load_schemas,
    passphrase,
    pretty,
    read_input,
)
from gateway.contract.keys import SealingKey, SigningKey
from gateway.contract.sign import EventSigner, build_event
from gateway.contract.strictjson import parse_json
from gateway.contract.verify import Accepted, EventVerifier
from gateway.errors import GatewayError, Reason

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    sign = sub.add_parser("sign", help="payload JSON -> signed structured CloudEvent on stdout")
    add_contract_options(sign)
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
    add_contract_options(verify)
    verify.add_argument("--party", help="verify as this party (needed to open sealed fields)")
    verify.add_argument("--seal-key", action="append", default=[], help="our private sealing key file(s)")
    verify.add_argument("--passphrase-file")
    verify.add_argument("--show-payload", action="store_true", help="print the verified payload")
    verify.add_argument("event", nargs="?", default="-", help="event JSON file (default stdin)")
    verify.set_defaults(handler=_verify)


def _sign(args: argparse.Namespace) -> int:
    registry = load_registry(args)
    secret = passphrase(args)
    key = SigningKey.load(Path(args.key), secret)
    kid = args.kid or kid_for(registry, args.party, key.public_key)
    data = parse_json(read_input(args.data))
    if not isinstance(data, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, "the payload must be a JSON object")
    event = build_event(
        signer=EventSigner(party=args.party, kid=kid, key=key),
        registry=registry,
        schemas=load_schemas(args),
        event_type=args.type,
        data=data,
        recipients=args.recipient,
        subject=args.subject,
        dataschema=args.dataschema,
    )
    sys.stdout.buffer.write(event.to_structured() + b"\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    registry = load_registry(args)
    secret = passphrase(args)
    sealing = {}
    for path in args.seal_key:
        key = SealingKey.load(Path(path), secret)
        sealing[kid_for(registry, args.party, key.public_key)] = key
    verifier = EventVerifier(
        registry=registry, schemas=load_schemas(args), party=args.party, sealing_keys=sealing
    )
    verdict = verifier.verify_structured(read_input(args.event))
    if isinstance(verdict, Accepted):
        event = verdict.event
        opened = "yes" if verdict.unsealed is not None else "no"
        print(
            f"ACCEPTED id={event.id} source={event.source} type={event.type} "
            f"dataschema={event.dataschema} kid={verdict.kid} unsealed={opened}"
        )
        if args.show_payload:
            sys.stdout.buffer.write(pretty(verdict.payload()))
        return 0
    print(f"REJECTED {verdict.reason} {verdict.detail}")
    return 1
