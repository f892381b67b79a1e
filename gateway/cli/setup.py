"""``gateway config check``, ``gateway init`` and ``gateway completion``: getting a gateway configured.

``config check CONFIG`` validates a configuration offline, as ``gateway run`` would at start-up but without
a broker and without stopping at the first problem: the file itself (every table, every key, unknown keys
named), the signed registry (the versions in ``registry`` that the ``registry_anchor`` trusts) and the
party's entry in it, the key files (readable, passphrase, registered under the
party, not expired or about to), the schemas, and each ``[[sources]]``/``[[sinks]]`` table built by its
factory (options checked, secret files read, TLS material loaded; nothing is started or written). It prints
one line per problem, ``<reason>: <where>: <what>``, and exits 1 if there is any, else one ``ok`` line.

``init --party P`` scaffolds a working trial configuration for one party under ``--dir``: fresh keys, a
signed registry (``deploy/registry.example.toml``'s parties with those keys, version 1 signed by two of
three sandbox maintainers) with its anchor, and a ``gateway.toml`` with the
embedded broker, a drop folder, the HTTP intake on loopback and a file sink; it checks what it wrote with
``config check`` and prints the next commands. For production, the registry comes from its maintainers and
the printed public keys go to them.

``completion bash|zsh|tcsh`` prints a completion script generated from the parser itself (shtab).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import shtab

from gateway.bus.metrics import GatewayMetrics
from gateway.contract.keys import SealingKey, SigningKey
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig, env_overrides
from gateway.runtime.plugins import PluginContext, build_sink, build_source
from gateway.sandbox.deployment import ANCHOR_FILE, REGISTRY_FILE, create_sandbox
from gateway.settings import read_passphrase

__all__ = ["add_commands", "check_config"]

Problem = str
_T = TypeVar("_T")


def add_commands(sub: Any, parser: argparse.ArgumentParser) -> None:
    config = sub.add_parser("config", help="check a gateway configuration").add_subparsers(
        required=True, metavar="ACTION"
    )
    check = config.add_parser(
        "check",
        help="validate a configuration offline (keys, registry, schemas, sources, sinks)",
        description="Validate CONFIG as `gateway run` would, without a broker; print one line per problem "
        "and exit 1 if there is any. XCHG__SECTION__KEY variables are applied as by `gateway run`.",
    )
    check.add_argument("config", help="gateway TOML configuration").complete = shtab.FILE
    check.set_defaults(handler=_check)

    init = sub.add_parser(
        "init",
        help="scaffold a working trial configuration for one party",
        description="Write keys, a registry and a gateway.toml for PARTY under --dir (embedded broker, drop "
        "folder, HTTP intake on loopback, file sink), then check them.",
    )
    init.add_argument("--party", required=True, help="a party of deploy/registry.example.toml, e.g. kemensos")
    init.add_argument("--dir", default="xchg-trial", help="folder to create (default: xchg-trial)")
    init.set_defaults(handler=_init)

    completion = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh)")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(handler=lambda args: _completion(parser, args.shell))


def check_config(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    """Every problem of the configuration at ``path``, one line each (empty: it would start)."""
    try:
        config = GatewayConfig.load(path, env_overrides(environ or {}))
    except GatewayError as exc:
        return [f"{exc.reason}: {exc.detail}"]  # without a readable configuration nothing else can be checked
    return list(_problems(config))


def _problems(config: GatewayConfig) -> Iterator[Problem]:
    registry = yield from _attempt(lambda: _trusted_registry(config))
    schemas = yield from _attempt(lambda: SchemaStore.load(config.schemas or default_schema_root()))
    passphrase = yield from _attempt(lambda: read_passphrase(config.passphrase_file, "keys.passphrase_file"))
    if registry is not None:
        party = registry.party(config.party)
        if party is None:
            yield f"config.invalid: party: {config.party!r} is not in {config.registry}"
        else:
            signing = yield from _attempt(lambda: SigningKey.load(config.signing_key, passphrase))
            if signing is not None:
                yield from _registered(registry, config, signing.public_key.raw, "sig", "keys.signing_key")
            for index, path in enumerate(config.sealing_keys):
                sealing = yield from _attempt(functools.partial(SealingKey.load, path, passphrase))
                if sealing is not None:
                    where = f"keys.sealing_keys[{index}]"
                    yield from _registered(registry, config, sealing.public_key.raw, "seal", where)
    if schemas is not None and not schemas.schemas():
        yield "config.invalid: schemas: no message schema found"
    data_dir = config.data_dir
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        yield f"config.invalid: data_dir: {existing} is not writable"
    for index, source in enumerate(config.sources):
        context = _context(config, f"sources[{index}]")
        yield from _attempt(functools.partial(build_source, source.kind, source.options, context))
    for index, sink in enumerate(config.sinks):
        context = _context(config, f"sinks[{index}]")
        built = yield from _attempt(functools.partial(build_sink, sink.kind, sink.options, context))
        if built is not None:
            asyncio.run(built.close())  # a webhook sink may hold a session; nothing was sent


def _trusted_registry(config: GatewayConfig) -> Registry:
    """The registry the gateway would start with from its files: the signed versions in ``registry`` (a
    file or a folder of ``*.json``) offered in serial order to the chain from ``registry_anchor``."""
    from gateway.contract.registry_chain import Anchor, RegistryChain  # noqa: PLC0415 - this command only
    from gateway.contract.registry_version import RegistryVersion  # noqa: PLC0415 - same

    if config.registry_anchor is None:
        raise GatewayError(
            Reason.CONFIG_INVALID, "registry_anchor: required (the trust anchor; gateway registry anchor)"
        )
    chain = RegistryChain(Anchor.load(config.registry_anchor))
    files = sorted(config.registry.glob("*.json")) if config.registry.is_dir() else [config.registry]
    versions = []
    for file in files:
        try:
            versions.append(RegistryVersion.parse(file.read_bytes()))
        except OSError as exc:
            raise GatewayError(
                Reason.REGISTRY_INVALID, f"registry: cannot read {file}: {exc.strerror}"
            ) from exc
    refused = []
    for version in sorted(versions, key=lambda v: v.serial):
        outcome = chain.offer(version)
        if not outcome.accepted:
            refused.append(f"{version.label()}: {outcome.reason}: {outcome.detail}")
    if chain.current is None:
        raise GatewayError(
            Reason.REGISTRY_UNAVAILABLE,
            f"registry: no version the anchor trusts in {config.registry}"
            + (f" ({'; '.join(refused)})" if refused else ""),
        )
    return chain.current.registry


def _attempt(action: Callable[[], _T]) -> Generator[Problem, None, _T | None]:
    """Run ``action``; yield its problem if it raises ``GatewayError``; return its value (or None)."""
    try:
        return action()
    except GatewayError as exc:
        yield f"{exc.reason}: {exc.detail}"
    return None


def _registered(
    registry: Registry, config: GatewayConfig, raw: bytes, use: str, where: str
) -> Iterator[Problem]:
    party = registry.party(config.party)
    assert party is not None  # noqa: S101 - checked by the caller
    entry = next((k for k in party.keys if k.use == use and k.public_key.raw == raw), None)
    if entry is None:
        yield f"keyfile.invalid: {where}: its public key is not a {use} key of {config.party} in the registry"
        return
    now = datetime.now(UTC)
    problem = entry.problem_at(now)
    if problem is not None:
        yield f"keyfile.invalid: {where}: key {entry.kid} is not usable now ({problem})"
        return
    ends = [t for t in (entry.valid_until, entry.revoked_at) if t is not None]
    if use == "sig" and ends and min(ends) - now < timedelta(days=config.ops.key_expiry_days):
        days = (min(ends) - now) // timedelta(days=1)
        yield (
            f"keyfile.invalid: {where}: key {entry.kid} expires in {days} day(s); /readyz fails below "
            f"ops.key_expiry_days = {config.ops.key_expiry_days}"
        )


def _context(config: GatewayConfig, where: str) -> PluginContext:
    return PluginContext(
        party=config.party, base_dir=config.base_dir, data_dir=config.data_dir,
        metrics=GatewayMetrics(party=config.party), where=where,
    )  # fmt: skip


def _check(args: argparse.Namespace) -> int:
    path = Path(args.config)
    problems = check_config(path, dict(os.environ))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    config = GatewayConfig.load(path, env_overrides(os.environ))
    print(
        f"{path}: ok (party {config.party}, {len(config.sources)} source(s), {len(config.sinks)} sink(s), "
        f"ops on {config.ops.host}:{config.ops.port})"
    )
    return 0


def _init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    party = args.party
    if (root / party / "gateway.toml").exists():
        print(f"{root / party / 'gateway.toml'} exists; not overwritten", file=sys.stderr)
        return 2
    try:
        created = create_sandbox(
            root, [party], bootstrap_servers=[],
            per_party={party: {
                "ops": {"host": "127.0.0.1", "port": 8080},
                "sources": [
                    {"kind": "file-drop", "directory": "drop"},
                    {"kind": "http", "host": "127.0.0.1", "port": 8090},
                ],
                "sinks": [{"kind": "file", "directory": "received", "types": ["*"]}],
            }},
        )  # fmt: skip
    except ValueError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"--party: {exc}") from None
    config = created[party].config
    problems = check_config(config)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"wrote {config} (and {root / REGISTRY_FILE}, signed by 2 of 3 sandbox maintainers, its anchor "
          f"{root / ANCHOR_FILE}, keys under {config.parent / 'keys'})")  # fmt: skip
    print("next:")
    print(f"  gateway config check {config}")
    print(
        f"  gateway run --config {config}            # embedded broker; status page http://127.0.0.1:8080/status"
    )
    print(
        "  curl -H 'Content-Type: application/json' --data-binary @event.json http://127.0.0.1:8090/v1/events"
    )
    print(f"  received events appear as JSON files in {config.parent / 'received'}")
    return 0


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    print(shtab.complete(parser, shell=shell))
    return 0
