"""The tamper campaign (``campaign.py``) on a sample: every mutation of every class — the earlier ones and
issue 17's (unsigned tail, missing checkpoint file, stray, beyond-the-tree and altered leftover files, a
deleted partial tile a signed checkpoint needs, an invalid cosignature at quorum 0) — is caught, by one of
its class's reason codes, and the untouched logs pass. The whole campaign and the 260,000-entry case run by
hand: ``.venv/bin/python -m tests.unit.audit.campaign --large 260000`` (figures in docs/AUDIT.md 14.5)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.audit._synthetic import build_run
from tests.unit.audit.campaign import DEMO, Tally, demo_mutations, run_campaign, synthetic_mutations


def test_every_sampled_mutation_is_caught_by_its_class(tmp_path: Path) -> None:
    tally = Tally()
    run_campaign(DEMO / "log", (DEMO / "notary.vkey").read_text().strip(), demo_mutations(every=9), tally)
    run = build_run(tmp_path)
    run_campaign(
        run.log_dir,
        run.vkey,
        synthetic_mutations(run, every=150),
        tally,
        records=run.records,
        verifier=run.verifier(),
    )
    assert tally.missed == [], tally.table()
    assert tally.caught == tally.tried
    issue_17 = {
        "checkpoint file deleted",
        "checkpoints above N deleted",
        "unsigned tail rewritten",
        "garbage tile beyond the tree",
        "stray or misnamed file",
        "partial tile or bundle altered",
        "needed partial tile deleted",
        "bad cosignature (quorum 0)",
    }
    assert issue_17 <= set(tally.tried)
    assert sum(tally.tried.values()) > 60
