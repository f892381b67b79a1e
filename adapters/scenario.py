"""The demo scenario (``gateway demo``): Kemensos, KBRI Kuching and IOM exchanging through their own systems.

Synthetic, after the source article (VIVA, 26 August 2020): IOM delivers 2,500 hygiene kits to Pos Pemulangan
Pontianak at the ministry's request; KBRI Kuching refers a group of trafficked Indonesian workers from
Sarawak and plans their return through Entikong; Kemensos' RPTC Pontianak admits them and reports its
capacity; IOM records psychoeducation; a case is closed.

Everything runs through the real code paths, on an embedded Kafka-protocol broker:

* three agency systems are SIMULATED (their real systems are not public): the Kemlu citizen-protection case
  API, the Kemensos case system and the IOM case system (``adapters/simulators``);
* one gateway per party, configured by generated TOML files exactly as ``gateway run`` would load them, with
  the agency adapters as sources and sinks (Kemlu: case-API poller and updates sink; Kemensos: CSV drops in
  Indonesian and case-system sink; IOM: HTCDS v2.0 Excel exports and HTCDS referral sink);
* the steps are native actions: a case in the Kemlu API, CSV files in Kemensos' drop folder, an Excel export
  in IOM's folder, a JSON-lines file for the closure.

An audit notary (``gateway.audit.notary``) runs alongside the gateways and logs every record of every
exchange topic; at the end the scenario waits for it to sign a checkpoint covering everything and replays the
log against the broker as ``gateway audit verify`` does, printing the checkpoint and the verdict.

Case coordination (gateway/coordination) runs in Kemensos' gateway with the proposal SOP and a demo clock
that jumps ahead: Kemensos answers all referrals but one in time, a day later the unanswered one is escalated
by a signed ``alert.sop-overdue`` (KBRI receives it) and resolved by the late answer; RPTC Pontianak's 4
free beds raise the shelter-capacity step; the month's statistics, with suppressed cells, are printed,
published as ``alert.statistics`` and written as JSON/CSV/HTML under ``kemensos/state/reports``.

Every recipient signs a delivery receipt for each event it finishes; the scenario waits until every event
has one from each running recipient, prints per sender what each recipient reported, and has IOM's gateway
publish a forged receipt, which Kemensos dead-letters (``receipt.unknown-event``).

It prints a timeline of deliveries, a per-party summary and what each simulated system received, then keeps
``/healthz``, ``/readyz`` and ``/metrics`` up until interrupted (``once=True`` returns instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from adapters.simulators.iom import IomCaseSystemSimulator, sample_rows, write_htcds_export
from adapters.simulators.kemensos import KemensosCaseSystemSimulator, write_sample_drops
from adapters.simulators.kemlu import KemluCaseApiSimulator, sarawak_cases
from gateway.audit.auditor import Auditor
from gateway.audit.kafka_records import audit_kafka
from gateway.audit.notary import Notary, NotaryConfig
from gateway.audit.note import verifier_from_vkey
from gateway.bus.kafka import EMBEDDED_CLIENT_TIMINGS, KafkaSettings
from gateway.bus.receipts import summarise
from gateway.bus.registry_feed import publish_version
from gateway.bus.subscriber import Route
from gateway.contract.instants import format_utc
from gateway.contract.keys import SigningKey, write_private_pem
from gateway.contract.policy import CHECKPOINT_TOPIC, NOTARISED_TOPICS, REGISTRY_TOPIC
from gateway.contract.receipt import RECEIPT_TYPE, receipt_data
from gateway.contract.registry_chain import Anchor
from gateway.contract.verify import Accepted
from gateway.coordination.clock import OffsetClock
from gateway.coordination.statistics import month_of
from gateway.errors import Reason
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.runtime.signals import stop_on_signals
from gateway.sandbox.broker import EmbeddedBroker
from gateway.sandbox.deployment import ANCHOR_FILE, create_sandbox, sandbox_registry
from gateway.sandbox.memory import MemorySink

__all__ = ["KBRI", "PARTIES", "ScenarioResult", "run_scenario"]

KBRI, KEMENSOS, IOM = "kemlu.kbri-kuching", "kemensos", "iom"
PARTIES = (KBRI, KEMENSOS, IOM)
#: Client timings the embedded broker needs (see gateway.bus.kafka.EMBEDDED_CLIENT_TIMINGS).
_EMBEDDED_KAFKA: dict[str, Any] = {**EMBEDDED_CLIENT_TIMINGS, "enable_idempotence": False}
_CLOSURE = {
    "case_id": "KBRI-KCH-2020-000123",
    "cas_Status": "Closed",
    "closure_reason_code": "reintegrated",
    "closed_on": "2020-10-01",
}


@dataclass
class ScenarioResult:
    """What happened: per-party counters and what each simulated agency system received."""

    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    kemensos_cases: list[dict[str, Any]] = field(default_factory=list)
    kemlu_updates: list[dict[str, Any]] = field(default_factory=list)
    iom_referrals: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    deliveries: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Per sender, per recipient: its events delivered / rejected / dead-lettered, by signed receipts."""
    forged_receipt: str | None = None
    """The reason code the forged receipt was dead-lettered with at its would-be sender."""
    checkpoint: bytes = b""
    """The notary's last signed checkpoint note (it covers every record of the run)."""
    audit: dict[str, Any] | None = None
    """The JSON report of the audit replayed against the broker at the end."""
    notary_log: Path | None = None
    sop_alerts: list[dict[str, Any]] = field(default_factory=list)
    """The SOP alerts Kemensos' gateway published (overdue and resolved)."""
    statistics: dict[str, Any] | None = None
    """The month's ``alert.statistics`` payload."""


