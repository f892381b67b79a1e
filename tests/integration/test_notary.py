"""The notary and the auditor on a real broker over TCP.

1. Gateways exchange events (and dead-letter junk); the notary, started before any exchange topic exists,
   logs every record of every exchange and dead-letter topic, including a topic created later; a receipt
   from its HTTP API verifies offline; ``gateway audit verify`` against the broker finds nothing.
2. ``gateway notary run`` is SIGKILLed twice in the middle of appending a burst and restarted: the log ends
   with every record exactly once (no gap, no duplicate), and the audit against the broker agrees.
3. A cosigner cosigns successive checkpoints (in-process and ``gateway audit cosign --once``), the auditor
   counts the quorum, and a notary serving a forked history (signed with the real notary key) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.cosigner import CosignerService
from gateway.audit.leaf import Leaf
from gateway.audit.notary import Notary, NotaryConfig
from gateway.audit.note import CosignatureV1Signer, Ed25519Signer, sign_note, verifier_from_vkey
from gateway.audit.tiles import TileLog
from gateway.audit.witness import Witness, verify_cosigned
from gateway.bus.kafka import KafkaSettings
from gateway.cli.main import main
from gateway.contract.keys import SigningKey, write_private_pem
from gateway.contract.policy import dlq_topic
from gateway.errors import Reason
from gateway.sandbox.broker import EmbeddedBroker
from gateway.sandbox.deployment import ANCHOR_FILE
from tests.integration.exchange import (
    embedded_settings,
    eventually,
    exchange,
    kafka_table,
    metric_total,
    publish_registry,
)
from tests.world import example

KCH, KEMENSOS, IOM = "kemlu.kbri-kuching", "kemensos", "iom"
ROOT = Path(__file__).resolve().parents[2]


def write_notary_config(directory: Path, settings: KafkaSettings, anchor: Path, **extra: Any) -> Path:
    """A notary deployment as an operator writes it: key file, TOML; returns the TOML path."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "notary.pem"
    if not key_file.exists():
        write_private_pem(key_file, SigningKey.generate().to_pem())
    document: dict[str, Any] = {
        "deployment": "it",
        "registry_anchor": str(anchor),
        "log_dir": "log",
        "key_file": "notary.pem",
        "kafka": kafka_table(settings),
        "http": {"port": 0},
        "refresh_seconds": 0.5,
        "checkpoint": {"entries": 100, "interval_seconds": 1.0},
        **extra,
    }
    path = directory / "notary.toml"
    path.write_bytes(tomli_w.dumps(document).encode("utf-8"))
    return path


def notary_vkey(config_path: Path) -> str:
    config = NotaryConfig.load(config_path)
    return str(Ed25519Signer(config.origin, SigningKey.load(config.key_file)).verifier().vkey())


