"""``gateway schemas list|check``: the message schemas and their authoring rules (docs/SCHEMAS.md)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli._common import add_contract_options, load_schemas
from gateway.contract.authoring import check_schemas

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="message schemas").add_subparsers(
        required=True, metavar="ACTION"
    )
    listing = schemas.add_parser("list", help="list schema versions")
    add_contract_options(listing, registry=False)
    listing.set_defaults(handler=_schemas_list)
    check = schemas.add_parser("check", help="meta-schema, examples and minor-version compatibility")
    add_contract_options(check, registry=False)
    check.set_defaults(handler=_schemas_check)


def _schemas_list(args: argparse.Namespace) -> int:
    for schema in load_schemas(args).schemas():
        sealed = ",".join(sorted(set(schema.sealed_fields.values()))) or "-"
        print(f"{schema.id}  type={schema.type}  class={schema.classification}  sealed={sealed}")
    return 0


def _schemas_check(args: argparse.Namespace) -> int:
    store = load_schemas(args)
    problems = check_schemas(store)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{len(store.schemas())} schemas checked, {len(problems)} problems")
    return 1 if problems else 0
