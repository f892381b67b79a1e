import pytest
from gateway.errors import GatewayError
from gateway.kafka import KafkaSettings, TlsSettings, check_connection
from tests.integration.conftest import make_ca

async def test_show(tls_proxy, tmp_path):
    other, _, _ = make_ca(tmp_path / "o")
    for s in [KafkaSettings(bootstrap_servers=(tls_proxy.bootstrap_servers,), security_protocol="SSL", tls=TlsSettings(ca_file=other)),
              KafkaSettings(bootstrap_servers=(tls_proxy.bootstrap_servers,), request_timeout_ms=2000),
              KafkaSettings(bootstrap_servers=(f"localhost:{tls_proxy.port}",), security_protocol="SSL", tls=TlsSettings(ca_file=tls_proxy.pki.ca_cert)),
              KafkaSettings(bootstrap_servers=(f"127.0.0.1:{tls_proxy.broker.port}",), request_timeout_ms=2000),
              ]:
        try: print("OK", await check_connection(s))
        except GatewayError as e: print("ERR", e)
