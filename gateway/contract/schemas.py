"""The message schemas: loading them and validating payloads against them (the runtime store).

Why this module exists: every event's ``data`` is validated against the schema its ``dataschema`` names, on
the hot path (thousands of events per second), and a schema directory that is subtly wrong (a ``$id`` that
does not match its file, a dangling ``$ref``, a sealed field nested where the publisher will not encrypt it)
must stop the gateway at start-up, not corrupt an exchange later. So :meth:`SchemaStore.load` reads
``schemas/`` once, checks every file against the 2020-12 meta-schema and ``docs/CONVENTIONS.md``, builds one
registry so ``$ref`` into ``_common`` resolves offline, and compiles two validators per schema version once:
the *logical* schema (the unsealed payload a publisher builds and a recipient sees after opening the seal)
and the derived *wire* schema (``x-seal`` properties replaced by the HPKE ``sealed`` block).

Validator: jsonschema-rs (Rust), not jsonschema's pure-Python validator. On the real ``case.referral`` 1.0
schema with a 1.3 KB payload it validated ~300,000 payloads/s against ~1,400/s for a compiled
``jsonschema.Draft202012Validator`` with a crawled registry (one core, CPython 3.11). It supports a shared
offline ``Registry`` and asserts ``format`` for ``date``, ``date-time`` and ``email`` natively, whereas the
Python ``FormatChecker`` silently skips ``date-time`` unless the optional ``rfc3339-validator`` package is
installed. Its regex engine also anchors ``$`` at the very end (Python's ``re`` lets ``"ID\\n"`` match
``^[A-Z]{2}$``) and its ``\\d`` is ASCII-only. jsonschema (Python) is still used where speed does not
matter and its error messages help: the meta-schema check at load time.

Personal data: validation errors are reported as ``GatewayError(Reason.SCHEMA_INVALID, detail)`` where the
detail is built only from the JSON path and the failing keyword (plus schema-side facts such as an expected
type or a pattern). Instance values never appear, and neither do object keys the schema does not declare
(shown as ``*``): a key can be personal data too. jsonschema-rs exceptions are never chained, since their
messages quote the instance.

Wire form (CONVENTIONS.md): each ``x-seal`` property is removed from ``required`` and replaced in
``properties`` by ``false`` rather than simply dropped, so a payload carrying a sealed field in clear is
rejected even where the schema allows additional properties; ``sealed`` (``_common#/$defs/sealedBlock``) is
added, and required when any sealed property is required. A type without sealed fields gets
``"sealed": false`` instead, so no ciphertext can be smuggled through a schema that allows extra properties.

Recursion: jsonschema-rs recurses natively; with a recursive schema and input nested tens of thousands deep
it can overflow the C stack. Input is depth-limited by :func:`gateway.contract.strictjson.parse_json` (32) and
:func:`gateway.contract.authoring.check_schemas` rejects recursive ``$ref`` cycles in message schemas, so
neither can happen.

Length: a little over the house's ~600 lines; loading, the checks that refuse a schema directory at start-up
and wire-form derivation share private helpers, and splitting them would expose those helpers.

Authoring rules: what CI and ``gateway schemas check`` verify beyond loading (examples and their wire form,
partition key and alert rules, no recursive ``$ref``, minor-version compatibility) is in
:mod:`gateway.contract.authoring`; this module keeps only what the running gateway needs.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, cast

import jsonschema  # type: ignore[import-untyped]  # no stubs in the venv; used at load time only
import jsonschema_rs
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason

__all__ = [
    "CLASSIFICATIONS",
    "COMMON_NAME",
    "PARTY_SOURCE",
    "SCHEMA_DIALECT",
    "SCHEMA_ID_PREFIX",
    "SEALED_PROPERTY",
    "SEAL_CATEGORIES",
    "TYPE_PREFIX",
    "MessageSchema",
    "SchemaStore",
    "default_schema_root",
    "read_json_file",
    "walk_json",
]

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX: Final = "urn:id.trafficking:schema:"
TYPE_PREFIX: Final = "id.trafficking."
MessageKind = Literal["case", "alert", "delivery"]
"""The family of a message type (``id.trafficking.<kind>.<name>``), which decides its topic
(``xchg.<party>.<kind>.v<major>``, :mod:`gateway.contract.policy`)."""

COMMON_NAME: Final = "_common"
CLASSIFICATIONS: Final = ("public", "internal", "confidential", "restricted")
SEAL_CATEGORIES: Final = frozenset({"identity", "contact", "health", "child", "perpetrator"})
#: The one value of the ``x-party`` annotation: the property names the event's source (docs/SCHEMAS.md).
PARTY_SOURCE: Final = "source"

#: The top-level property that carries the sealed fields in the wire form (reserved in logical schemas).
SEALED_PROPERTY: Final = "sealed"

_SEALED_BLOCK_DEF: Final = "#/$defs/sealedBlock"
_DEFAULT_COMMON_ID: Final = f"{SCHEMA_ID_PREFIX}{COMMON_NAME}:1.0"
_NAME_RE: Final = re.compile(r"^(case|alert|delivery)\.[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_VERSION_FILE_RE: Final = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.json$")
_PLAIN_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SCHEMA_FILE_MAX_DEPTH: Final = 128
_DETAIL_ERRORS: Final = 3
_WEAK_KEYWORDS: Final = frozenset({"anyOf", "oneOf"})
_NOTHING_SEALED: Final[Mapping[str, str]] = MappingProxyType({})


def default_schema_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The ``schemas/`` directory: ``override`` if given, else the one next to the ``gateway`` package."""
    if override is not None:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "schemas"


