"""``gateway keys ...``: a party's key pairs: private halves in 0600 files, public ones for the registry.

``keys new`` writes the private keys and ``<party>.keys.toml``, the public entries maintainers add with
``gateway registry add-key --party P --entries FILE``; ``keys rotate`` writes the next pair and a *key
request* (:mod:`gateway.contract.key_request`) signed with the party's current signing key, which
maintainers add with ``gateway registry add-key --request FILE`` (``docs/REGISTRY.md``)."""

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
from gateway.contract.registry import utc_text_of
from gateway.errors import GatewayError, Reason

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

    rotate = keys.add_parser("rotate", help="the next key pair and a key request signed with the current key")
    rotate.add_argument("--party", required=True)
    rotate.add_argument("--registry", required=True, help="the signed registry in force (registry.json)")
    rotate.add_argument("--current-key", required=True, help="the party's current signing key file")
    rotate.add_argument("--out", default="keys", help="directory for the new private keys and the request")
    rotate.add_argument("--alg", default=ALG_ED25519, choices=sorted(SIGNATURE_ALGORITHMS))
    rotate.add_argument("--valid-days", type=int, default=365)
    rotate.add_argument("--passphrase-file", help="passphrase of the current key and for the new ones")
    rotate.set_defaults(handler=_keys_rotate)


def _keys_new(args: argparse.Namespace) -> int:
    out, entries, _ = _new_pairs(args)
    text = "\n".join(entries)
    entry_file = out / f"{args.party}.keys.toml"
    entry_file.write_text(f"# public registry entries for party {args.party!r}\n{text}", "utf-8")
    print(f"wrote {entry_file}: gateway registry add-key --party {args.party} --entries {entry_file}",
          file=sys.stderr)  # fmt: skip
    print(f"# public registry entries for party {args.party!r}")
    print(text, end="")
    return 0


def _new_pairs(args: argparse.Namespace) -> tuple[Path, list[str], list[dict[str, Any]]]:
    """A signing and a sealing key pair for ``args.party``: private files written, public entries returned
    as TOML text and as registry JSON values."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = passphrase(args)
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(days=args.valid_days)
    signing = SigningKey.generate(args.alg)
    sealing = SealingKey.generate()
    entries, values = [], []
    for use, private_pem, public in (
        ("sig", signing.to_pem(secret), signing.public_key),
        ("seal", sealing.to_pem(secret), sealing.public_key),
    ):
        kid = f"{args.party}-{use}-{now:%Y%m%d}-{hashlib.sha256(public.raw).hexdigest()[:8]}"
        write_private_pem(out / f"{kid}.pem", private_pem)
        entries.append(_registry_entry(kid, use, public, now, until))
        values.append(
            {"kid": kid, "use": use, "alg": public.alg, "public_key": base64.b64encode(public.raw).decode(),
             "valid_from": utc_text_of(now), "valid_until": utc_text_of(until)}
        )  # fmt: skip
        print(f"wrote {out / (kid + '.pem')} (mode 0600)", file=sys.stderr)
    return out, entries, values


def _keys_rotate(args: argparse.Namespace) -> int:
    from gateway.cli._common import kid_for, read_registry  # noqa: PLC0415 - this command only
    from gateway.contract.key_request import KeyRequest  # noqa: PLC0415 - same

    registry = read_registry(Path(args.registry))
    current = SigningKey.load(Path(args.current_key), passphrase(args))
    kid = kid_for(registry, args.party, current.public_key)
    entry = registry.key(kid)
    problem = entry.problem_at(datetime.now(UTC)) if entry is not None else None
    if problem is not None:
        raise GatewayError(
            Reason.KEYFILE_INVALID, f"{kid} is {problem}: ask the maintainers to sign the request instead"
        )
    out, _, values = _new_pairs(args)
    request = KeyRequest.create(args.party, values, datetime.now(UTC)).signed(kid, current)
    path = out / f"{args.party}.key-request.json"
    path.write_bytes(request.to_bytes())
    print(f"wrote {path}, signed with {kid}: the maintainers add it with "
          f"gateway registry add-key REGISTRY --request {path.name} --out NEXT")  # fmt: skip
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
