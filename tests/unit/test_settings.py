"""The one configuration reader (gateway/settings.py): typed values, errors naming the key, no silent keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import GatewayError, Reason
from gateway.settings import Table, is_loopback, overlay, read_passphrase, read_secret


def _detail(call: object) -> str:
    assert callable(call)
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.reason is Reason.CONFIG_INVALID
    return caught.value.detail


def test_typed_readers_return_values_and_defaults(tmp_path: Path) -> None:
    table = Table(
        {"name": "kemensos", "port": 8080, "ratio": 2, "on": True, "dir": "state", "tags": ["a", "b"]},
        where="ops",
        base_dir=tmp_path,
    )
    assert table.string("name") == "kemensos"
    assert table.integer("port", low=1, high=65535) == 8080
    assert table.number("ratio") == 2.0
    assert table.boolean("on") is True
    assert table.path("dir") == tmp_path / "state"
    assert table.strings("tags") == ("a", "b")
    assert table.string("absent", None) is None
    assert table.integer("absent_int", 5) == 5
    table.refuse_unknown()  # every key was read


@pytest.mark.parametrize(
    ("document", "read", "expected"),
    [
        ({"port": "80"}, lambda t: t.integer("port"), "ops.port: must be an integer, got '80'"),
        ({"port": True}, lambda t: t.integer("port"), "ops.port: must be an integer, got True"),
        (
            {"port": 0},
            lambda t: t.integer("port", low=1, high=9),
            "ops.port: must be an integer in 1..9, got 0",
        ),
        ({"x": float("nan")}, lambda t: t.number("x"), "ops.x: must be a number, got nan"),
        ({"x": 0}, lambda t: t.number("x", positive=True), "ops.x: must be a positive number, got 0"),
        ({"on": "yes"}, lambda t: t.boolean("on"), "ops.on: must be true or false, got 'yes'"),
        ({"name": 3}, lambda t: t.string("name"), "ops.name: must be a string, got int"),
        ({"name": ""}, lambda t: t.string("name"), "ops.name: must not be empty"),
        ({"m": "c"}, lambda t: t.string("m", choices=("a", "b")), "ops.m: 'c' is not one of a, b"),
        ({"tags": ["a", ""]}, lambda t: t.strings("tags"), "ops.tags: must be a list of non-empty strings"),
        ({"tls": "x"}, lambda t: t.table("tls"), "ops.tls: must be a table/object, got str"),
        ({"s": {}}, lambda t: t.tables("s"), "ops.s: must be an array of tables ([[...]])"),
        ({}, lambda t: t.string("name"), "ops.name: required"),
        ({"dir": ""}, lambda t: t.path("dir"), "ops.dir: a path is required"),
    ],
)
def test_every_error_names_the_key(document: dict[str, object], read: object, expected: str) -> None:
    table = Table(document, where="ops")
    assert _detail(lambda: read(table)) == expected  # type: ignore[operator]


def test_nested_tables_and_arrays_name_their_place(tmp_path: Path) -> None:
    doc = Table({"kafka": {"tls": {"ca_fle": "x"}}, "sinks": [{"url": 1}]}, base_dir=tmp_path)
    tls = doc.table("kafka").table("tls")
    assert _detail(tls.refuse_unknown).startswith("kafka.tls.ca_fle: unknown setting")
    sink = doc.tables("sinks")[0]
    assert _detail(lambda: sink.string("url")) == "sinks[0].url: must be a string, got int"
    assert doc.table("absent").keys() == []


def test_a_key_nobody_read_is_refused_and_only_refuses_before_reading() -> None:
    table = Table({"url": "http://x", "headers": {"A": "b"}}, where="sinks[1]")
    table.string("url")
    assert _detail(table.refuse_unknown) == "sinks[1].headers: unknown setting; expected one of url"
    misspelt = Table({"ca": "x"}, where="kafka.tls")
    assert _detail(lambda: misspelt.only("ca_file", "check_hostname")).startswith(
        "kafka.tls.ca: unknown setting"
    )


def test_relative_paths_are_resolved_against_the_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "gateway.toml"
    config.parent.mkdir()
    config.write_text('data_dir = "state"\nkeys = ["a.pem", "/abs/b.pem"]\n', encoding="utf-8")
    table = Table.load(config)
    assert table.path("data_dir") == config.parent / "state"
    assert table.paths("keys") == (config.parent / "a.pem", Path("/abs/b.pem"))


def test_a_broken_file_is_an_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("x = [\n", encoding="utf-8")
    assert str(broken) in _detail(lambda: Table.load(broken))
    assert "cannot read" in _detail(lambda: Table.load(tmp_path / "missing.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    assert _detail(lambda: Table.load(binary)).endswith("binary.toml: not UTF-8 text")


def test_read_secret_keeps_spaces_and_refuses_what_is_not_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret with spaces \n", encoding="utf-8")
    assert read_secret(secret, "kafka.sasl.password_file") == "s3cret with spaces "
    for content, problem in ((b"\n", "is empty"), (b"a\nb\n", "single line"), (b"\xff", "not UTF-8"),
                             (b"x" * 5000, "larger than 4096")):  # fmt: skip
        secret.write_bytes(content)
        detail = _detail(lambda: read_secret(secret, "kafka.sasl.password_file"))
        assert detail.startswith("kafka.sasl.password_file: ")
        assert problem in detail
    assert "cannot read" in _detail(lambda: read_secret(tmp_path / "absent", "token_file"))


def test_read_passphrase_is_a_keyfile_error_and_optional(tmp_path: Path) -> None:
    assert read_passphrase(None, "keys.passphrase_file") is None
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse\r\n", encoding="utf-8")
    assert read_passphrase(phrase, "keys.passphrase_file") == b"correct horse"
    with pytest.raises(GatewayError) as caught:
        read_passphrase(tmp_path / "absent", "keys.passphrase_file")
    assert caught.value.reason is Reason.KEYFILE_INVALID


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("LOCALHOST", True), ("localhost.", True), ("127.0.0.1", True),
     ("127.9.9.9", True), ("::1", True), ("[::1]", True), ("10.0.0.1", False), ("kafka.example", False),
     ("localhost.example", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_overlay_merges_tables_and_replaces_values() -> None:
    base = {"kafka": {"bootstrap_servers": ["a:1"], "tls": {"ca_file": "ca"}}, "party": "iom"}
    merged = overlay(base, {"kafka": {"tls": {"check_hostname": False}}, "party": "kemensos"})
    assert merged == {
        "kafka": {"bootstrap_servers": ["a:1"], "tls": {"ca_file": "ca", "check_hostname": False}},
        "party": "kemensos",
    }
    assert base["party"] == "iom"  # the base is not changed


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=5), max_size=6))
def test_reading_every_key_leaves_nothing_unknown(document: dict[str, object]) -> None:
    table = Table(document, where="t")
    for key in document:
        table.raw(key)
    table.refuse_unknown()
