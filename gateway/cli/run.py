"""``gateway run`` (one party's gateway) and ``gateway broker`` (the embedded broker alone, for trials)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from gateway.runtime.config import GatewayConfig, env_overrides
from gateway.runtime.gateway import Gateway
from gateway.runtime.logs import configure_logging
from gateway.runtime.signals import stop_on_signals
from gateway.sandbox.broker import EmbeddedBroker

__all__ = ["add_commands"]

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
        broker = EmbeddedBroker(log_path=config.data_dir / "embedded-broker.log")
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await broker.start()
        kafka = kafka.for_embedded(broker.bootstrap_servers)
        _log.info("embedded broker started", bootstrap_servers=broker.bootstrap_servers)
    gateway = Gateway(config, kafka=kafka)
    try:
        await gateway.start()
        print(f"gateway {config.party} running; ops http://{config.ops.host}:{gateway.ops_port}/readyz",
              file=sys.stderr, flush=True)  # fmt: skip
        await gateway.run_until_signalled()
    finally:
        if broker is not None:
            await broker.stop()


def _broker(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level)
    asyncio.run(_run_broker(args.host, args.port))
    return 0


async def _run_broker(host: str, port: int | None) -> None:
    async with stop_on_signals() as stop, EmbeddedBroker(host=host, port=port) as broker:
        print(
            f"embedded Kafka-protocol broker (Tansu) on {broker.bootstrap_servers}; Ctrl-C stops it",
            flush=True,
        )
        await stop.wait()