class _Timeline(MemorySink):
    """Observes every event a gateway accepts and prints one timeline line (ids, types, never contents)."""

    def __init__(self, party: str, started: float, out: TextIO, lines: list[str]) -> None:
        super().__init__(name=f"{party}-timeline")
        self.party, self._started, self._out, self._lines = party, started, out, lines

    async def deliver(self, accepted: Accepted) -> None:
        first = (accepted.event.source, accepted.event.id) not in self.log
        await super().deliver(accepted)
        if first:
            event = accepted.event
            opened = "sealed fields opened" if accepted.unsealed else "clear fields only"
            kind = event.type.removeprefix("id.trafficking.")
            elapsed = time.monotonic() - self._started
            route = f"{self.party:<19} <- {event.source:<19} {kind:<26}"
            line = f"  +{elapsed:6.2f}s  {route} {event.subject} ({opened})"
            self._lines.append(line)
            print(line, file=self._out, flush=True)


async def run_scenario(  # noqa: PLR0915 - the scenario reads top to bottom, one step per statement
    *, directory: Path | None = None, once: bool = False, out: TextIO = sys.stdout, patience: float = 90.0
) -> ScenarioResult:
    """Play the scenario; ``patience`` bounds each wait for deliveries (seconds)."""
    result = ScenarioResult()
    with contextlib.ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xchg-demo-")))
        async with (
            EmbeddedBroker() as broker,
            KemluCaseApiSimulator(cases=[]) as kemlu_api,
            KemensosCaseSystemSimulator() as kemensos_system,
            IomCaseSystemSimulator() as iom_system,
        ):
            kafka = KafkaSettings(bootstrap_servers=(broker.bootstrap_servers,), **_EMBEDDED_KAFKA)
            sandbox = create_sandbox(
                root,
                PARTIES,
                bootstrap_servers=kafka.bootstrap_servers,
                settings={"kafka": dict(_EMBEDDED_KAFKA), "shutdown": {"timeout_seconds": 10}},
                per_party=_adapter_settings(kemlu_api.url, kemensos_system.url, iom_system.url),
            )
            started = time.monotonic()
            await _publish_registry(root, kafka, out)
            print("Simulated agency systems (stand-ins for systems that are not public):", file=out)
            print(f"  Kemlu case API {kemlu_api.url}   Kemensos case system {kemensos_system.url}   "
                  f"IOM case system {iom_system.url}", file=out)  # fmt: skip
            print(
                f"Embedded Kafka-protocol broker {broker.bootstrap_servers}; deployment in {root}", file=out
            )
            gateways: dict[str, Gateway] = {}
            observers: dict[str, _Timeline] = {}
            clock = OffsetClock()  # Kemensos' coordination clock: real time, which the demo jumps ahead
            notary = await _start_notary(root, kafka, out)
            try:
                for party in PARTIES:
                    config = GatewayConfig.load(sandbox[party].config)
                    observers[party] = _Timeline(party, started, out, result.timeline)
                    gateways[party] = Gateway(config, kafka=kafka, routes=[Route(observers[party])],
                                              clock=clock)  # fmt: skip
                    await gateways[party].start()
                    print(
                        f"  gateway {party:<19} http://127.0.0.1:{gateways[party].ops_port}/status "
                        "(also /readyz, /metrics)",
                        file=out,
                    )
                print("\nTimeline (receiver <- publisher):", file=out, flush=True)

                _say(
                    out,
                    started,
                    "IOM exports 2,500 hygiene kits for Pos Pemulangan Pontianak and a first kit",
                )
                write_htcds_export(
                    _inbox(root / IOM / "htcds") / "iom-export-2020-08-26.xlsx",
                    _iom_rows(psychoeducation=False),
                )
                _say(
                    out,
                    started,
                    "KBRI Kuching records trafficked plantation workers in the citizen-protection API",
                )
                for case in sarawak_cases():
                    kemlu_api.add_case(case)
                await _until(lambda: len(kemensos_system.cases) >= 2, patience, "referrals at Kemensos")

                _say(
                    out,
                    started,
                    "Kemensos drops CSVs: group arrival at Pos Pemulangan, RPTC admissions, capacity",
                )
                csv_dir = sandbox[KEMENSOS].drop_dir.parent / "kemensos-csv"
                _inbox(csv_dir)
                write_sample_drops(
                    csv_dir,
                    ("kedatangan_2020-08-18.csv", "penerimaan_2020-08-19.csv", "kapasitas_2020-08-26.csv"),
                )
                await _until(
                    lambda: len(kemlu_api.updates) >= 2, patience, "admissions at the Kemlu case API"
                )

                _say(out, started, "IOM exports psychoeducation sessions")
                write_htcds_export(
                    _inbox(root / IOM / "htcds") / "iom-export-2020-09-02.xlsx",
                    _iom_rows(psychoeducation=True),
                )
                _say(out, started, "Kemensos closes case KBRI-KCH-2020-000123")
                _drop_jsonl(
                    sandbox[KEMENSOS].drop_dir,
                    "penutupan.jsonl",
                    {"type": "id.trafficking.case.closure", "data": _CLOSURE},
                )
                closed = ("PENUTUPAN_KASUS",)
                await _until(lambda: any(u.body.get("jenis_pembaruan") in closed for u in kemlu_api.updates),
                             patience, "the closure at the Kemlu case API")  # fmt: skip
                await _until(
                    lambda: _settled(gateways, observers), patience, "every event to reach its readers"
                )

                await _coordination(
                    gateways, observers, sandbox[KEMENSOS].drop_dir, clock, result, out, started, patience
                )
                result.deliveries, result.forged_receipt = await _receipts(gateways, patience, out, started)
                result.summary = _summary(gateways)
                result.kemensos_cases = [dict(body) for body in kemensos_system.cases.values()]
                result.kemlu_updates = [update.body for update in kemlu_api.updates]
                result.iom_referrals = [r.body for r in iom_system.referrals]
                _print_result(result, out)
                await _audit(notary, kafka, root, result, out, kept=directory is not None)
                if not once:
                    print("\nOperations endpoints stay up; press Ctrl-C to stop.", file=out, flush=True)
                    await _until_interrupted()
            finally:
                await _stop(gateways, notary)
    return result


