"""The authoring rules of a schema directory: what ``gateway schemas check`` (and CI) checks beyond loading.

Why this module exists: :meth:`gateway.contract.schemas.SchemaStore.load` already refuses a directory the
gateway cannot run with (file and directory names, ``$schema``/``$id``, the 2020-12 meta-schema, dangling
``$ref``, the ``x-`` annotations, misplaced ``x-seal``, unknown formats), so those checks stay with loading.
The rules here are the ones a schema *author* must keep so the exchange stays sound across versions; the
running gateway does not need them, so they run in CI and in ``gateway schemas check``, not at every start:
the partition key and alert rules, bounded depth (no recursive ``$ref``), the examples every version must
have and their wire form, and the minor-version compatibility rule (:mod:`gateway.contract.evolution`).
docs/CONVENTIONS.md states the rules; docs/SCHEMAS.md explains them.

:func:`check_schemas` takes a loaded store and returns every problem as one line of text (empty: all
good); it raises nothing for a problem it finds, so CI and ``gateway schemas check`` can list them all.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from gateway.contract.evolution import incompatibilities
from gateway.contract.schemas import (
    COMMON_NAME,
    SEALED_PROPERTY,
    MessageSchema,
    SchemaStore,
    read_json_file,
    walk_json,
)
from gateway.contract.seal import SEAL_ALG
from gateway.errors import GatewayError, Reason

if TYPE_CHECKING:  # referencing exports Resolver only from its private module; used for annotations
    from referencing import Registry
    from referencing._core import Resolver

__all__ = ["check_schemas"]

_PARTITION_KEYS: Final = {"case": "case_id", "alert": "alert_id", "delivery": "event_id"}
_VERSION_DIR_RE: Final = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_EXAMPLE_RE: Final = re.compile(r"^(valid|invalid)-[A-Za-z0-9][A-Za-z0-9_-]*\.json$")
_MIN_VALID_EXAMPLES: Final = 2
_MIN_INVALID_EXAMPLES: Final = 3
# What gateway.contract.seal.seal() emits, with placeholder bytes: check_schemas() puts it into the wire form
# of each valid example, so a sealedBlock definition the sealing code's output would not satisfy is caught in
# CI.
_PLACEHOLDER_SEALED: Final = {
    "alg": SEAL_ALG,
    "recipients": [
        {
            "ct": base64.b64encode(bytes(128 + 16)).decode("ascii"),
            "enc": base64.b64encode(bytes(32)).decode("ascii"),
            "kid": "kemensos-seal-check",
            "party": "kemensos",
        }
    ],
}


def check_schemas(store: SchemaStore) -> list[str]:
    """Everything CI checks beyond what :meth:`SchemaStore.load` enforces; an empty list means all good.

    Per schema version: top level is an object; ``x-partitionkey`` is the convention's key for the kind
    (``case_id``/``alert_id``), a required, unsealed string property; ``x-party`` properties are unsealed
    strings; alerts have no ``x-seal`` and
    ``additionalProperties: false``; no recursive ``$ref``; >= 2 ``valid-*`` and >= 3 ``invalid-*``
    examples which pass and fail validation respectively, and the wire form of each valid example
    (sealed fields replaced by a block shaped like :func:`gateway.contract.seal.seal` output) passes
    :meth:`MessageSchema.validate_wire`. Across versions: minors of a major are
    contiguous from 0 and each is compatible with its predecessor (:mod:`gateway.contract.evolution`).
    """
    problems: list[str] = []
    for schema in store.schemas():
        where = f"{schema.name}/{schema.version_string}"
        problems.extend(f"{where}: {p}" for p in _check_structure(store.registry, schema))
        problems.extend(f"{where}: {p}" for p in _check_examples(store, schema))
    problems.extend(_check_orphan_examples(store))
    problems.extend(_check_versions(store))
    return problems


def _check_structure(registry: Registry[Any], schema: MessageSchema) -> list[str]:
    problems: list[str] = []
    raw = schema.raw
    if raw.get("type") != "object":
        problems.append('top level must be "type": "object"')
    key = schema.partition_key_field
    expected = _PARTITION_KEYS[schema.kind]
    if key != expected:
        problems.append(f"x-partitionkey is {key!r}; {schema.kind} messages use {expected!r}")
    properties = raw.get("properties", {})
    if key not in properties:
        problems.append(f"x-partitionkey {key!r} is not a property")
    else:
        if key not in raw.get("required", []):
            problems.append(f"x-partitionkey {key!r} is not required")
        if key in schema.sealed_fields:
            problems.append(f"x-partitionkey {key!r} is sealed (it travels in clear as subject and key)")
        if _types_of(registry, properties[key], schema.id) != {"string"}:
            problems.append(f"x-partitionkey {key!r} is not declared as a string")
    for name in schema.party_fields:  # x-party: source (compared with the source, a party id string)
        if name in schema.sealed_fields:
            problems.append(f"x-party property {name!r} is sealed (the verifier compares it in clear)")
        if _types_of(registry, properties[name], schema.id) != {"string"}:
            problems.append(f"x-party property {name!r} is not declared as a string")
    if schema.kind in ("alert", "delivery"):  # no person fields at all, sealed or not
        if schema.sealed_fields:
            problems.append(f"{schema.kind} has x-seal properties: {', '.join(sorted(schema.sealed_fields))}")
        if raw.get("additionalProperties") is not False:
            problems.append(f"{schema.kind} must set additionalProperties: false at top level")
    cycle = _ref_cycle(registry, raw, schema.id)
    if cycle is not None:
        problems.append(f"recursive $ref via {cycle} (message schemas must have bounded depth)")
    return problems


def _types_of(registry: Registry[Any], subschema: Any, base: str) -> set[str] | None:
    """The ``type`` a subschema declares, following ``$ref`` chains (None if none declares one)."""
    resolver: Resolver[Any] = registry.resolver(base_uri=base)
    seen = 0
    while isinstance(subschema, Mapping):
        declared = subschema.get("type")
        if declared is not None:
            return {declared} if isinstance(declared, str) else set(declared)
        ref = subschema.get("$ref")
        if not isinstance(ref, str) or seen > 32:
            return None
        resolved = resolver.lookup(ref)
        subschema, resolver, seen = resolved.contents, resolved.resolver, seen + 1
    return None


def _ref_cycle(registry: Registry[Any], schema: Mapping[str, Any], base: str) -> str | None:
    """A ``$ref`` that leads back to a schema location already being expanded, if any."""
    done: set[str] = set()

    def visit(node: Any, resolver: Resolver[Any], location: str, stack: tuple[str, ...]) -> str | None:
        for _, sub in walk_json(node):
            if not (isinstance(sub, Mapping) and isinstance(sub.get("$ref"), str)):
                continue
            ref = str(sub["$ref"])
            target = _absolute_ref(location, ref)
            if target in stack:
                return ref
            if target in done:
                continue
            resolved = resolver.lookup(ref)
            found = visit(resolved.contents, resolved.resolver, target, (*stack, target))
            if found is not None:
                return found
            done.add(target)
        return None

    return visit(schema, registry.resolver(base_uri=base), f"{base}#", (f"{base}#",))


def _check_examples(store: SchemaStore, schema: MessageSchema) -> list[str]:
    problems: list[str] = []
    directory = store.root / schema.name / "examples" / schema.version_string
    if not directory.is_dir():
        return [f"no examples directory examples/{schema.version_string}/"]
    counts = {"valid": 0, "invalid": 0}
    for path in sorted(directory.iterdir()):
        match = _EXAMPLE_RE.match(path.name)
        if match is None or not path.is_file():
            problems.append(
                f"examples/{schema.version_string}/{path.name}: not named valid-*.json/invalid-*.json"
            )
            continue
        label = f"examples/{schema.version_string}/{path.name}"
        expect_valid = match.group(1) == "valid"
        counts[match.group(1)] += 1
        try:
            payload = read_json_file(path, max_depth=32)
        except GatewayError as exc:
            problems.append(f"{label}: {exc}")
            continue
        try:
            schema.validate(payload)
        except GatewayError as exc:
            if expect_valid:
                problems.append(f"{label}: should be valid but fails: {exc.detail}")
            elif exc.reason is not Reason.SCHEMA_INVALID:
                problems.append(f"{label}: fails with {exc.reason}, expected {Reason.SCHEMA_INVALID}")
            continue
        if not expect_valid:
            problems.append(f"{label}: should be invalid but passes")
            continue
        try:
            schema.validate_wire(_wire_form(schema, payload))
        except GatewayError as exc:
            problems.append(f"{label}: its wire form (sealed fields in a sealed block) fails: {exc.detail}")
    if counts["valid"] < _MIN_VALID_EXAMPLES:
        problems.append(f"{counts['valid']} valid example(s), need >= {_MIN_VALID_EXAMPLES}")
    if counts["invalid"] < _MIN_INVALID_EXAMPLES:
        problems.append(f"{counts['invalid']} invalid example(s), need >= {_MIN_INVALID_EXAMPLES}")
    return problems


def _check_orphan_examples(store: SchemaStore) -> list[str]:
    problems: list[str] = []
    known = {(s.name, s.version_string) for s in store.schemas()}
    for name in sorted({s.name for s in store.schemas()}):
        examples = store.root / name / "examples"
        if not examples.is_dir():
            continue
        for entry in sorted(examples.iterdir()):
            if not entry.is_dir() or not _VERSION_DIR_RE.match(entry.name):
                problems.append(f"{name}/examples/{entry.name}: not a <major>.<minor> directory")
            elif (name, entry.name) not in known:
                problems.append(f"{name}/examples/{entry.name}: no schema {name}/{entry.name}.json")
    return problems


def _check_versions(store: SchemaStore) -> list[str]:
    documents: dict[str, dict[tuple[int, int], Mapping[str, Any]]] = {}
    for schema in store.schemas():
        documents.setdefault(schema.name, {})[schema.version] = schema.raw
    documents[COMMON_NAME] = dict(store.commons)
    problems: list[str] = []
    for name in sorted(documents):
        versions = documents[name]
        for major in sorted({v[0] for v in versions}):
            minors = sorted(v[1] for v in versions if v[0] == major)
            missing = sorted(set(range(minors[-1] + 1)) - set(minors))
            if missing:
                listed = ", ".join(f"{major}.{m}" for m in missing)
                problems.append(f"{name}: minor version(s) {listed} missing (minors must be contiguous)")
            for older, newer in itertools.pairwise(minors):
                found = incompatibilities(
                    versions[(major, older)], versions[(major, newer)], registry=store.registry
                )
                problems.extend(f"{name} {major}.{older} -> {major}.{newer}: {p}" for p in found)
    return problems


def _wire_form(schema: MessageSchema, payload: Any) -> Any:
    """What a publisher puts on the wire for a valid logical ``payload`` (placeholder ciphertext)."""
    if not isinstance(payload, dict):
        return payload
    clear = {key: value for key, value in payload.items() if key not in schema.sealed_fields}
    if len(clear) < len(payload):
        clear[SEALED_PROPERTY] = copy.deepcopy(_PLACEHOLDER_SEALED)
    return clear


def _absolute_ref(location: str, ref: str) -> str:
    base = location.partition("#")[0]
    document, _, fragment = ref.partition("#")
    return f"{document or base}#{fragment}"
