"""Reading configuration: one typed TOML table reader, one secret-file reader, one loopback test.

Every configuration file of the project (gateway, notary, cosigner, registry, adapter mappings) and every
``[[sources]]``/``[[sinks]]`` option table is read through :class:`Table`, so they all behave alike:

* each value is read with its type (``str``, ``int`` with bounds, ``float`` with bounds, ``bool``, a path
  relative to the file, a list of strings, a nested table, an array of tables);
* an error is a :class:`~gateway.errors.GatewayError` whose detail starts with the full name of the key
  (``kafka.tls.ca_file: ...``, ``sinks[1].url: ...``), so an operator knows which line to fix;
* a key nobody reads is an error naming it (:meth:`Table.refuse_unknown`): a misspelt or unsupported option
  (``ca_fle``, ``headers`` on a sink that has none) is never silently ignored.

Secrets (passwords, tokens, key passphrases) are never configuration values; they live in files read by
:func:`read_secret`, which refuses unreadable, empty, oversized and multi-line files with the same kind of
message. Nothing here logs a value.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, overload

from gateway.errors import GatewayError, Reason

__all__ = [
    "SECRET_MAX_BYTES",
    "Table",
    "is_loopback",
    "load_toml",
    "overlay",
    "read_passphrase",
    "read_secret",
]

SECRET_MAX_BYTES: Final = 4096

_D = TypeVar("_D")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


_REQUIRED: Final = _Required()


def load_toml(path: Path, *, what: str = "", reason: Reason = Reason.CONFIG_INVALID) -> dict[str, Any]:
    """Read a TOML file; an unreadable or malformed file is a ``GatewayError`` naming it."""
    label = f"{what} {path}" if what else str(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise GatewayError(reason, f"cannot read {label}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GatewayError(reason, f"{label}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise GatewayError(reason, f"{label}: not UTF-8 text") from exc
    except (RecursionError, MemoryError, ValueError) as exc:  # nesting deeper than the parser's stack
        raise GatewayError(reason, f"{label}: not a readable TOML document ({type(exc).__name__})") from exc


def overlay(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: tables are merged key by key, any other value replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


class Table:
    """One table of a configuration document, read key by key with types; errors name the key.

    ``where`` is the table's own name (``""`` for the document, ``"kafka"``, ``"sinks[0]"``); ``base_dir`` is
    the folder relative paths are resolved against (the configuration file's). Reading a key marks it used;
    :meth:`refuse_unknown` then rejects every key that was never read.
    """

    __slots__ = ("_base_dir", "_data", "_reason", "_used", "where")

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        where: str = "",
        base_dir: Path | None = None,
        reason: Reason = Reason.CONFIG_INVALID,
    ) -> None:
        if not isinstance(data, Mapping):
            raise GatewayError(
                reason, f"{where or 'document'}: must be a table/object, got {type(data).__name__}"
            )
        self._data = data
        self.where = where
        self._base_dir = base_dir
        self._reason = reason
        self._used: set[str] = set()

    @classmethod
    def load(cls, path: Path, *, what: str = "", reason: Reason = Reason.CONFIG_INVALID) -> Table:
        """The top-level table of a TOML file; relative paths in it are resolved against its folder."""
        return cls(load_toml(path, what=what, reason=reason), base_dir=path.parent, reason=reason)

    # ---- names and errors ---------------------------------------------------------------------------
    def name(self, key: str) -> str:
        """The full name of ``key`` in this table (``kafka.tls.ca_file``)."""
        if not self.where:
            return key
        return f"{self.where}{key}" if key.startswith("[") else f"{self.where}.{key}"

    def fail(self, key: str, message: str) -> GatewayError:
        """An error about ``key`` of this table (``key=""`` for the table itself)."""
        return GatewayError(self._reason, f"{self.name(key) if key else self.where or 'document'}: {message}")

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[str]:
        return list(self._data)

    def raw(self, key: str, default: Any = None) -> Any:
        """The untyped value (marked used): for values with a shape of their own (checked by the caller)."""
        self._used.add(key)
        return self._data.get(key, default)

    def mark_used(self, *keys: str) -> None:
        """Declare keys handled elsewhere (for example read by a plugin from the same table)."""
        self._used.update(keys)

    def refuse_unknown(self) -> None:
        """Raise for the first key (in file order) that no reader asked for, listing the known ones."""
        for key in self._data:
            if key not in self._used:
                raise self.fail(
                    key, f"unknown setting; expected one of {', '.join(sorted(self._used)) or 'none'}"
                )

    def only(self, *keys: str) -> None:
        """Refuse any key but ``keys`` now, before reading: a misspelt key (``ca`` for ``ca_file``) is then
        reported as unknown rather than as the key it was meant to be being missing."""
        self._used.update(keys)
        self.refuse_unknown()

    # ---- typed readers (a ``default`` makes the key optional; it may be None) -----------------------------
    def _get(self, key: str, default: object) -> tuple[bool, Any]:
        """(present, value); a missing key without a default is an error."""
        self._used.add(key)
        if key not in self._data:
            if default is _REQUIRED:
                raise self.fail(key, "required")
            return False, default
        return True, self._data[key]

    @overload
    def string(self, key: str, *, choices: tuple[str, ...] = ..., empty: bool = ...) -> str: ...
    @overload
    def string(
        self, key: str, default: _D, *, choices: tuple[str, ...] = ..., empty: bool = ...
    ) -> str | _D: ...
    def string(
        self, key: str, default: object = _REQUIRED, *, choices: tuple[str, ...] = (), empty: bool = False
    ) -> object:
        """A string (non-empty unless ``empty``); one of ``choices`` when given."""
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        if not value and not empty:
            raise self.fail(key, "must not be empty")
        if choices and value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    @overload
    def integer(self, key: str, *, low: int | None = ..., high: int | None = ...) -> int: ...
    @overload
    def integer(
        self, key: str, default: _D, *, low: int | None = ..., high: int | None = ...
    ) -> int | _D: ...
    def integer(
        self, key: str, default: object = _REQUIRED, *, low: int | None = None, high: int | None = None
    ) -> object:
        """An integer (not a boolean) in ``low..high`` (inclusive bounds, each optional)."""
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(key, f"must be an integer in {_bounds(low, high)}, got {value!r}")
        return value

    @overload
    def number(
        self, key: str, *, low: float | None = ..., high: float | None = ..., positive: bool = ...
    ) -> float: ...
    @overload
    def number(
        self,
        key: str,
        default: _D,
        *,
        low: float | None = ...,
        high: float | None = ...,
        positive: bool = ...,
    ) -> float | _D: ...
    def number(
        self,
        key: str,
        default: object = _REQUIRED,
        *,
        low: float | None = None,
        high: float | None = None,
        positive: bool = False,
    ) -> object:
        """A finite number (an integer is accepted) in ``low..high``; ``positive``: strictly above 0."""
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be a positive number, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(key, f"must be a number in {_bounds(low, high)}, got {value!r}")
        return float(value)

    @overload
    def boolean(self, key: str) -> bool: ...
    @overload
    def boolean(self, key: str, default: _D) -> bool | _D: ...
    def boolean(self, key: str, default: object = _REQUIRED) -> object:
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    @overload
    def path(self, key: str) -> Path: ...
    @overload
    def path(self, key: str, default: _D) -> Path | _D: ...
    def path(self, key: str, default: object = _REQUIRED) -> object:
        """A file or folder path; a relative one is resolved against the configuration file's folder."""
        present, value = self._get(key, default)
        if not present:
            return value
        return self.resolve(key, value)

    def resolve(self, key: str, value: object) -> Path:
        """``value`` (read from ``key``) as a path relative to the configuration file's folder."""
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a path is required")
        path = Path(value).expanduser()
        if not path.is_absolute() and self._base_dir is not None:
            path = self._base_dir / path
        return path

    @overload
    def strings(self, key: str, *, empty: bool = ...) -> tuple[str, ...]: ...
    @overload
    def strings(self, key: str, default: _D, *, empty: bool = ...) -> tuple[str, ...] | _D: ...
    def strings(self, key: str, default: object = _REQUIRED, *, empty: bool = True) -> object:
        """A list of non-empty strings, as a tuple (``empty=False``: at least one)."""
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, "must be a list of non-empty strings")
        if not value and not empty:
            raise self.fail(key, "must list at least one value")
        return tuple(value)

    @overload
    def paths(self, key: str, *, empty: bool = ...) -> tuple[Path, ...]: ...
    @overload
    def paths(self, key: str, default: _D, *, empty: bool = ...) -> tuple[Path, ...] | _D: ...
    def paths(self, key: str, default: object = _REQUIRED, *, empty: bool = True) -> object:
        """A list of paths (each relative to the configuration file's folder), as a tuple."""
        present, _ = self._get(key, default)
        if not present:
            return default
        return tuple(self.resolve(key, value) for value in self.strings(key, empty=empty))

    def table(self, key: str, *, required: bool = False) -> Table:
        """A nested table (an empty one when absent, unless ``required``)."""
        _, value = self._get(key, _REQUIRED if required else {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table/object, got {type(value).__name__}")
        return Table(value, where=self.name(key), base_dir=self._base_dir, reason=self._reason)

    def tables(self, key: str, *, required: bool = False) -> list[Table]:
        """An array of tables (``[[key]]``); element ``i`` is named ``key[i]``."""
        _, value = self._get(key, _REQUIRED if required else [])
        if not isinstance(value, list):
            raise self.fail(key, "must be an array of tables ([[...]])")
        result = []
        for index, item in enumerate(value):
            where = f"{self.name(key)}[{index}]"
            if not isinstance(item, Mapping):
                raise GatewayError(
                    self._reason, f"{where}: must be a table/object, got {type(item).__name__}"
                )
            result.append(Table(item, where=where, base_dir=self._base_dir, reason=self._reason))
        return result


def read_secret(path: Path, what: str, *, reason: Reason = Reason.CONFIG_INVALID) -> str:
    """A password, token or passphrase from a file: UTF-8, one line, at most 4 KiB.

    Only the line end is removed (a secret may contain spaces). ``what`` names the setting that points at the
    file (``kafka.sasl.password_file``), so the error says where to look; the secret itself never appears.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GatewayError(reason, f"{what}: cannot read {str(path)!r}: {exc.strerror}") from exc
    if len(data) > SECRET_MAX_BYTES:
        raise GatewayError(
            reason, f"{what}: {str(path)!r} is larger than {SECRET_MAX_BYTES} bytes; expected one line"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GatewayError(reason, f"{what}: {str(path)!r} is not UTF-8 text") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise GatewayError(reason, f"{what}: {str(path)!r} is empty")
    if "\n" in text or "\r" in text:
        raise GatewayError(reason, f"{what}: {str(path)!r} must hold the secret on a single line")
    return text


def read_passphrase(path: Path | None, what: str) -> bytes | None:
    """The passphrase of a private key file (``keyfile.invalid`` when unreadable), or None without a file."""
    if path is None:
        return None
    return read_secret(path, what, reason=Reason.KEYFILE_INVALID).encode("utf-8")


def is_loopback(host: str) -> bool:
    """``localhost`` (any case) or a loopback IP address; not a name that merely resolves to one.

    Used to decide that plain HTTP or a listener without authentication does not leave the machine.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bounds(low: float | None, high: float | None) -> str:
    if low is None:
        return f"..{high}"
    if high is None:
        return f"{low}.."
    return f"{low}..{high}"
