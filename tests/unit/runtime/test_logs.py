"""Logging configuration: JSON lines, bound context carried, personal data redacted at any depth."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError, Reason
from gateway.runtime.logs import REDACTED, REDACTED_KEYS, configure_logging

SENTINEL = "Siti"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    for handler in list(logging.getLogger().handlers):
        if type(handler).__module__ == "gateway.runtime.logs":
            logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_ids_and_redact_personal_data() -> None:
    out = io.StringIO()
    configure_logging(json_output=True, stream=out)
    structlog.contextvars.bind_contextvars(
        event_id="0b7d2a1e-1", party="kemensos", topic="xchg.kemensos.case.v1", partition=2, offset=41
    )
    log = structlog.get_logger("gateway.test")
    log.info(
        "event.accepted",
        type="id.trafficking.case.referral",
        payload={"identity": {"prs_FirstName": SENTINEL}},
        extra={"case": {"prs_FirstName": SENTINEL, "per_Phone": "+60123"}, "items": [{"contact": SENTINEL}]},
    )
    text = out.getvalue()
    assert SENTINEL not in text
    assert "+60123" not in text
    [line] = lines(out)
    assert line["event"] == "event.accepted"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert (line["event_id"], line["party"], line["topic"], line["partition"], line["offset"]) == (
        "0b7d2a1e-1",
        "kemensos",
        "xchg.kemensos.case.v1",
        2,
        41,
    )
    assert line["type"] == "id.trafficking.case.referral"
    assert line["payload"] == REDACTED
    assert line["extra"] == {
        "case": {"prs_FirstName": REDACTED, "per_Phone": REDACTED},
        "items": [{"contact": REDACTED}],
    }


def test_redaction_does_not_modify_the_callers_objects() -> None:
    out = io.StringIO()
    configure_logging(json_output=True, stream=out)
    record = {"prs_FirstName": SENTINEL}
    structlog.get_logger().warning("x", extra=record)
    assert record == {"prs_FirstName": SENTINEL}


def test_level_filter_exceptions_and_idempotence() -> None:
    first = io.StringIO()
    configure_logging(json_output=True, stream=first, level="info")
    out = io.StringIO()
    configure_logging(json_output=True, stream=out, level="warning")  # replaces, does not add
    log = structlog.get_logger()
    log.info("dropped")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("sink.failed", reason=Reason.SINK_FAILED)
    logging.getLogger("aiokafka").warning("foreign %s", "line")
    assert first.getvalue() == ""
    records = lines(out)
    assert [r["event"] for r in records] == ["sink.failed", "foreign line"]
    assert "RuntimeError: boom" in records[0]["exception"]
    assert records[0]["reason"] == "sink.failed"
    assert records[1]["logger"] == "aiokafka"
    assert sum(type(h).__module__ == "gateway.runtime.logs" for h in logging.getLogger().handlers) == 1


def test_console_renderer_when_not_json() -> None:
    out = io.StringIO()
    configure_logging(json_output=False, stream=out)
    structlog.get_logger().info("hello", secret="hunter2", kid="kemensos-sig-2026a")
    text = out.getvalue()
    assert "hello" in text
    assert "kemensos-sig-2026a" in text
    assert "hunter2" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_non_tty_stream_defaults_to_json() -> None:
    out = io.StringIO()  # isatty() is False
    configure_logging(stream=out)
    structlog.get_logger().info("ok")
    assert lines(out)[0]["event"] == "ok"


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(GatewayError) as caught:
        configure_logging(level="verbose", stream=io.StringIO())
    assert caught.value.reason == Reason.CONFIG_INVALID


_plain_keys = st.text(alphabet="abcdefgh_", min_size=1, max_size=6).filter(
    lambda k: k.lower() not in REDACTED_KEYS and not k.lower().startswith(("prs_", "per_"))
)
_denied_keys = st.sampled_from(sorted(REDACTED_KEYS)) | st.sampled_from(
    ["prs_FirstName", "per_Address", "PRS_x"]
)
_safe_leaf = st.integers() | st.sampled_from(["ok", "sig.invalid"])


def _trees() -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return (
            st.lists(children, max_size=3)
            | st.dictionaries(_plain_keys, children, max_size=3)
            | st.dictionaries(_denied_keys, st.just(SENTINEL) | children, min_size=1, max_size=2)
        )

    return st.recursive(_safe_leaf, extend, max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(tree=st.dictionaries(_plain_keys | _denied_keys, _trees(), max_size=4))
def test_values_under_denied_keys_never_reach_the_output(tree: dict[str, Any]) -> None:
    out = io.StringIO()
    configure_logging(json_output=True, stream=out)
    structlog.get_logger().info("fuzz", **tree)
    assert SENTINEL not in out.getvalue()