async def _stop(gateways: dict[str, Gateway], notary: Notary) -> None:
    """Gateways first (each in its shutdown order), then the notary, which signs what it logged last."""
    for gateway in gateways.values():
        await gateway.stop()
    await notary.stop()


async def _publish_registry(root: Path, kafka: KafkaSettings, out: TextIO) -> None:
    """The maintainers publish version 1 of the signed registry on ``xchg.registry.v1``: every gateway and
    the notary follow that topic (and would apply a version 2 live)."""
    version = sandbox_registry(root)
    await publish_version(kafka, version)
    signers = ", ".join(version.signers())
    print(f"Registry {version.label()}: {len(version.registry.parties)} parties, signed by "
          f"{len(version.signers())} of {len(version.maintainers.keys)} maintainers ({signers}), "
          f"published on {REGISTRY_TOPIC}; anchor {root / ANCHOR_FILE}", file=out)  # fmt: skip


async def _start_notary(root: Path, kafka: KafkaSettings, out: TextIO) -> Notary:
    """The deployment's audit notary: its own key, the sandbox registry, its log under ``root/notary``."""
    folder = root / "notary"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = folder / "notary.pem"
    if not key_file.exists():
        write_private_pem(key_file, SigningKey.generate().to_pem())
    config = NotaryConfig(
        deployment="demo",
        registry_anchor=root / ANCHOR_FILE,
        log_dir=folder / "log",
        key_file=key_file,
        kafka=kafka,
        http_port=0,
        refresh_seconds=1.0,
    )
    notary = Notary(config)
    await notary.start()
    (folder / "notary.vkey").write_text(notary.vkey + "\n", encoding="utf-8")
    print(f"  notary  {notary.origin}  http://127.0.0.1:{notary.http_port}/checkpoint", file=out)
    return notary


