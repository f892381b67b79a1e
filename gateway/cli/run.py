"""``gateway run`` (one party's gateway) and ``gateway broker`` (the embedded broker alone, for trials)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from gateway.cli.delivery import EMBEDDED_ADDRESS_FILE
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig, env_overrides
from gateway.runtime.gateway import Gateway
from gateway.runtime.lock import holder
from gateway.runtime.logs import configure_logging
from gateway.runtime.signals import stop_on_signals
from gateway.sandbox.broker import EmbeddedBroker

__all__ = ["add_commands", "client_settings"]

_log = structlog.get_logger(__name__)


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run one party's gateway until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="gateway TOML configuration (see docs/CONFIGURATION.md)")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true", help="JSON logs even on a terminal")
    run.set_defaults(handler=_run)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker alone")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--log-level", default="info")
    broker.set_defaults(handler=_broker)


def _run(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level, json_output=True if args.log_json else None)
    config = GatewayConfig.load(Path(args.config), env_overrides(os.environ))
    asyncio.run(_run_gateway(config))
    return 0


async def _run_gateway(config: GatewayConfig) -> None:
    broker: EmbeddedBroker | None = None
    kafka = config.kafka
    if kafka.embedded:
        running = holder(config.data_dir)  # before a second broker would write into this data_dir's log
        if running is not None:
            raise GatewayError(
                Reason.ALREADY_RUNNING,
                f"{config.data_dir} is in use by another gateway process (pid {running}); one process per "
                "data_dir",
            )
        broker = EmbeddedBroker(log_path=config.data_dir / "embedded-broker.log")
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await broker.start()
        kafka = kafka.for_embedded(broker.bootstrap_servers)
        _log.info("embedded broker started", bootstrap_servers=broker.bootstrap_servers)
    gateway = Gateway(config, kafka=kafka)
    address = config.data_dir / EMBEDDED_ADDRESS_FILE
    started = False
    try:
        await gateway.start()  # takes the data_dir lock: a second process stops here
        started = True
        if broker is not None:  # for `gateway dlq` (the embedded broker's port changes at every start)
            address.write_text(f"{broker.bootstrap_servers}\n", encoding="ascii")
        print(f"gateway {config.party} running; ops http://{config.ops.host}:{gateway.ops_port}/readyz",
              file=sys.stderr, flush=True)  # fmt: skip
        await gateway.run_until_signalled()
    finally:
        if broker is not None:
            if started:
                address.unlink(missing_ok=True)
            await broker.stop()


def _broker(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level)
    asyncio.run(_run_broker(args.host, args.port))
    return 0


async def _run_broker(host: str, port: int | None) -> None:
    async with stop_on_signals() as stop, EmbeddedBroker(host=host, port=port) as broker:
        print(
            f"embedded Kafka-protocol broker (Tansu) on {broker.bootstrap_servers}; Ctrl-C stops it\n"
            f"{client_settings(broker.bootstrap_servers)}",
            flush=True,
        )
        await stop.wait()


def client_settings(bootstrap_servers: str) -> str:
    """The ``[kafka]`` table a gateway needs for a broker started by ``gateway broker`` (Tansu's quirks:
    gateway/sandbox/broker.py): PLAINTEXT on loopback, and no idempotent producing (InitProducerId fails)."""
    servers = ", ".join(f'"{s}"' for s in bootstrap_servers.split(","))
    return (
        "# the gateway configuration's [kafka] table for this broker:\n"
        "[kafka]\n"
        f"bootstrap_servers = [{servers}]\n"
        'security_protocol = "PLAINTEXT"\n'
        "enable_idempotence = false  # the embedded broker cannot do idempotent producing\n"
        "# allow_plaintext = true  # only when --host is not a loopback address"
    )
