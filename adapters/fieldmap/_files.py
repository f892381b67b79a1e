"""Reading mapping files through :class:`gateway.settings.Table`: every unknown key is an error naming it.

Part of :mod:`adapters.fieldmap` (import from there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from adapters.fieldmap._fields import KINDS, TEMPLATE_RE, UNSET, FieldSpec, Formats, Tables
from adapters.fieldmap._messages import MessageMap
from gateway.errors import GatewayError
from gateway.settings import Table, load_toml

#: The ``format`` line every mapping file starts with.
FORMAT: Final = "xchg-mapping/1"

_PRODUCERS: Final = ("from", "const", "join")
_DERIVATIONS: Final = ("template", "difference")
_DEPTHS: Final = ("top", "any")
_EACH_KEYS: Final = ("each", "fields")
_SPEC_KEYS: Final = (
    *_PRODUCERS, *_DERIVATIONS, "table", "reverse", "kind", "split", "thousands", "default", "required",
    "omit_when",
)  # fmt: skip
_PATH_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_M = TypeVar("_M")


def load_mapping(path: Path, build: Callable[[Mapping[str, Any]], _M]) -> _M:
    """Read the TOML file at ``path`` and ``build`` an adapter's mapping from it; an error in it is a
    ``config.invalid`` naming the file and the key."""
    document = load_toml(path, what="mapping")
    try:
        return build(document)
    except GatewayError as exc:
        raise GatewayError(exc.reason, f"mapping {path}: {exc.detail}") from exc


class MappingFile:
    """One mapping document, read through :class:`gateway.settings.Table`: ``format``, ``[tables]``,
    ``[formats]``, ``accept_exchange_values`` (read here) and the adapter's sections (read by the adapter
    with :meth:`section` and :meth:`message`). :meth:`close` then refuses every key nobody read."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.root = Table(document)
        if self.root.string("format") != FORMAT:
            raise self.root.fail("format", f"must be {FORMAT!r}")
        self.tables = Tables.read(
            self.root.table("tables"),
            accept_exchange_values=self.root.boolean("accept_exchange_values", False),
        )
        self.formats = Formats.read(self.root.table("formats"))
        self._opened: list[Table] = []

    def section(self, key: str, *, parent: Table | None = None, required: bool = True) -> Table:
        """The table ``[key]`` (or ``[parent.key]``); its keys are checked by :meth:`close`."""
        table = (parent or self.root).table(key, required=required)
        self._opened.append(table)
        return table

    def subsections(
        self, key: str, *, parent: Table | None = None, required: bool = True
    ) -> dict[str, Table]:
        """The named tables inside ``[key]`` (``[files.<name>]``, ``[updates."<type>"]``), in file order."""
        outer = self.section(key, parent=parent, required=required)
        return {name: self.section(name, parent=outer) for name in outer}

    def message(
        self,
        section: Table,
        *,
        context: Collection[str] = (),
        outputs: Collection[str] = (),
        unmapped: bool = False,
    ) -> MessageMap:
        """The :class:`MessageMap` of ``section`` (its ``fields``, and ``unmapped``/``unmapped_depth`` where
        the adapter allows them: outbound shapes). ``context`` lists the ``$`` paths a field may read
        (``$party``, ``$event.id``), ``outputs`` the ``$`` targets the adapter takes (``$recipients``)."""
        reader = _FieldReader(self.tables, frozenset(context), frozenset(outputs))
        fields = reader.fields(section.table("fields", required=True))
        target, depth = None, "top"
        if unmapped:
            target = section.string("unmapped", None)
            if target is not None:
                _check_path(section, "unmapped", target)
            depth = section.string("unmapped_depth", "top", choices=_DEPTHS)
        return MessageMap(
            name=section.where, fields=fields, unmapped=target, unmapped_depth=depth, formats=self.formats
        )

    def close(self) -> None:
        """Refuse every key no reader asked for (a misspelt option is an error, never ignored)."""
        for table in [*self._opened, self.root]:
            table.refuse_unknown()


