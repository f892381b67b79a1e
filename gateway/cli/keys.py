"""``gateway keys ...``: a party's key pairs: private halves in 0600 files, public ones for the registry."""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.cli._common import passphrase
from gateway.contract.keys import (
    ALG_ED25519,
    SIGNATURE_ALGORITHMS,
    PublicKey,
    SealingKey,
    SigningKey,
    write_private_pem,
)

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="key management").add_subparsers(required=True, metavar="ACTION")
    new = keys.add_parser("new", help="create a signing and a sealing key for a party")
    new.add_argument("--party", required=True)
    new.add_argument("--out", default="keys", help="directory for the private key files (mode 0600)")
    new.add_argument("--alg", default=ALG_ED25519, choices=sorted(SIGNATURE_ALGORITHMS))
    new.add_argument("--valid-days", type=int, default=365)
    new.add_argument("--passphrase-file", help="encrypt the private keys with the passphrase in this file")
    new.set_defaults(handler=_keys_new)


def _keys_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = passphrase(args)
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(days=args.valid_days)
    signing = SigningKey.generate(args.alg)
    sealing = SealingKey.generate()
    entries = []
    for use, private_pem, public in (
        ("sig", signing.to_pem(secret), signing.public_key),
        ("seal", sealing.to_pem(secret), sealing.public_key),
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