async def _audit(
    notary: Notary, kafka: KafkaSettings, root: Path, result: ScenarioResult, out: TextIO, *, kept: bool
) -> None:
    """Wait for a checkpoint covering every record, then replay log + topics as ``gateway audit verify``."""
    result.notary_log = notary.config.log_dir
    result.checkpoint = await notary.sync()
    keys = [verifier_from_vkey(notary.vkey)]
    auditor = Auditor(
        notary.config.log_dir, notary_keys=keys, registry_anchor=Anchor.load(root / ANCHOR_FILE),
        schemas_factory=lambda: notary.schemas,
    )  # fmt: skip
    auditor.load_stored_checkpoints()
    report = await audit_kafka(auditor, kafka, pattern=NOTARISED_TOPICS, checkpoint_topic=CHECKPOINT_TOPIC)
    result.audit = report.to_json()
    records = report.records or {}
    print("\nAudit log: the notary's last signed checkpoint", file=out)
    note = result.checkpoint.decode("utf-8")
    print("".join(f"  | {line}\n" for line in note.splitlines()), end="", file=out)
    verdict = "OK" if report.ok else f"FAIL ({len(report.findings)} findings)"
    print(
        f"  audit verify: {verdict} - {report.log_size} leaves, {records.get('matched', 0)} of "
        f"{records.get('read', 0)} Kafka records matched, signed up to size {report.signed_size}",
        file=out,
    )
    vkey = root / "notary" / "notary.vkey"
    if kept:  # the command needs the folder: print it only when the folder outlives the demo
        print(
            f"  offline: gateway audit verify --log {notary.config.log_dir} --vkey {vkey} "
            f"--registry-anchor {root / ANCHOR_FILE}",
            file=out,
            flush=True,
        )
    else:
        print(
            "  offline: run the demo with --dir DIR to keep the log, then audit it with gateway audit verify "
            "(the temporary folder is removed when the demo ends)",
            file=out,
            flush=True,
        )


