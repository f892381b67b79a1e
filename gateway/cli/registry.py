"""``gateway registry ...``: the maintainers' lifecycle of the signed registry (``docs/REGISTRY.md``).

A change is a file that circulates: one maintainer edits (``add-party``, ``add-key``, ``revoke-key``,
``set-permissions``, ``set-maintainers``) — the first edit of a signed version starts the next one (serial
+ 1, ``previous`` = its digest), later edits change that unsigned draft in place — then signs it (``sign``:
one signature), passes the file to the next maintainer, who checks it (``show``, ``diff``, ``verify``) and
signs too; once a threshold signed, anyone publishes it (``publish``) on ``xchg.registry.v1``, or copies it
to air-gapped gateways' registry folders. ``keygen`` makes a maintainer's key, ``init`` version 1 from a
parties file (today's ``registry.toml``), ``anchor`` the trust anchor gateways are configured with.

Every edit is checked as a whole before it is written (:meth:`RegistryVersion.from_document`), so no
command can produce a version a gateway would refuse for its content; errors name the field. Nothing here
prints key material beyond public keys.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.cli._common import kafka_from_args, passphrase
from gateway.contract.keys import ALG_ED25519, SIGNATURE_ALGORITHMS, SigningKey, write_private_pem
from gateway.contract.registry import Registry, utc_text_of
from gateway.contract.registry_version import MaintainerKey, Maintainers, RegistryVersion
from gateway.errors import GatewayError, Reason
from gateway.settings import Table, load_toml

__all__ = ["add_commands", "entries_from_file", "maintainer_file_text", "read_version"]


def add_commands(sub: Any) -> None:  # noqa: PLR0915 - one parser per verb, read top to bottom
    group = sub.add_parser("registry", help="the signed registry: create, change, sign, verify, publish")
    verbs = group.add_subparsers(required=True, metavar="ACTION")

    keygen = verbs.add_parser("keygen", help="create a registry maintainer's key pair")
    keygen.add_argument("--name", required=True, help="who holds it (kemensos, kemlu, independent...)")
    keygen.add_argument("--out", default="maintainer-keys", help="directory for <kid>.pem and <kid>.pub.toml")
    keygen.add_argument("--alg", default=ALG_ED25519, choices=sorted(SIGNATURE_ALGORITHMS))
    keygen.add_argument("--passphrase-file", help="encrypt the private key with the passphrase in this file")
    keygen.set_defaults(handler=_keygen)

    init = verbs.add_parser("init", help="version 1 (unsigned draft) from a parties file and maintainer keys")
    init.add_argument("--parties", required=True, help="parties TOML (format xchg-registry/1)")
    init.add_argument("--maintainer", action="append", required=True, help="a <kid>.pub.toml (repeat)")
    init.add_argument("--threshold", type=int, required=True, help="signatures required (e.g. 2 of 3)")
    init.add_argument("--valid-days", type=int, default=90, help="days until the version is stale")
    init.add_argument("--out", required=True, help="the draft to write (registry.json)")
    init.set_defaults(handler=_init)

    show = verbs.add_parser("show", help="print a version: serial, times, digest, signers, parties, keys")
    show.add_argument("file")
    show.set_defaults(handler=_show)

    diff = verbs.add_parser("diff", help="what changed from version A to version B")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.set_defaults(handler=_diff)

    add_party = verbs.add_parser("add-party", help="add a party (no keys yet: add-key)")
    _edit_options(add_party)
    add_party.add_argument("--party", required=True, help="party id (e.g. bp2mi)")
    add_party.add_argument("--name", required=True, help="official name")
    add_party.add_argument("--name-en", required=True, help="English name")
    add_party.add_argument("--role", action="append", default=[], help="a role (repeat)")
    add_party.add_argument("--publish", action="append", default=[], help="event type pattern it may publish")
    add_party.add_argument("--read", action="append", default=[], help="topic pattern it may read")
    add_party.set_defaults(handler=_add_party)

    add_key = verbs.add_parser("add-key", help="add keys from an entry file (keys new) or a key request")
    _edit_options(add_key)
    given = add_key.add_mutually_exclusive_group(required=True)
    given.add_argument("--entries", help="the <party>.keys.toml that 'gateway keys new' wrote")
    given.add_argument("--request", help="the key request that 'gateway keys rotate' wrote")
    add_key.add_argument("--party", help="with --entries: the party the keys are for")
    add_key.set_defaults(handler=_add_key)

    revoke = verbs.add_parser("revoke-key", help="revoke a party key from a time on (key.revoked)")
    _edit_options(revoke)
    revoke.add_argument("--kid", required=True)
    revoke.add_argument("--at", required=True, help="RFC 3339 time: events timed at or after it are refused")
    revoke.add_argument("--expire", action="store_true", help="retire (valid_until) instead of revoking")
    revoke.set_defaults(handler=_revoke)

    permissions = verbs.add_parser("set-permissions", help="replace what a party may publish and read")
    _edit_options(permissions)
    permissions.add_argument("--party", required=True)
    permissions.add_argument("--publish", action="append", help="event type pattern (repeat; replaces all)")
    permissions.add_argument("--read", action="append", help="topic pattern (repeat; replaces all)")
    permissions.add_argument("--role", action="append", help="role (repeat; replaces all)")
    permissions.set_defaults(handler=_set_permissions)

    maintainers = verbs.add_parser("set-maintainers", help="replace maintainer keys and threshold")
    _edit_options(maintainers)
    maintainers.add_argument("--maintainer", action="append", required=True, help="a <kid>.pub.toml")
    maintainers.add_argument("--threshold", type=int, required=True)
    maintainers.set_defaults(handler=_set_maintainers)

    sign = verbs.add_parser("sign", help="add one maintainer's signature (in place unless --out)")
    sign.add_argument("file")
    sign.add_argument("--key", required=True, help="the maintainer's private key (<kid>.pem)")
    sign.add_argument("--passphrase-file")
    sign.add_argument("--out")
    sign.set_defaults(handler=_sign)

    verify = verbs.add_parser("verify", help="check versions in order from an anchor (chain, threshold)")
    verify.add_argument("files", nargs="+", help="versions in serial order; the last is the one checked")
    verify.add_argument("--anchor", required=True, help="registry anchor file")
    verify.set_defaults(handler=_verify)

    anchor = verbs.add_parser("anchor", help="write the trust anchor of a signed version (for configuration)")
    anchor.add_argument("file")
    anchor.add_argument("--out", required=True)
    anchor.add_argument("--digest-only", action="store_true", help="trust this exact version only")
    anchor.add_argument("--maintainers-only", action="store_true", help="trust its maintainers' threshold")
    anchor.set_defaults(handler=_anchor)

    publish = verbs.add_parser("publish", help="publish a signed version on xchg.registry.v1")
    publish.add_argument("file")
    publish.add_argument("--anchor", help="also check it against this anchor and the versions on the topic")
    publish.add_argument("--bootstrap-servers")
    publish.add_argument("--kafka-config", help="a TOML file with a [kafka] table (e.g. a gateway.toml)")
    publish.add_argument(
        "--replication", type=int, default=1, help="replication factor if it creates the topic"
    )
    publish.set_defaults(handler=_publish)


def _edit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the version to change (a signed one starts the next version)")
    parser.add_argument("--out", help="where to write the draft (default: FILE if it is a draft)")
    parser.add_argument("--valid-days", type=int, help="days until the new version is stale")


# ---- files -------------------------------------------------------------------------------------------
def read_version(path: Path) -> RegistryVersion:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc.strerror}") from exc
    return RegistryVersion.parse(raw)


def _write(path: Path, version: RegistryVersion) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(version.to_bytes())
    tmp.replace(path)


def maintainer_file_text(key: MaintainerKey) -> str:
    """A maintainer's public key file (``<kid>.pub.toml``), what ``init``/``set-maintainers`` read."""
    entry = key.to_json()
    return "".join(f'{name} = "{entry[name]}"\n' for name in ("kid", "name", "alg", "public_key"))


