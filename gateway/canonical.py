"""RFC 8785 (JSON Canonicalization Scheme) for the data bytes of every event.

The signed data bytes of an event are the JCS form of its JSON ``data``, so any party, in any language, that
re-serialises the value reproduces the same bytes and the same digest. We use the maintained ``rfc8785``
library rather than a hand-written serializer; its errors are converted to :class:`GatewayError` here.
"""

from __future__ import annotations

from typing import Any, cast

import rfc8785

from gateway.errors import GatewayError, Reason

__all__ = ["canonical_json"]


def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    Raises ``GatewayError(parse.invalid-json)`` for values JCS cannot represent: NaN/Infinity,
    integers outside the IEEE 754 safe range (|n| > 2**53 - 1), lone surrogates, non-string keys.
    """
    try:
        return bytes(rfc8785.dumps(cast(Any, value)))  # rfc8785 checks the type itself
    except rfc8785.CanonicalizationError as exc:
        raise GatewayError(Reason.PARSE_JSON, f"value has no RFC 8785 form: {type(exc).__name__}") from exc
    except (TypeError, ValueError) as exc:
        raise GatewayError(Reason.PARSE_JSON, f"value has no RFC 8785 form: {type(exc).__name__}") from exc