def _schema_id(name: str, version: tuple[int, int]) -> str:
    return f"{SCHEMA_ID_PREFIX}{name}:{version[0]}.{version[1]}"


# ---- error details without personal data ---------------------------------------------------------------


def _render_path(tokens: Iterable[str | int], names: frozenset[str]) -> str:
    """``$.identity.names[0]``; keys the schemas do not declare are shown as ``*`` (may be personal data)."""
    out = ["$"]
    for token in tokens:
        if isinstance(token, int):
            out.append(f"[{token}]")
        elif token in names and _PLAIN_NAME_RE.match(token):
            out.append(f".{token}")
        else:
            out.append(".*")
    return "".join(out)


def _path_key(tokens: Iterable[str | int]) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, t) if isinstance(t, int) else (1, t) for t in tokens)


def _relevance(error: jsonschema_rs.ValidationError) -> tuple[Any, ...]:
    """Sort key, most useful first: nearest the root, a specific keyword over anyOf/oneOf, then stable."""
    return (
        len(error.instance_path),
        error.kind.name in _WEAK_KEYWORDS,
        error.kind.name != "type",  # a wrong type explains any other failure at the same place
        _path_key(error.instance_path),
        _path_key(error.schema_path),
    )


def _describe_one(error: jsonschema_rs.ValidationError, names: frozenset[str], sealed: frozenset[str]) -> str:
    path = _render_path(error.instance_path, names)
    kind = error.kind
    keyword = kind.name
    kinds = jsonschema_rs.ValidationErrorKind
    if isinstance(kind, kinds.Required):
        return f"{path}: required property '{kind.property}' missing"
    if isinstance(kind, kinds.FalseSchema):
        if len(error.instance_path) == 1 and error.instance_path[0] in sealed:
            return f"{path}: sealed field sent in clear (x-seal properties travel only inside 'sealed')"
        if list(error.instance_path) == [SEALED_PROPERTY]:
            return f"{path}: not allowed (this message type has no sealed fields)"
        return f"{path}: not allowed (false schema)"
    if isinstance(kind, kinds.AdditionalProperties | kinds.UnevaluatedProperties):
        count = len(kind.unexpected)
        return f"{path}: {keyword} ({count} unexpected propert{'y' if count == 1 else 'ies'})"
    if isinstance(kind, kinds.Type):
        return f"{path}: type (expected {' or '.join(kind.types)})"
    if isinstance(kind, kinds.Format):
        return f"{path}: format ({kind.format})"
    if isinstance(kind, kinds.Pattern):
        return f"{path}: pattern {kind.pattern}"
    if isinstance(
        kind,
        kinds.Minimum
        | kinds.Maximum
        | kinds.ExclusiveMinimum
        | kinds.ExclusiveMaximum
        | kinds.MinLength
        | kinds.MaxLength
        | kinds.MinItems
        | kinds.MaxItems
        | kinds.MinProperties
        | kinds.MaxProperties,
    ):
        return f"{path}: {keyword} {kind.limit}"
    if isinstance(kind, kinds.OneOfMultipleValid):
        return f"{path}: oneOf (more than one branch matched)"
    if isinstance(kind, kinds.OneOfNotValid | kinds.AnyOf):
        return f"{path}: {keyword} (no branch matched)"
    return f"{path}: {keyword}"