def _maintainers(files: list[str], threshold: int) -> Maintainers:
    entries = [dict(load_toml(Path(name), what="maintainer key")) for name in files]
    return Maintainers.from_table(
        Table({"threshold": threshold, "keys": entries}, where="maintainers", reason=Reason.CONFIG_INVALID)
    )


def entries_from_file(path: Path) -> list[dict[str, Any]]:
    """Key entries from a TOML file: ``[[parties.keys]]`` (what ``gateway keys new`` prints and writes) or
    ``[[keys]]``; times become the registry's RFC 3339 UTC text."""
    document = load_toml(path, what="key entry file")
    parties = document.get("parties")
    raw = parties.get("keys") if isinstance(parties, dict) else document.get("keys")
    if not isinstance(raw, list) or not raw or not all(isinstance(entry, dict) for entry in raw):
        raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, f"{path.name}: no [[parties.keys]] entries")
    return [{k: utc_text_of(v) if isinstance(v, datetime) else v for k, v in e.items()} for e in raw]


# ---- edits -------------------------------------------------------------------------------------------
def _edit(args: argparse.Namespace, change: Any) -> int:
    from gateway.contract.registry_changes import draft_from  # noqa: PLC0415 - keep CLI start-up light

    source = Path(args.file)
    base = read_version(source)
    if base.signatures and not args.out:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"{source} is signed: write the next version elsewhere with --out"
        )
    validity = timedelta(days=args.valid_days) if args.valid_days else None
    document = draft_from(base, now=datetime.now(UTC), validity=validity)
    change(document, base)
    draft = RegistryVersion.from_document(document)
    target = Path(args.out) if args.out else source
    _write(target, draft)
    print(f"wrote {target}: unsigned draft {draft.label()}; needs {draft.maintainers.threshold} signatures")
    from gateway.contract.registry_changes import diff  # noqa: PLC0415 - same

    for line in diff(base, draft):
        print(f"  {line}")
    return 0


