"""Structured logging for the gateway: JSON lines for machines, a readable console for people.

The rule: never log sealed or personal data. Log ids, types, reason codes (event id, case/alert id only where
an operator needs it, type, topic, partition, offset, ``Reason`` codes, counts, durations), never ``data``,
sealed blocks, opened fields, record values or secrets. Logs leave the protected store (shipped to a log
platform, read by support staff), so a victim's name in a log line is a data incident.

:func:`configure_logging` is called once by the CLI entry point; library modules only do
``structlog.get_logger(__name__)``. Per-event context is bound with
``structlog.contextvars.bind_contextvars(event_id=..., party=..., topic=..., partition=..., offset=...)`` and
carried into every line logged while handling that event (``merge_contextvars`` runs first).

Redaction is defence in depth, not the control: any key named ``data``, ``payload``, ``sealed``,
``unsealed``, ``identity``, ``contact``, ``health``, ``child``, ``perpetrator``, ``plaintext``, ``body``,
``value``, ``password``, ``passphrase`` or ``secret``, or starting with ``prs_``/``per_`` (HTCDS person
fields), has its value replaced by ``"[redacted]"``, at any depth of nested dicts and lists (copies; the
caller's objects are not modified). It cannot see personal data inside a free-text message or an exception
text, which is why the rule above still holds.

Libraries that log through the standard ``logging`` module (aiokafka, aiohttp) are routed through the same
processors and renderer, so the output stays one JSON object per line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.errors import GatewayError, Reason

__all__ = ["REDACTED", "REDACTED_KEYS", "REDACTED_PREFIXES", "configure_logging", "redact"]

REDACTED: Final = "[redacted]"
REDACTED_KEYS: Final = frozenset(
    {
        "data",
        "payload",
        "sealed",
        "unsealed",
        "identity",
        "contact",
        "health",
        "child",
        "perpetrator",
        "plaintext",
        "body",
        "value",
        "password",
        "passphrase",
        "secret",
    }
)
REDACTED_PREFIXES: Final = ("prs_", "per_")

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """Marks the root handler this module installs, so a second configuration replaces it."""


def _denied(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in REDACTED_KEYS or lowered.startswith(REDACTED_PREFIXES)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 32:  # a cycle or absurd nesting: nothing below is worth logging
        return REDACTED
    if isinstance(value, Mapping):
        return {k: REDACTED if _denied(k) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, depth + 1) for item in value]
    return value


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace denied keys' values with ``"[redacted]"``, recursively."""
    for key, value in list(event_dict.items()):
        if _denied(key):
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple | set | frozenset):
            event_dict[key] = _scrub(value)
    return event_dict


def configure_logging(
    *, json_output: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog (and the standard ``logging`` root) for this process. Safe to call again.

    ``json_output=None`` chooses JSON lines unless ``stream`` (default ``sys.stderr``) is a terminal.
    ``level`` is one of debug, info, warning, error, critical; anything else is ``CONFIG_INVALID``.
    """
    levelno = _LEVELS.get(level.lower()) if isinstance(level, str) else None
    if levelno is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"log level {level!r} is not one of {', '.join(_LEVELS)}")
    out = stream if stream is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    as_json = (not tty) if json_output is None else json_output

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        # format_exc_info turns exc_info into an "exception" string field; the console renderer does that
        # itself (prettier) and warns when it finds it already done.
        tail: list[Processor] = [structlog.processors.format_exc_info, redact]
        renderer = structlog.processors.JSONRenderer()
    else:
        tail = [redact]
        renderer = structlog.dev.ConsoleRenderer(colors=tty)

    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: a second configure_logging (tests, a CLI re-run in-process) must reach loggers that
        # modules created at import time.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = _GatewayHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    # aiokafka's DEBUG messages print whole records ("Sending (key=... value=...)"): record values are case
    # data, so its loggers never go below INFO, whatever level the operator asks for.
    logging.getLogger("aiokafka").setLevel(max(levelno, logging.INFO))
