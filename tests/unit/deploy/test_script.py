"""``kafka-init.sh`` (``gateway.deploy.script``) does exactly what the derivation says.

The script runs against stub ``kafka-*.sh`` tools that record their argv; the calls are parsed back.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy.acls import Rendered, render
from gateway.deploy.script import to_shell_script
from tests.unit.deploy._common import BASH, SAMPLE, Acl, as_tuples

STUB = """#!/usr/bin/env bash
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\1\\0'; } >>"$XCHG_STUB_LOG"
"""


def run_init_script(
    script: str, tmp_path: Path, rendered: Rendered, *, password: str | None = None
) -> list[list[str]]:
    """Run kafka-init.sh against stub kafka-*.sh tools; return the argv of every call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    scram = tmp_path / "scram"
    scram.mkdir()
    for user in rendered.users:
        (scram / user.username).write_text(
            (password or f"pw-{user.username}-0123456789abcdef").replace(".", "_") + "\n"
        )
    (tmp_path / "kafka-init.sh").write_text(script)
    log = tmp_path / "calls"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_BIN": str(bin_dir),
        "XCHG_STUB_LOG": str(log),
        "XCHG_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "XCHG_ADMIN_CONFIG": "/etc/xchg/admin.properties",
        "XCHG_SCRAM_DIR": str(scram),
    }
    result = subprocess.run(
        [BASH, str(tmp_path / "kafka-init.sh")], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    calls: list[list[str]] = []
    current: list[str] = []
    for field in log.read_text().split("\0")[:-1]:
        if field == "\1":
            calls.append(current)
            current = []
        else:
            current.append(field)
    return calls


def _values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_shell_script_does_exactly_the_same(case: tuple[Registry, Rendered], tmp_path: Path) -> None:
    _, rendered = case
    calls = run_init_script(to_shell_script(rendered), tmp_path, rendered)
    for call in calls:
        assert call[1:5] == [
            "--bootstrap-server",
            "kafka-1:9093,kafka-2:9093",
            "--command-config",
            "/etc/xchg/admin.properties",
        ]
    topics = {}
    users = {}
    acls: set[Acl] = set()
    for tool, *argv in calls:
        if tool == "kafka-topics.sh":
            assert {"--create", "--if-not-exists"} <= set(argv)
            (name,) = _values(argv, "--topic")
            topics[name] = (
                int(_values(argv, "--partitions")[0]),
                int(_values(argv, "--replication-factor")[0]),
                dict(c.split("=", 1) for c in _values(argv, "--config")),
            )
        elif tool == "kafka-configs.sh":
            (user,) = _values(argv, "--entity-name")
            users[user] = _values(argv, "--add-config")[0]
        else:
            assert tool == "kafka-acls.sh"
            assert _values(argv, "--resource-pattern-type") == ["literal"]
            assert "prefixed" not in " ".join(argv).lower()
            (principal,) = _values(argv, "--allow-principal")
            resources = [("topic", n) for n in _values(argv, "--topic")] + [
                ("group", n) for n in _values(argv, "--group")
            ]
            if "--cluster" in argv:
                resources.append(("cluster", "kafka-cluster"))
            for operation in _values(argv, "--operation"):
                acls.update((principal, kind, name, operation) for kind, name in resources)
    assert acls == as_tuples(rendered)
    assert topics == {t.name: (t.partitions, t.replication, dict(t.config)) for t in rendered.topics}
    for user in rendered.users:
        expected = f"pw-{user.username}-0123456789abcdef".replace(".", "_")
        assert users[user.username] == f"SCRAM-SHA-512=[iterations=8192,password={expected}]"


def test_shell_script_refuses_weak_or_missing_passwords(tmp_path: Path, schemas: SchemaStore) -> None:
    rendered = render(Registry.load(SAMPLE), schemas)
    with pytest.raises(AssertionError, match="24\\+ characters"):
        run_init_script(to_shell_script(rendered), tmp_path, rendered, password="short]")