def _describe(
    errors: list[jsonschema_rs.ValidationError], names: frozenset[str], sealed: frozenset[str]
) -> str:
    ordered = sorted(errors, key=_relevance)
    shown: list[str] = []
    for error in ordered:
        text = _describe_one(error, names, sealed)
        if text not in shown:
            shown.append(text)
        if len(shown) == _DETAIL_ERRORS:
            break
    more = len(ordered) - len(shown)
    return "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def _check(
    validator: jsonschema_rs.Validator, data: object, names: frozenset[str], sealed: Mapping[str, str]
) -> None:
    try:
        if validator.is_valid(data):
            return
        errors = list(validator.iter_errors(data))
    except ValueError:  # a Python value with no JSON equivalent (set, non-str key, ...); message not echoed
        raise GatewayError(Reason.SCHEMA_INVALID, "$: payload is not a JSON value") from None
    raise GatewayError(Reason.SCHEMA_INVALID, _describe(errors, names, frozenset(sealed)))


# ---- the schema of one message type and version ---------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class MessageSchema:
    """One version of one message type. Ordered and compared by ``(name, version)``.

    ``raw`` is the logical schema as loaded and ``wire`` the derived wire schema; treat both as read-only.
    """

    name: str
    version: tuple[int, int]
    id: str = field(compare=False)
    type: str = field(compare=False)
    kind: MessageKind = field(compare=False)
    classification: str = field(compare=False)
    partition_key_field: str = field(compare=False)
    sealed_fields: Mapping[str, str] = field(compare=False)
    party_fields: tuple[str, ...] = field(compare=False)
    """Top-level properties annotated ``"x-party": "source"``: when present, they name the event's source."""
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    wire: Mapping[str, Any] = field(compare=False, repr=False)
    _validator: jsonschema_rs.Validator = field(compare=False, repr=False)
    _wire_validator: jsonschema_rs.Validator = field(compare=False, repr=False)
    _names: frozenset[str] = field(compare=False, repr=False)

    @property
    def version_string(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def validate(self, data: object) -> None:
        """Validate a logical (unsealed) payload; raises ``GatewayError(SCHEMA_INVALID)`` without values."""
        _check(self._validator, data, self._names, _NOTHING_SEALED)

    def validate_wire(self, data: object) -> None:
        """Validate a wire payload (sealed fields only inside ``sealed``); same errors as :meth:`validate`."""
        _check(self._wire_validator, data, self._names, self.sealed_fields)

    def check_parties(self, data: Mapping[str, Any], source: str) -> None:
        """Every ``x-party: source`` property present in ``data`` must equal ``source`` (the signing party):
        a party cannot speak for another (e.g. announce a distribution "from" IOM). ``authz.party-mismatch``
        names the property, never the value."""
        for name in self.party_fields:
            if name in data and data[name] != source:
                raise GatewayError(Reason.AUTHZ_PARTY_MISMATCH, f"{name} must name the source")


# ---- loading ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Document:
    name: str  # message name or _common
    version: tuple[int, int]
    path: Path
    schema: dict[str, Any]

    @property
    def id(self) -> str:
        return _schema_id(self.name, self.version)


def walk_json(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) in a JSON document, depth first."""
    yield pointer, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from walk_json(value, f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_json(value, f"{pointer}/{index}")


def _refs(schema: Any) -> Iterator[tuple[str, str]]:
    for pointer, node in walk_json(schema):
        if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            yield pointer, node["$ref"]


def _declared_names(schemas: Iterable[Any]) -> frozenset[str]:
    names = {SEALED_PROPERTY}
    for schema in schemas:
        for _, node in walk_json(schema):
            if not isinstance(node, Mapping):
                continue
            properties = node.get("properties")
            if isinstance(properties, Mapping):
                names.update(str(key) for key in properties)
            required = node.get("required")
            if isinstance(required, list):
                names.update(str(key) for key in required if isinstance(key, str))
    return frozenset(names)


def read_json_file(path: Path, *, max_depth: int) -> Any:
    """A JSON file, parsed strictly (:func:`~gateway.contract.strictjson.parse_json`); ``CONFIG_INVALID`` if
    it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read: {exc.strerror}") from exc
    return parse_json(raw, max_depth=max_depth)


def _wire_schema(schema: Mapping[str, Any], sealed: Mapping[str, str], common_id: str) -> dict[str, Any]:
    """The wire schema CONVENTIONS.md derives from a logical one (a deep copy; ``schema`` is not changed)."""
    wire = copy.deepcopy(dict(schema))
    # Its own resource: the logical schema keeps its $id in the registry.
    wire["$id"] = f"{schema['$id']}:wire"
    properties = dict(wire.get("properties", {}))
    if not sealed:  # nothing to seal: a `sealed` block would be smuggled data, even where extras are allowed
        properties[SEALED_PROPERTY] = False
        wire["properties"] = properties
        return wire
    for name in sealed:
        properties[name] = False  # not merely dropped: a sealed field in clear must be rejected
    properties[SEALED_PROPERTY] = {"$ref": f"{common_id}{_SEALED_BLOCK_DEF}"}
    wire["properties"] = properties
    required = [name for name in wire.get("required", []) if name not in sealed]
    if any(name in sealed for name in schema.get("required", [])):
        required.append(SEALED_PROPERTY)
    wire["required"] = required
    return wire


def _common_for(schema: Any, commons: Mapping[str, _Document]) -> str:
    """The ``_common`` version whose ``sealedBlock`` a wire schema uses: the (highest) one the schema refs."""
    prefix = f"{SCHEMA_ID_PREFIX}{COMMON_NAME}:"
    used = {ref.partition("#")[0] for _, ref in _refs(schema) if ref.startswith(prefix)}
    candidates = sorted((d.version, d.id) for d in commons.values() if d.id in used)
    return candidates[-1][1] if candidates else _DEFAULT_COMMON_ID


class SchemaStore:
    """All message schemas of one ``schemas/`` directory, validated and compiled. Build with :meth:`load`."""

    __slots__ = ("_by_id", "_by_type", "_commons", "_registry", "_root")

    def __init__(
        self,
        *,
        root: Path,
        schemas: Iterable[MessageSchema],
        commons: Mapping[tuple[int, int], Mapping[str, Any]],
        registry: Registry[Any],
    ) -> None:
        self._root = root
        self._registry = registry
        self._commons = dict(commons)
        self._by_id: dict[str, MessageSchema] = {}
        by_type: dict[str, list[MessageSchema]] = {}
        for schema in sorted(schemas):
            self._by_id[schema.id] = schema
            by_type.setdefault(schema.type, []).append(schema)
        self._by_type = {type_: tuple(versions) for type_, versions in by_type.items()}

    # -- construction ----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None) -> SchemaStore:
        """Load and compile every schema under ``root`` (default: :func:`default_schema_root`).

        Raises ``GatewayError(CONFIG_INVALID)`` listing every problem found: unreadable or non-strict JSON,
        wrong file or directory names, ``$schema``/``$id`` not per convention, meta-schema violations,
        unresolvable ``$ref``, missing or invalid ``x-dataclassification``/``x-partitionkey``, unknown or
        misplaced ``x-seal``, a property named ``sealed``, unknown ``format``, and a missing ``sealedBlock``.
        """
        base = default_schema_root(root)
        problems: list[str] = []
        documents = _read_documents(base, problems)
        if not documents and not problems:
            problems.append("no schema files found")
        registry: Registry[Any] = Registry().with_resources(
            (doc.id, DRAFT202012.create_resource(doc.schema)) for doc in documents
        )
        for doc in documents:
            _check_refs(doc, registry, problems)
        commons = {doc.id: doc for doc in documents if doc.name == COMMON_NAME}
        names = _declared_names(doc.schema for doc in documents)
        try:
            rs_registry: jsonschema_rs.Registry | None = jsonschema_rs.Registry(
                [(doc.id, doc.schema) for doc in documents]
            )
        except ValueError as exc:  # a $ref into a missing document; already reported by _check_refs
            rs_registry = None
            if not problems:
                problems.append(f"cannot build the schema registry: {exc}")
        schemas: list[MessageSchema] = []
        for doc in documents:
            if doc.name == COMMON_NAME:
                _check_seal_placement(doc, problems, top_level_allowed=False)
                continue
            built = _build(
                doc,
                commons=commons,
                registry=registry,
                rs_registry=rs_registry,
                names=names,
                problems=problems,
            )
            if built is not None:
                schemas.append(built)
        if problems:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"schema directory {base}: {len(problems)} problem(s): " + "; ".join(problems),
            )
        return cls(
            root=base,
            schemas=schemas,
            commons={doc.version: doc.schema for doc in commons.values()},
            registry=registry,
        )

    # -- lookups (hot path) ----------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self._root

    @property
    def registry(self) -> Registry[Any]:
        """A ``referencing`` registry holding every loaded document under its ``$id``."""
        return self._registry

    @property
    def commons(self) -> Mapping[tuple[int, int], Mapping[str, Any]]:
        """The loaded ``_common`` documents by version (read-only)."""
        return MappingProxyType(self._commons)

    def get(self, dataschema: str) -> MessageSchema:
        """The schema whose ``$id`` is exactly ``dataschema``; ``GatewayError(SCHEMA_UNKNOWN)`` otherwise."""
        try:
            return self._by_id[dataschema]
        except (KeyError, TypeError):
            raise GatewayError(Reason.SCHEMA_UNKNOWN, f"no schema {_clip(dataschema)}") from None

    def latest(self, type: str) -> MessageSchema:
        """The highest version of the message type ``type`` (``id.trafficking.<name>``)."""
        versions = self._by_type.get(type) if isinstance(type, str) else None
        if not versions:
            raise GatewayError(Reason.SCHEMA_UNKNOWN, f"no schema for type {_clip(type)}")
        return versions[-1]

    def for_type(self, type: str) -> list[MessageSchema]:
        """Every version of ``type``, oldest first (empty if the type is unknown)."""
        return list(self._by_type.get(type, ())) if isinstance(type, str) else []

    def resolve(self, type: str, dataschema: str) -> MessageSchema:
        """The schema for an event: :meth:`get`, plus ``SCHEMA_TYPE_MISMATCH`` if it is for another type."""
        schema = self.get(dataschema)
        if schema.type != type:
            raise GatewayError(
                Reason.SCHEMA_TYPE_MISMATCH,
                f"dataschema {schema.id} is for type {schema.type}, not {_clip(type)}",
            )
        return schema

    def schemas(self) -> list[MessageSchema]:
        """Every message schema, sorted by name and version."""
        return sorted(self._by_id.values())

    def types(self) -> list[str]:
        return sorted(self._by_type)