async def run_cli(argv: Sequence[str]) -> int:
    """``gateway ...`` in a worker thread (its commands run their own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def audit_against_broker(
    config_path: Path, registry: Path, settings: KafkaSettings, report: Path, *extra: str
) -> dict[str, Any]:
    config = NotaryConfig.load(config_path)
    code = await run_cli(
        [
            "audit",
            "verify",
            "--log",
            str(config.log_dir),
            "--vkey",
            notary_vkey(config_path),
            "--registry-anchor",
            str(registry),
            "--bootstrap-servers",
            ",".join(settings.bootstrap_servers),
            "--fetch-idle-ms",
            "500",
            "--json",
            str(report),
            *extra,
        ]
    )
    document: dict[str, Any] = json.loads(await asyncio.to_thread(report.read_text))
    assert code == (0 if document["ok"] else 1)
    return document


async def produce(settings: KafkaSettings, topic: str, count: int, *, key: bytes = b"K-1") -> None:
    producer = AIOKafkaProducer(**settings.producer_kwargs())
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, value=b'{"junk":%d}' % i, key=key, headers=[("ce_id", b"junk-%d" % i)])
        await producer.flush()
    finally:
        await producer.stop()


# ---- 1. an exchange, logged and audited -----------------------------------------------------------------


async def test_notary_logs_the_exchange_and_the_audit_verifies_against_the_broker(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    settings = embedded_settings(embedded_broker)
    sandbox = tmp_path / "exchange"
    registry = sandbox / ANCHOR_FILE
    started = time.monotonic()
    async with exchange(sandbox, [KCH, KEMENSOS, IOM], settings) as nodes:
        config_path = write_notary_config(tmp_path / "notary", settings, registry)
        async with Notary(NotaryConfig.load(config_path)) as notary:
            referral = await nodes[KCH].gateway.publisher.publish(
                "id.trafficking.case.referral", example("case.referral", "1.0")[0][1], recipients=[KEMENSOS]
            )
            await nodes[KEMENSOS].gateway.publisher.publish(
                "id.trafficking.case.shelter-admission",
                example("case.shelter-admission", "1.0")[0][1],
                recipients=[KCH],
            )
            await nodes[IOM].gateway.publisher.publish(
                "id.trafficking.alert.supply", example("alert.supply", "1.0")[0][1]
            )
            await produce(settings, "xchg.iom.alert.v1", 2)  # junk Kemensos and KBRI dead-letter

            def settled() -> bool:
                return (
                    any(a.event.id == referral.id for a in nodes[KEMENSOS].sink.events)
                    and metric_total(nodes[KEMENSOS], "xchg_dead_lettered_total") >= 2
                    and metric_total(nodes[KCH], "xchg_dead_lettered_total") >= 2
                )

            await eventually(settled, what="deliveries and dead letters")
            await notary.sync()
            size = notary.size
            logged = [Leaf.decode(e) for e in notary.log.iter_entries()]
            topics = {leaf.topic for leaf in logged}
            assert {dlq_topic(KEMENSOS), dlq_topic(KCH), "xchg.iom.alert.v1"} <= topics
            assert any(leaf.id == referral.id and leaf.verdict == "accepted" for leaf in logged)
            assert sum(leaf.verdict == "rejected" for leaf in logged) >= 6  # 2 junk + 4 dead-letter copies

            # a topic created after the notary started (a new party, say) is picked up
            await produce(settings, "xchg.bp2mi.alert.v1", 1)
            note = await notary.sync()
            assert notary.size == size + 1
            assert Checkpoint.parse(note.decode().split("\n\n")[0] + "\n").size == size + 1

            # a receipt from the notary's HTTP API verifies offline (and names the event's record)
            receipt = tmp_path / "receipt"
            vkey = tmp_path / "notary.vkey"
            vkey.write_text(notary.vkey)
            url = f"http://127.0.0.1:{notary.http_port}"
            assert (
                await run_cli(
                    ["audit", "prove", referral.id, "--notary", url, "--source", KCH, "--out", str(receipt)]
                )
                == 0
            )
            assert await run_cli(["audit", "check-receipt", str(receipt), "--vkey", str(vkey)]) == 0
            async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["signed_size"] == size + 1
            # the gauges the alert rules read (deploy/prometheus/xchg-alerts.yml)
            async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
                assert response.status == 200
                gauges = {
                    s.name: s.value
                    for f in text_string_to_metric_families(await response.text())
                    for s in f.samples
                }
            assert gauges["xchg_notary_log_size"] == gauges["xchg_notary_signed_size"] == size + 1
            assert gauges["xchg_notary_refusing"] == 0
            assert abs(gauges["xchg_notary_last_signed_timestamp_seconds"] - time.time()) < 3600

    report = await audit_against_broker(config_path, registry, settings, tmp_path / "report.json")
    assert report["findings"] == [], report["findings"]
    assert report["log_size"] == size + 1
    assert report["signed_size"] == size + 1
    assert report["records"]["matched"] == size + 1
    assert report["records"]["read"] == size + 1
    assert all(c["matches_log"] for c in report["checkpoints"])
    # the published checkpoints (Kafka) were checked too
    assert any(
        src.startswith("kafka xchg.notary.checkpoints.v1")
        for c in report["checkpoints"]
        for src in c["sources"]
    )

    # the same audit offline, from a records dump (gateway audit export-records)
    dump = tmp_path / "records.jsonl"
    servers = ",".join(settings.bootstrap_servers)
    assert await run_cli(["audit", "export-records", "--out", str(dump), "--bootstrap-servers", servers]) == 0
    assert len((await asyncio.to_thread(dump.read_text)).splitlines()) == size + 1
    config = NotaryConfig.load(config_path)
    offline = tmp_path / "offline.json"
    verify = ["audit", "verify", "--log", str(config.log_dir), "--vkey", notary_vkey(config_path)]
    verify += ["--registry-anchor", str(registry), "--records", str(dump), "--json", str(offline)]
    assert await run_cli(verify) == 0
    assert json.loads(await asyncio.to_thread(offline.read_text))["records"]["matched"] == size + 1
    assert time.monotonic() - started < 60


# ---- 2. SIGKILL in the middle of an append -------------------------------------------------------------


def _state_size(log_dir: Path) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int((log_dir / "state").read_text().split("\n")[1])
    return 0


def _spawn_notary(config_path: Path, stderr: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr.open("ab") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli.main",
                "notary",
                "run",
                "--config",
                str(config_path),
                "--log-json",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )


async def _kill_mid_append(process: subprocess.Popen[bytes], log_dir: Path, above: int) -> tuple[int, bool]:
    """SIGKILL ``process`` once the log passed ``above``, aiming at a batch being written (the ``pending``
    journal exists from before a batch's first file until after its commit). Returns the committed size
    after the kill and whether the process died mid-batch (the journal is still on disk). Bounded polling."""
    deadline = time.monotonic() + 30
    while _state_size(log_dir) <= above:
        assert process.poll() is None, "the notary exited"
        assert time.monotonic() < deadline, "the notary did not start appending"
        await asyncio.sleep(0.005)
    for _ in range(20_000):
        if (log_dir / "pending").exists():
            break
        await asyncio.sleep(0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return _state_size(log_dir), (log_dir / "pending").exists()


async def test_sigkill_mid_append_resumes_without_gap_or_duplicate(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    settings = embedded_settings(embedded_broker)
    from tests.world import World  # noqa: PLC0415 - only this test needs a registry without gateways

    world = World.build()
    registry = await publish_registry(world.document, tmp_path, settings)
    total = 1  # the registry version, logged first
    for topic, count in (
        ("xchg.iom.alert.v1", 700),
        ("xchg.kemensos.case.v1", 500),
        ("xchg.kemensos.dlq.v1", 300),
    ):
        await produce(settings, topic, count, key=uuid.uuid4().hex.encode())
        total += count
    config_path = write_notary_config(
        tmp_path / "notary",
        settings,
        registry,
        batch_size=20,
        checkpoint={"entries": 200, "interval_seconds": 0.5},
    )
    log_dir = NotaryConfig.load(config_path).log_dir
    stderr = tmp_path / "notary.log"
    kills: list[tuple[int, bool]] = []
    for above in range(100, total - 200, 200):  # kill until two kills, one of them provably mid-batch
        process = _spawn_notary(config_path, stderr)
        try:
            kills.append(await _kill_mid_append(process, log_dir, above))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if len(kills) >= 2 and any(torn for _, torn in kills):
            break
    assert any(torn for _, torn in kills), kills
    assert all(size < total for size, _ in kills), kills
    process = _spawn_notary(config_path, stderr)
    try:
        deadline = time.monotonic() + 60
        while _state_size(log_dir) < total:
            assert process.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, f"stuck at {_state_size(log_dir)} of {total}"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # graceful: signs a final checkpoint
        assert process.wait(timeout=30) == 0, stderr.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (log_dir / "pending").exists()  # the torn batch was undone at restart

    with TileLog.open(log_dir, read_only=True) as log:
        assert log.size == total
        positions = [Leaf.decode(e).position for e in log.iter_entries()]
    assert len(set(positions)) == total  # no duplicate ...
    per_partition: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in positions:
        per_partition.setdefault((topic, partition), []).append(offset)
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))  # ... no gap, in order
    report = await audit_against_broker(config_path, registry, settings, tmp_path / "report.json")
    assert report["findings"] == [], report["findings"][:5]
    assert report["records"]["matched"] == total
    assert report["signed_size"] == total


# ---- 3. cosigning ------------------------------------------------------------------------------------------


async def _forked_notary(note_signer: Ed25519Signer, entries: list[bytes], directory: Path) -> web.AppRunner:
    """A notary that shows a different history, signed with the real notary key (a split view)."""
    log = TileLog.open(directory, durable=False)
    log.append(entries)
    origin = note_signer.name
    note = sign_note(Checkpoint(origin, log.size, log.root()).to_note_body(), [note_signer])

    async def checkpoint(request: web.Request) -> web.Response:
        return web.Response(body=note, content_type="text/plain")

    async def consistency(request: web.Request) -> web.Response:
        proof = log.consistency_proof(int(request.query["from"]), int(request.query["to"]))
        import base64  # noqa: PLC0415 - this helper only

        return web.Response(text="".join(base64.b64encode(h).decode() + "\n" for h in proof))

    app = web.Application()
    app.router.add_get("/checkpoint", checkpoint)
    app.router.add_get("/consistency", consistency)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_cosigner_cosigns_successive_checkpoints_and_refuses_a_fork(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    settings = embedded_settings(embedded_broker)
    from tests.world import World  # noqa: PLC0415 - a registry without gateways

    world = World.build()
    registry = await publish_registry(world.document, tmp_path, settings)  # logged first: one entry
    cosigner_key = tmp_path / "cosigner" / "cosigner.pem"
    assert (
        await run_cli(["audit", "keygen", "--cosigner", "kemensos.cosigner", "--out", str(cosigner_key)]) == 0
    )
    cosigner_vkey = cosigner_key.with_suffix(".vkey").read_text().strip()
    config_path = write_notary_config(tmp_path / "notary", settings, registry, cosigners=[cosigner_vkey])
    vkey = notary_vkey(config_path)
    notary_verifier = verifier_from_vkey(vkey)
    state = tmp_path / "cosigner" / "state.json"
    cosigner = Witness(
        CosignatureV1Signer("kemensos.cosigner", SigningKey.load(cosigner_key)),
        {notary_verifier.name: [notary_verifier]},
        state_file=state,
    )

    async with Notary(NotaryConfig.load(config_path)) as notary:
        url = f"http://127.0.0.1:{notary.http_port}"
        service = CosignerService(cosigner, origin=notary.origin, notary_url=url)
        try:
            await produce(settings, "xchg.iom.alert.v1", 30)
            await notary.sync()
            first = await service.poll_once()
            assert (first.size, first.cosigned, first.reason) == (31, True, None)
            assert (await service.poll_once()).detail == "already cosigned"

            await produce(settings, "xchg.kemensos.case.v1", 45)
            await notary.sync()
            second = await service.poll_once()
            assert (second.size, second.cosigned) == (76, True)  # consistent with 31: proven, cosigned
            cosigned = verify_cosigned(
                notary.latest_checkpoint,
                origin=notary.origin,
                log_verifiers=[notary_verifier],
                cosigners=[cosigner.verifier()],
                quorum=1,
            )
            assert cosigned.checkpoint.size == 76
        finally:
            await service.close()

        # the same cosigner as an operator runs it: gateway audit cosign --config ... --once
        await produce(settings, "xchg.kemensos.case.v1", 5)
        await notary.sync()
        cosign_config = tmp_path / "cosigner" / "cosigner.toml"
        cosign_config.write_bytes(
            tomli_w.dumps(
                {
                    "name": "kemensos.cosigner",
                    "key_file": "cosigner.pem",
                    "state_file": "state.json",
                    "notary_url": url,
                    "notary_vkeys": [vkey],
                    "interval_seconds": 1,
                }
            ).encode()
        )
        assert await run_cli(["audit", "cosign", "--config", str(cosign_config), "--once"]) == 0
        assert (
            verify_cosigned(
                notary.latest_checkpoint,
                origin=notary.origin,
                log_verifiers=[notary_verifier],
                cosigners=[cosigner.verifier()],
                quorum=1,
            ).checkpoint.size
            == 81
        )
        honest = list(notary.log.iter_entries())

    # a split view: the same notary key signs a history where leaf 10 differs, grown to 90 entries
    forged = [*honest[:10], honest[11], *honest[11:], *honest[:10]]
    signer = Ed25519Signer(notary.origin, SigningKey.load(NotaryConfig.load(config_path).key_file))
    runner = await _forked_notary(signer, forged, tmp_path / "forked")
    cosigner = Witness(
        CosignatureV1Signer("kemensos.cosigner", SigningKey.load(cosigner_key)),
        {notary_verifier.name: [notary_verifier]},
        state_file=state,
    )
    port = int(runner.addresses[0][1])
    service = CosignerService(cosigner, origin=notary.origin, notary_url=f"http://127.0.0.1:{port}")
    try:
        refused = await service.poll_once()
    finally:
        await service.close()
        await runner.cleanup()
    assert (refused.cosigned, refused.reason) == (False, Reason.PROOF_CONSISTENCY_FAILED)
    assert cosigner.latest_size(notary.origin) == 81  # its memory still holds the honest history

    # the auditor requires the cosigner: the log is clean and cosigned up to 81
    report = await audit_against_broker(
        config_path,
        registry,
        settings,
        tmp_path / "report.json",
        "--cosigner",
        cosigner_vkey,
        "--quorum",
        "1",
    )
    assert report["findings"] == []
    assert report["cosigned_size"] == 81