async def _coordination(  # noqa: PLR0917 - the scenario's state, passed on as it is
    gateways: dict[str, Gateway],
    observers: dict[str, _Timeline],
    drop_dir: Path,
    clock: OffsetClock,
    result: ScenarioResult,
    out: TextIO,
    started: float,
    patience: float,
) -> None:
    """The SOP and statistics part of the scenario (see the module docstring)."""
    coordinator = gateways[KEMENSOS].coordinator
    assert coordinator is not None  # noqa: S101 - configured in _adapter_settings
    assert coordinator.engine is not None  # noqa: S101 - same
    referrals = [
        a.event for a in observers[KEMENSOS].events if a.event.type == "id.trafficking.case.referral"
    ]
    answers: list[dict[str, Any]] = [
        {"type": "id.trafficking.case.referral-response", "data": {
            "case_id": e.subject, "referral_event": {"source": e.source, "id": e.id}, "status": "accepted",
            "assigned_location_id": "rptc-pontianak"}}
        for e in referrals
    ]  # fmt: skip
    late_case = str(answers[-1]["data"]["case_id"])
    _say(out, started, f"Kemensos answers {len(answers) - 1} of {len(answers)} referrals in time")
    _drop_jsonl(drop_dir, "jawaban-rujukan.jsonl", *answers[:-1])
    engine = coordinator.engine
    await _until(lambda: _answered(observers, len(answers) - 1), patience, "the answers at KBRI")
    _say(out, started, "the demo clock jumps 26 hours ahead (SOP deadlines only; nothing sleeps)")
    clock.advance(hours=26)
    await _until(lambda: len(engine.published) >= 2, patience, "the overdue and capacity alerts")
    _say(out, started, f"Kemensos answers the last referral late ({late_case})")
    _drop_jsonl(drop_dir, "jawaban-rujukan-terlambat.jsonl", answers[-1])
    resolved = lambda: any(d["alert_status"] == "resolved" for _, d in engine.published)  # noqa: E731
    await _until(resolved, patience, "the resolved alert")
    result.sop_alerts = [data for _, data in engine.published]
    stats = await coordinator.publish_statistics(month_of(clock.now().date()))
    result.statistics = stats.payload() if stats is not None else None
    await _until(lambda: _settled(gateways, observers), patience, "every event to reach its readers")
    _print_coordination(result, out, coordinator.config.report_dir)


def _print_coordination(result: ScenarioResult, out: TextIO, reports: Path | None) -> None:
    print("\nSOP (proposal) escalations by Kemensos' gateway (alert.sop-overdue; nothing personal)", file=out)
    for d in result.sop_alerts:
        about, place = d.get("case_id") or d.get("subject_alert_id"), d.get("location_id", "")
        print(f"  {d['alert_status']:<9}{d['step_id']:<22}{about:<24}{d['responsible_party']:<10}"
              f"{d['hours_overdue']:>3} h overdue  {place}", file=out)  # fmt: skip
    if result.statistics is None:
        return
    print(f"\nStatistics {result.statistics['alert_id']} (alert.statistics; cells below 11 and their"
          " complements suppressed)", file=out)  # fmt: skip
    for table in result.statistics["tables"]:
        cells = [v for row in table["cells"] for v in row]
        shown = ", ".join(f"{c}={v}" for c, v in zip(table["columns"], table["cells"][0], strict=True))
        hidden = sum(v == "suppressed" for v in cells)
        print(f"  {table['id']:<36} total {table['total']!s:<11} {hidden} cell(s) suppressed"
              + (f"   [{shown}]" if table.get("rows") is None else ""), file=out)  # fmt: skip
    print(f"  reports: {reports}", file=out, flush=True)


def _answered(observers: dict[str, _Timeline], count: int) -> bool:
    events = observers[KBRI].events
    return sum(a.event.type == "id.trafficking.case.referral-response" for a in events) >= count