def _clip(value: object, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_documents(base: Path, problems: list[str]) -> list[_Document]:
    if not base.is_dir():
        raise GatewayError(Reason.CONFIG_INVALID, f"schema directory {base} does not exist")
    documents: list[_Document] = []
    for directory in sorted(base.iterdir()):
        if not directory.is_dir() or directory.name.startswith("."):
            continue
        name = directory.name
        if name != COMMON_NAME and not _NAME_RE.match(name):
            problems.append(
                f"{name}/: not a message name (case.<name>, alert.<name>, delivery.<name>) or {COMMON_NAME}"
            )
            continue
        for path in sorted(directory.iterdir()):
            label = f"{name}/{path.name}"
            if path.is_dir():
                if not (path.name == "examples" and name != COMMON_NAME):
                    problems.append(f"{label}/: unexpected directory")
                continue
            if path.suffix != ".json":
                continue
            match = _VERSION_FILE_RE.match(path.name)
            if match is None:
                problems.append(f"{label}: file name is not <major>.<minor>.json")
                continue
            version = (int(match.group(1)), int(match.group(2)))
            try:
                schema = read_json_file(path, max_depth=_SCHEMA_FILE_MAX_DEPTH)
            except GatewayError as exc:
                problems.append(f"{label}: {exc}")
                continue
            doc = _Document(name, version, path, schema)
            if _check_document(doc, label, problems):
                documents.append(doc)
    return documents


_META_VALIDATOR: Final = jsonschema.Draft202012Validator(
    jsonschema.Draft202012Validator.META_SCHEMA,
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
)


def _check_document(doc: _Document, label: str, problems: list[str]) -> bool:
    """Per-file checks that do not need the other files; False if the file cannot be used at all."""
    schema: Any = doc.schema
    if not isinstance(schema, dict):
        problems.append(f"{label}: not a JSON object")
        return False
    ok = True
    if schema.get("$schema") != SCHEMA_DIALECT:
        problems.append(f"{label}: $schema must be {SCHEMA_DIALECT}")
        ok = False
    if schema.get("$id") != doc.id:
        problems.append(f"{label}: $id is {_clip(schema.get('$id'))}, must be {doc.id!r}")
        ok = False
    errors = sorted(_META_VALIDATOR.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors[:5]:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        problems.append(f"{label}: meta-schema: at {where}: {error.message}")
    return ok and not errors


def _check_refs(doc: _Document, registry: Registry[Any], problems: list[str]) -> None:
    resolver = registry.resolver(base_uri=doc.id)
    for pointer, ref in _refs(doc.schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            problems.append(f"{doc.name}/{doc.path.name}: $ref {ref!r} at {pointer or '/'} does not resolve")


def _check_seal_placement(doc: _Document, problems: list[str], *, top_level_allowed: bool) -> None:
    for pointer, node in walk_json(doc.schema):
        if not (isinstance(node, Mapping) and "x-seal" in node):
            continue
        parts = pointer.split("/")
        if top_level_allowed and len(parts) == 3 and parts[1] == "properties":
            continue
        problems.append(
            f"{doc.name}/{doc.path.name}: x-seal at {pointer or '/'}: only top-level properties of a message "
            "schema may be sealed (anything else would be sent in clear)"
        )


def _build(
    doc: _Document,
    *,
    commons: Mapping[str, _Document],
    registry: Registry[Any],
    rs_registry: jsonschema_rs.Registry | None,
    names: frozenset[str],
    problems: list[str],
) -> MessageSchema | None:
    label = f"{doc.name}/{doc.path.name}"
    schema = doc.schema
    count = len(problems)
    classification = schema.get("x-dataclassification")
    if classification not in CLASSIFICATIONS:
        problems.append(f"{label}: x-dataclassification must be one of {', '.join(CLASSIFICATIONS)}")
    partition_key = schema.get("x-partitionkey")
    if not isinstance(partition_key, str):
        problems.append(f"{label}: x-partitionkey must name a top-level property")
    _check_seal_placement(doc, problems, top_level_allowed=True)
    properties = schema.get("properties", {})
    sealed: dict[str, str] = {}
    for prop, sub in properties.items():
        if isinstance(sub, Mapping) and "x-seal" in sub:
            if sub["x-seal"] in SEAL_CATEGORIES:
                sealed[prop] = sub["x-seal"]
            else:
                problems.append(
                    f"{label}: x-seal of {prop!r} must be one of {', '.join(sorted(SEAL_CATEGORIES))}"
                )
    if SEALED_PROPERTY in properties:
        problems.append(f"{label}: property {SEALED_PROPERTY!r} is reserved for the wire form")
    parties = tuple(p for p, sub in properties.items() if isinstance(sub, Mapping) and "x-party" in sub)
    for prop in parties:
        if properties[prop]["x-party"] != PARTY_SOURCE:
            problems.append(f"{label}: x-party of {prop!r} must be {PARTY_SOURCE!r}")
    common_id = _common_for(schema, commons)
    if sealed:
        try:
            registry.resolver(base_uri=common_id).lookup(_SEALED_BLOCK_DEF)
        except Unresolvable:
            problems.append(
                f"{label}: sealed fields need {common_id}{_SEALED_BLOCK_DEF}, which does not exist"
            )
    if len(problems) > count or rs_registry is None:
        return None
    wire = _wire_schema(schema, sealed, common_id)
    try:
        validator = _compile(schema, rs_registry)
        wire_validator = _compile(wire, rs_registry)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        problems.append(f"{label}: does not compile: {getattr(exc, 'message', exc)}")
        return None
    kind = cast(MessageKind, doc.name.partition(".")[0])  # the name's first label: _NAME_RE checked it
    return MessageSchema(
        name=doc.name,
        version=doc.version,
        id=doc.id,
        type=f"{TYPE_PREFIX}{doc.name}",
        kind=kind,
        classification=str(classification),
        partition_key_field=str(partition_key),
        sealed_fields=MappingProxyType(sealed),
        party_fields=parties,
        raw=schema,
        wire=wire,
        _validator=validator,
        _wire_validator=wire_validator,
        _names=names,
    )


def _compile(schema: Mapping[str, Any], registry: jsonschema_rs.Registry) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(
        dict(schema),
        registry=registry,
        validate_formats=True,  # 2020-12 treats format as annotation by default; we assert it
        ignore_unknown_formats=False,  # a misspelt format ("datetime") must fail at load, not pass silently
        offline=True,  # every $ref resolves from the registry; nothing is fetched
    )
