"""Strict JSON parsing at the edge: every byte that comes from outside goes through :func:`parse_json`.

Ambiguous JSON is an attack surface: with duplicate keys two parsers may see two different messages (one
verifies what another acts on); NaN/Infinity are not JSON and have no canonical form; deep nesting exhausts
the stack. Each is rejected with its own reason code before anything else looks at the value.
"""

from __future__ import annotations

import json
from typing import Any, Final

from gateway.errors import GatewayError, Reason

__all__ = ["DEFAULT_MAX_DEPTH", "depth_exceeds", "parse_json"]

DEFAULT_MAX_DEPTH = 32


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFiniteError(ValueError):
    pass


class _OutOfRangeError(ValueError):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NonFiniteError("a number overflows IEEE 754 double precision")
    return value


_SAFE_INTEGER: Final = 2**53 - 1


def _safe_int(text: str) -> int:
    if len(text) > 17 or abs(value := int(text)) > _SAFE_INTEGER:  # also bounds int() work on long digit runs
        raise _OutOfRangeError
    return value


def depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative depth check (no recursion): True when containers nest deeper than ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node)
    return False


def parse_json(raw: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``raw`` as strict JSON (RFC 8259 + I-JSON restrictions) or raise ``GatewayError``.

    Reason codes: ``parse.invalid-utf8``, ``parse.invalid-json``, ``parse.duplicate-key`` (the key name is
    not echoed: keys of sealed payloads could be sensitive), ``parse.non-finite-number``, ``parse.too-deep``.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GatewayError(Reason.PARSE_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise GatewayError(Reason.PARSE_JSON, "byte order mark is not allowed")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_safe_int,
        )
    except _DuplicateKeyError as exc:
        raise GatewayError(Reason.PARSE_DUPLICATE_KEY, "an object has a duplicate member name") from exc
    except _NonFiniteError as exc:
        raise GatewayError(Reason.PARSE_NON_FINITE, str(exc)) from exc
    except _OutOfRangeError as exc:
        raise GatewayError(Reason.PARSE_JSON, "an integer is outside +-(2**53-1) (I-JSON, RFC 7493)") from exc
    except RecursionError as exc:
        raise GatewayError(Reason.PARSE_TOO_DEEP, f"nesting deeper than {max_depth}") from exc
    except json.JSONDecodeError as exc:
        raise GatewayError(Reason.PARSE_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if depth_exceeds(value, max_depth):
        raise GatewayError(Reason.PARSE_TOO_DEEP, f"nesting deeper than {max_depth}")
    return value