def _add_party(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import add_party  # noqa: PLC0415 - keep CLI start-up light

    party = {
        "id": args.party,
        "name": args.name,
        "name_en": args.name_en,
        "roles": args.role,
        "publish": args.publish,
        "read": args.read,
        "keys": [],
    }
    return _edit(args, lambda document, _base: add_party(document, party))


def _add_key(args: argparse.Namespace) -> int:
    from gateway.contract.key_request import KeyRequest  # noqa: PLC0415 - keep CLI start-up light
    from gateway.contract.registry_changes import add_keys, entry_file_owner  # noqa: PLC0415 - same

    def change(document: dict[str, Any], base: RegistryVersion) -> None:
        if args.request:
            request = KeyRequest.parse(Path(args.request).read_bytes())
            if args.party and args.party != request.party:
                raise GatewayError(
                    Reason.REGISTRY_KEY_REQUEST_INVALID,
                    f"--party {args.party!r}: the request is for party {request.party!r}",
                )
            by = request.authorised_by(base.registry, base.maintainers, datetime.now(UTC))
            print(f"key request of {request.party!r} signed by {by}")
            add_keys(document, request.party, list(request.keys))
            return
        if not args.party:
            raise GatewayError(Reason.CONFIG_INVALID, "--entries needs --party")
        path = Path(args.entries)
        owner = entry_file_owner(path, [p["id"] for p in document["parties"]])
        if owner is not None and owner != args.party:
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID,
                f"{path.name} names party {owner!r}, not {args.party!r}: refusing to add its keys",
            )
        add_keys(document, args.party, entries_from_file(path))

    return _edit(args, change)