def _adapter_settings(kemlu: str, kemensos: str, iom: str) -> dict[str, dict[str, Any]]:
    return {
        KBRI: {
            "sources": [{"kind": "kemlu-case-api", "url": kemlu, "poll_interval": 0.3, "backoff_max": 2.0}],
            "sinks": [{"kind": "kemlu-case-api", "url": kemlu,
                       "types": ["id.trafficking.case.shelter-admission", "id.trafficking.case.closure"]}],
        },
        KEMENSOS: {
            "sources": [
                {"kind": "kemensos-csv", "directory": "kemensos-csv", "poll_interval": 0.2},
                {"kind": "file-drop", "directory": "drop", "poll_interval": 0.2},
            ],
            "sinks": [{"kind": "kemensos-case-system", "url": kemensos,
                       "types": ["id.trafficking.case.referral", "id.trafficking.case.repatriation-plan"]}],
            # the directorate watches the (proposal) SOP and publishes the month's statistics
            "coordination": {"sop_alerts": True, "tick_seconds": 0.2, "profiles": True, "statistics": True,
                             "report_dir": "state/reports"},
        },
        IOM: {
            "sources": [{"kind": "iom-htcds", "directory": "htcds", "poll_interval": 0.2}],
            "sinks": [{"kind": "iom-htcds", "url": iom, "types": ["id.trafficking.case.referral"]}],
        },
    }  # fmt: skip


def _iom_rows(*, psychoeducation: bool) -> list[dict[str, Any]]:
    return [r for r in sample_rows() if (r.get("assistance_type") == "Psychoeducation") is psychoeducation]


def _say(out: TextIO, started: float, text: str) -> None:
    print(f"  +{time.monotonic() - started:6.2f}s  ** {text}", file=out, flush=True)


def _inbox(directory: Path) -> Path:
    """A drop folder's inbox, created if the source has not started watching it yet."""
    inbox = directory / "inbox"
    inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    return inbox


def _drop_jsonl(drop_dir: Path, name: str, *lines: dict[str, Any]) -> None:
    inbox = _inbox(drop_dir)
    temporary = inbox / f".{name}.tmp"
    temporary.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    temporary.rename(inbox / name)


def _settled(gateways: dict[str, Gateway], observers: dict[str, _Timeline]) -> bool:
    """Every published event was sent and has reached every party the registry lets read it."""
    if any(g.outbox.depth for g in gateways.values()):
        return False
    seen = {(a.event.source, a.event.id): a for o in observers.values() for a in o.events}
    published = sum(_summary(gateways)[p]["published"] for p in gateways)
    if len(seen) < published:
        return False
    for (source, _), accepted in seen.items():
        topic = gateways[source].publisher.topic_of(accepted.event)
        for reader in gateways[source].registry.readers(topic):
            if (
                reader != source
                and reader in observers
                and (source, accepted.event.id) not in observers[reader].log
            ):
                return False
    return True


async def _until(predicate: Callable[[], bool | Awaitable[bool]], patience: float, what: str) -> None:
    deadline = time.monotonic() + patience
    while True:
        done = predicate()
        if done if isinstance(done, bool) else await done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scenario waited {patience:.0f}s for {what}")
        await asyncio.sleep(0.05)


