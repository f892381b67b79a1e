"""Every benchmark script runs end to end at smoke size and writes its JSON (no timing is asserted).

The figures themselves live in docs/PERFORMANCE.md; this only proves the scripts still work against the
current code, so CI catches a benchmark broken by a refactoring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run(module: str, tmp_path: Path, timeout: float) -> dict[str, object]:
    env = {**os.environ, "XCHG_BENCH_RESULTS": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    document: dict[str, object] = json.loads((tmp_path / f"{module}.json").read_text("utf-8"))
    assert document["quick"] is True
    assert document["machine"]
    return document


def test_contract_bench_runs(tmp_path: Path) -> None:
    document = _run("contract", tmp_path, timeout=300)
    targets = document["targets"]
    assert isinstance(targets, dict)
    assert {"no sealing / raw PyNaCl", "no sealing / JWS joserfc"} <= set(targets)


def test_audit_replay_bench_runs(tmp_path: Path) -> None:
    document = _run("audit_replay", tmp_path, timeout=300)
    medians = document["medians"]
    assert isinstance(medians, dict)
    assert medians
    assert all(m["root_ok"] for m in medians.values())


def test_audit_verify_bench_runs(tmp_path: Path) -> None:
    document = _run("audit_verify", tmp_path, timeout=300)
    runs = document["runs"]
    assert isinstance(runs, list)
    assert {(run["records"], run["workers"]) for run in runs} >= {(False, None), (True, 1)}
    assert all(run["ok"] and run["exit_code"] == 0 for run in runs)
    assert all(run["matched"] == (run["entries"] if run["records"] else None) for run in runs)


@pytest.mark.slow
def test_end_to_end_bench_runs(tmp_path: Path) -> None:
    document = _run("end_to_end", tmp_path, timeout=600)
    runs = document["median_runs"]
    assert isinstance(runs, dict)
    assert all(run["delivered"] == run["events"] for run in runs.values())


def test_in_process_bench_runs(tmp_path: Path) -> None:
    document = _run("in_process", tmp_path, timeout=300)
    medians = document["medians"]
    assert isinstance(medians, dict)
    assert {"publisher", "subscriber"} <= set(medians)


def test_coordination_bench_runs(tmp_path: Path) -> None:
    document = _run("coordination", tmp_path, timeout=300)
    for part in ("record", "group_commit", "projection"):
        run = document[part]
        assert isinstance(run, dict)
        assert run["events"] > 0
    statistics = document["statistics"]
    assert isinstance(statistics, dict)
    assert statistics["tables"] == 6
