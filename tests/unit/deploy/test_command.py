"""``gateway deploy render`` writes the files and says what it rendered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli.main import main
from tests.unit.deploy._common import SAMPLE


def test_cli_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "deploy",
            "render",
            "--registry",
            str(SAMPLE),
            "--out",
            str(out),
            "--partitions",
            "3",
            "--k8s-gateways",
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "acls.json",
        "kafka-init.sh",
        "strimzi-topics-users.yaml",
        "k8s-gateways",
    }
    assert os.access(out / "kafka-init.sh", os.X_OK)
    printed = capsys.readouterr().out
    assert "User:xchg-kemlu.kbri-kuching" in printed
    assert "would also cover kemlu.kbri-kuala-lumpur, kemlu.kbri-kuching" in printed
    assert (
        main(
            [
                "deploy",
                "render",
                "--registry",
                str(SAMPLE),
                "--out",
                str(out),
                "--replication",
                "1",
                "--min-insync",
                "2",
            ]
        )
        == 2
    )