def _check_path(table: Table, key: str, path: str) -> None:
    if not _PATH_RE.match(path):
        raise table.fail(key, "a dotted field path is required")


class _FieldReader:
    def __init__(self, tables: Tables, context: frozenset[str], outputs: frozenset[str]) -> None:
        self.tables = tables
        self.context = context
        self.outputs = outputs

    def fields(self, table: Table) -> tuple[FieldSpec, ...]:
        specs = []
        for target in table:
            if not target.startswith("$"):
                _check_path(table, target, target)
            elif target not in self.outputs:
                raise table.fail(
                    target, f"not a target this adapter takes ({', '.join(sorted(self.outputs)) or 'none'})"
                )
            raw = table.raw(target)
            if isinstance(raw, str):  # a bare path: the value copied as it is
                self._source(table, target, raw)
                specs.append(FieldSpec(target=target, source=raw, kind="raw"))
            elif isinstance(raw, Mapping):
                specs.append(self.spec(target, table.table(target)))
            else:
                raise table.fail(target, "a source path or a table is required")
        return tuple(specs)

    def _source(self, table: Table, key: str, path: str) -> None:
        if not path:
            raise table.fail(key, "a source path is required")
        if path.startswith("$") and path not in self.context:
            known = ", ".join(sorted(self.context)) or "none here"
            raise table.fail(key, f"{path!r} is not a context value ({known})")

    def spec(self, target: str, table: Table) -> FieldSpec:
        each = table.string("each", None)
        table.only(*(_EACH_KEYS if each is not None else _SPEC_KEYS))  # a misspelt option is named as such
        if each is not None:
            self._source(table, "each", each)
            spec = FieldSpec(
                target=target, each=each, fields=self.fields(table.table("fields", required=True))
            )
            table.refuse_unknown()
            return spec
        source = table.string("from", None)
        if source is not None:
            self._source(table, "from", source)
        join = table.strings("join", None, empty=False)
        for path in join or ():
            self._source(table, "join", path)
        template = table.string("template", None)
        for placeholder in TEMPLATE_RE.findall(template or ""):
            _check_path(table, "template", placeholder)
        difference = table.strings("difference", None)
        if difference is not None:
            if len(difference) != 2:
                raise table.fail("difference", "two field paths are required")
            for path in difference:
                _check_path(table, "difference", path)
        producers = [key for key in _PRODUCERS if key in table]
        derivations = [key for key in _DERIVATIONS if key in table]
        if len(producers) > 1 or len(derivations) > 1 or not (producers or derivations):
            raise table.fail(
                "", "give one of 'from', 'const' or 'join', and/or one of 'template' or 'difference'"
            )
        if derivations and producers and producers[0] != "from":
            raise table.fail(derivations[0], "a derived field may only fall back on 'from'")
        kind = table.string("kind", "int" if difference is not None else "str", choices=KINDS)
        if difference is not None and kind != "int":
            raise table.fail("kind", "a difference is an int")
        name = table.string("table", None)
        if name is not None and name not in self.tables:
            raise table.fail("table", f"no [tables.{name}]")
        reverse = table.boolean("reverse", False)
        if reverse and name is None:
            raise table.fail("reverse", "needs a table")
        required = table.boolean("required", False)
        default = table.raw("default")
        if required and (source is None or default is not None):
            raise table.fail("required", "needs 'from' and no 'default'")
        spec = FieldSpec(
            target=target,
            source=source,
            const=table.raw("const"),
            join=join or (),
            table=name,
            reverse=reverse,
            kind=kind,
            split=table.string("split", ";"),
            thousands=table.boolean("thousands", False),
            default=default,
            required=required,
            omit_when=table.raw("omit_when", UNSET),
            template=template,
            difference=(difference[0], difference[1]) if difference is not None else None,
        )
        table.refuse_unknown()
        return spec