async def _receipts(
    gateways: dict[str, Gateway], patience: float, out: TextIO, started: float
) -> tuple[dict[str, dict[str, dict[str, int]]], str | None]:
    """Wait for a signed receipt from every running recipient of every event; then a forged receipt.

    Returns, per sender, the receipts' outcomes per recipient, and the reason code the forged receipt (IOM
    claiming to have delivered a Kemensos event that never existed) was dead-lettered with at Kemensos."""
    running = set(gateways)

    async def answered() -> bool:
        for gateway in gateways.values():
            for delivery in await gateway.ledger.deliveries():
                if any(delivery.state().get(p) == "waiting" for p in delivery.expected if p in running):
                    return False
        return True

    await _until(answered, patience, "a signed receipt for every event at its sender")
    table: dict[str, dict[str, dict[str, int]]] = {}
    for party, gateway in gateways.items():
        rows = summarise(await gateway.ledger.deliveries())
        table[party] = {p: dict(row) for p, row in rows.items() if p in running}
    _say(out, started, "IOM's gateway publishes a forged receipt for a Kemensos event that never existed")
    data = receipt_data(
        event_id=str(uuid.uuid4()), event_source=KEMENSOS, event_type=None, digest="0" * 64,
        read_from=("xchg.kemensos.case.v1", 0, 0), outcome="delivered", reason=None,
        finished_at=format_utc(datetime.now(UTC)),
    )  # fmt: skip
    await gateways[IOM].publisher.publish(RECEIPT_TYPE, data, event_id=str(uuid.uuid4()), internal=True)
    reason = str(Reason.RECEIPT_UNKNOWN_EVENT)

    def refused() -> bool:
        return _total(gateways[KEMENSOS], "xchg_rejected_total", reason=reason) >= 1

    await _until(refused, patience, "the forged receipt to be dead-lettered")
    return table, reason


def _total(gateway: Gateway, name: str, **labels: str) -> int:
    return int(
        sum(
            s.value
            for f in gateway.metrics.registry.collect()
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def _summary(gateways: dict[str, Gateway]) -> dict[str, dict[str, int]]:
    def total(gateway: Gateway, name: str) -> int:
        """Exchange messages only: delivery receipts are counted in their own table."""
        return _total(gateway, name) - _total(gateway, name, type=RECEIPT_TYPE)

    return {
        party: {
            "published": total(gateway, "xchg_published_total"),
            "received": total(gateway, "xchg_accepted_total"),
            "rejected": total(gateway, "xchg_rejected_total"),
            "quarantined": total(gateway, "xchg_quarantined_total"),
        }
        for party, gateway in gateways.items()
    }


def _print_result(result: ScenarioResult, out: TextIO) -> None:
    print("\nSummary", file=out)
    print(f"  {'party':<22}{'published':>10}{'received':>10}{'rejected':>10}{'quarantined':>13}", file=out)
    for party, row in result.summary.items():
        print(f"  {party:<22}{row['published']:>10}{row['received']:>10}{row['rejected']:>10}"
              f"{row['quarantined']:>13}", file=out)  # fmt: skip
    print("\nSigned delivery receipts, per sender: what each recipient reported", file=out)
    print(f"  {'sender':<22}{'recipient':<22}{'delivered':>10}{'rejected':>10}{'dead-lettered':>15}"
          f"{'waiting':>9}", file=out)  # fmt: skip
    for sender, rows in result.deliveries.items():
        for party, row in sorted(rows.items()):
            print(f"  {sender:<22}{party:<22}{row['delivered']:>10}{row['rejected']:>10}"
                  f"{row['dead-lettered']:>15}{row['waiting']:>9}", file=out)  # fmt: skip
    if result.forged_receipt:
        print(f"  a forged receipt was dead-lettered at {KEMENSOS} ({result.forged_receipt}); "
              "it marked nothing", file=out)  # fmt: skip
    print("\nWhat the simulated agency systems received", file=out)
    cases = ", ".join(sorted({str(c.get("jenis_data")) for c in result.kemensos_cases}))
    updates = ", ".join(sorted({str(u.get("jenis_pembaruan")) for u in result.kemlu_updates}))
    print(f"  Kemensos case system : {len(result.kemensos_cases)} records ({cases})", file=out)
    print(f"  Kemlu case API       : {len(result.kemlu_updates)} updates ({updates})", file=out)
    print(f"  IOM case system      : {len(result.iom_referrals)} HTCDS referrals", file=out, flush=True)


async def _until_interrupted() -> None:
    async with stop_on_signals() as stop:
        await stop.wait()
