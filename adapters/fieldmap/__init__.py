"""The mapping engine of every agency adapter: native records <-> exchange payloads, per ``mapping.toml``.

Why a small engine instead of hand-written ``payload["x"] = record["y"]`` code: the mapping tables are the
part agencies review and change (a new code in the embassy system, a renamed CSV column, an IOM location
added to a programme), so they live in each adapter's ``mapping.toml`` where a reviewer without Python can
read them, and the code that applies them is written, tested and hardened once, for all agencies. The engine
renames and converts fields and translates codes; message-level decisions (which messages a record yields,
who may open sealed fields) stay in the adapter code, next to the explanation of why.

The file format is documented in one place, ``docs/adapters/README.md`` ("Mapping files"). In short::

    format = "xchg-mapping/1"

    [tables.jenis_kelamin]                     # native code = exchange value
    L = "Masculine"
    P = "Feminine"

    [referral.fields]                          # one entry per produced field; dotted targets nest
    case_id = { from = "id_kasus", kind = "id", required = true }
    "identity.prs_Gender" = { from = "wni.jenis_kelamin", table = "jenis_kelamin" }
    vic_TypeOfExploitation = { from = "eksploitasi", kind = "list", table = "jenis_eksploitasi" }
    no_kasus = "case_id"                       # a bare path: the value copied as it is (kind "raw")

    [referral.fields.trafficking_events]       # a list of objects, one per element of a source list
    each = "kronologi"
    fields = { hte_Type = { from = "tahap", table = "tahap" }, hte_Country = { from = "negara" } }

Every file is read through :class:`gateway.settings.Table`, so a misspelt option (``tabel``, ``kind =
"timestamp"``, a table name nobody defined) stops the gateway at start-up with ``config.invalid`` naming the
key, not the first record at 3 a.m. Errors while mapping are :class:`MappingError` (``schema.invalid``, or
``parse.invalid-utf8``) naming the source field, a problem code and the table, never the value: the
records are about trafficked people, and an unmapped code can be a name typed in the wrong column.
"""

from __future__ import annotations

from adapters.fieldmap._fields import (
    KINDS,
    SMALL_CELL,
    SUPPRESSED,
    FieldSpec,
    Formats,
    MappingError,
    Tables,
    convert,
    suppress_count,
)
from adapters.fieldmap._files import FORMAT, MappingFile, load_mapping
from adapters.fieldmap._messages import MessageMap, resolve

__all__ = [
    "FORMAT",
    "KINDS",
    "SMALL_CELL",
    "SUPPRESSED",
    "FieldSpec",
    "Formats",
    "MappingError",
    "MappingFile",
    "MessageMap",
    "Tables",
    "convert",
    "load_mapping",
    "resolve",
    "suppress_count",
]