def _revoke(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import revoke_key  # noqa: PLC0415 - keep CLI start-up light

    at = _time(args.at, "--at")
    return _edit(args, lambda document, _base: revoke_key(document, args.kid, at, expire=args.expire))


def _set_permissions(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import set_permissions  # noqa: PLC0415 - keep CLI start-up light

    if args.publish is None and args.read is None and args.role is None:
        raise GatewayError(Reason.CONFIG_INVALID, "give --publish, --read and/or --role")
    return _edit(
        args,
        lambda document, _base: set_permissions(
            document, args.party, publish=args.publish, read=args.read, roles=args.role
        ),
    )


def _set_maintainers(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import set_maintainers  # noqa: PLC0415 - keep CLI start-up light

    maintainers = _maintainers(args.maintainer, args.threshold)
    return _edit(args, lambda document, _base: set_maintainers(document, maintainers))


def _time(text: str, name: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"{name}: {text!r} is not an RFC 3339 time") from exc
    if instant.tzinfo is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"{name}: give an offset (Z or +07:00)")
    return instant.astimezone(UTC).replace(microsecond=0)


# ---- keys, creation ----------------------------------------------------------------------------------
def _keygen(args: argparse.Namespace) -> int:
    key = SigningKey.generate(args.alg)
    kid = f"registry-{args.name}-{hashlib.sha256(key.public_key.raw).hexdigest()[:8]}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_pem(out / f"{kid}.pem", key.to_pem(passphrase(args)))
    public = out / f"{kid}.pub.toml"
    public.write_text(maintainer_file_text(MaintainerKey(kid, args.name, key.public_key)), "utf-8")
    print(f"wrote {out / (kid + '.pem')} (mode 0600; keep it offline) and {public} (public: share it)")
    return 0


def _init(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import initial_document  # noqa: PLC0415 - keep CLI start-up light

    registry = Registry.load(Path(args.parties))
    maintainers = _maintainers(args.maintainer, args.threshold)
    document = initial_document(
        registry, maintainers, now=datetime.now(UTC), validity=timedelta(days=args.valid_days)
    )
    draft = RegistryVersion.from_document(document)
    _write(Path(args.out), draft)
    print(f"wrote {args.out}: unsigned draft {draft.label()}, {len(registry.parties)} parties; "
          f"{maintainers.threshold} of {len(maintainers.keys)} maintainers must sign")  # fmt: skip
    return 0


def _sign(args: argparse.Namespace) -> int:
    source = Path(args.file)
    version = read_version(source)
    key = SigningKey.load(Path(args.key), passphrase(args))
    mine = [m for m in version.maintainers.keys if m.public_key.raw == key.public_key.raw]
    if not mine:
        raise GatewayError(
            Reason.KEYFILE_INVALID, f"{Path(args.key).name} is not a maintainer key of {version.label()}"
        )
    signed = version.signed(mine[0].kid, key)
    target = Path(args.out) if args.out else source
    _write(target, signed)
    signers = signed.signers()
    print(f"signed {signed.label()} as {mine[0].kid}: {len(signers)} of {signed.maintainers.threshold} "
          f"required ({', '.join(signers)}); wrote {target}")  # fmt: skip
    return 0


# ---- reading -----------------------------------------------------------------------------------------
def _show(args: argparse.Namespace) -> int:
    version = read_version(Path(args.file))
    signers = version.signers()
    print(f"registry {version.label()}")
    print(f"  digest     {version.digest}")
    print(f"  issued_at  {utc_text_of(version.issued_at)}   expires {utc_text_of(version.expires)}"
          f"{'  (STALE)' if version.stale_at(datetime.now(UTC)) else ''}")  # fmt: skip
    print(f"  previous   {version.previous or 'none (first version)'}")
    print(f"  signatures {len(signers)} valid of {version.maintainers.threshold} required: "
          f"{', '.join(signers) or 'none'}")  # fmt: skip
    for key in version.maintainers.keys:
        print(f"  maintainer {key.kid} ({key.name})")
    for party in version.registry.parties.values():
        print(f"  party {party.id}: publish {list(party.publish)} read {list(party.read)}")
        for entry in party.keys:
            state = (
                f"revoked {utc_text_of(entry.revoked_at)}" if entry.revoked_at
                else f"until {utc_text_of(entry.valid_until)}" if entry.valid_until else "no end"
            )  # fmt: skip
            print(f"    key {entry.kid} {entry.use} {entry.public_key.alg} from "
                  f"{utc_text_of(entry.valid_from)} {state}")  # fmt: skip
    return 0


def _diff(args: argparse.Namespace) -> int:
    from gateway.contract.registry_changes import diff  # noqa: PLC0415 - keep CLI start-up light

    lines = diff(read_version(Path(args.a)), read_version(Path(args.b)))
    for line in lines:
        print(line)
    return 0 if not lines else 1


def _verify(args: argparse.Namespace) -> int:
    from gateway.contract.registry_chain import Anchor, RegistryChain  # noqa: PLC0415 - keep start-up light

    chain = RegistryChain(Anchor.load(Path(args.anchor)))
    outcome = None
    for name in args.files:
        outcome = chain.update(Path(name).read_bytes())
        label = outcome.version.label() if outcome.version else name
        if not outcome.accepted:
            print(f"{name}: REFUSED {outcome.reason}: {outcome.detail}")
            return 1
        print(f"{name}: {outcome.status} {label}, signed by {', '.join(outcome.signers)}")
    current = chain.current
    if current is not None and current.stale_at(datetime.now(UTC)):
        print(
            f"warning: {current.label()} expired at {utc_text_of(current.expires)} (stale)", file=sys.stderr
        )
    return 0


def _anchor(args: argparse.Namespace) -> int:
    from gateway.contract.registry_chain import Anchor  # noqa: PLC0415 - keep CLI start-up light

    if args.digest_only and args.maintainers_only:
        raise GatewayError(Reason.CONFIG_INVALID, "--digest-only and --maintainers-only exclude each other")
    version = read_version(Path(args.file))
    version.maintainers.require(version.payload, version.signatures, version.label())
    anchor = Anchor.of(version, digest=not args.maintainers_only, maintainers=not args.digest_only)
    Path(args.out).write_text(anchor.to_toml(), "utf-8")
    print(f"wrote {args.out}: anchor of {version.label()}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    return asyncio.run(_publish_async(args))


async def _publish_async(args: argparse.Namespace) -> int:
    from gateway.bus.registry_feed import publish_version, read_versions  # noqa: PLC0415 - light start-up
    from gateway.contract.registry_chain import Anchor, RegistryChain  # noqa: PLC0415 - same

    version = read_version(Path(args.file))
    version.maintainers.require(version.payload, version.signatures, version.label())
    kafka = kafka_from_args(args)
    if kafka is None:
        raise GatewayError(Reason.CONFIG_INVALID, "--bootstrap-servers or --kafka-config is required")
    if args.anchor:  # the topic's versions, then this one: refuse what every gateway would refuse
        chain = RegistryChain(Anchor.load(Path(args.anchor)))
        for record in await read_versions(kafka):
            chain.update(record.value or b"")
        outcome = chain.offer(version)
        if not outcome.accepted:
            print(f"not published: gateways would refuse it: {outcome.reason}: {outcome.detail}")
            return 1
    offset = await publish_version(kafka, version, replication=args.replication)
    print(f"published {version.label()} at offset {offset} of xchg.registry.v1")
    return 0
