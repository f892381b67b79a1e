"""The broker's authorisation errors become ``bus.not-authorized`` naming what was refused; nothing else does.

The same conversion is proven against Apache Kafka's real refusals in tests/integration/test_kafka_cluster.py.
"""

from __future__ import annotations

import pytest
from aiokafka import errors

from gateway.bus.connectivity import broker_refusal
from gateway.errors import Reason


@pytest.mark.parametrize(
    ("exc", "named"),
    [
        (errors.TopicAuthorizationFailedError("xchg.iom.dlq.v1"), "topic 'xchg.iom.dlq.v1'"),
        (errors.TopicAuthorizationFailedError({"b.t", "a.t"}), "topic 'a.t', 'b.t'"),
        (errors.GroupAuthorizationFailedError("xchg.kemensos"), "consumer group 'xchg.kemensos'"),
        (errors.ClusterAuthorizationFailedError(), "the cluster (IdempotentWrite"),
        (errors.TransactionalIdAuthorizationFailed(), "a transactional id"),
    ],
)
def test_an_authorization_error_is_a_bus_not_authorized_refusal(exc: BaseException, named: str) -> None:
    refusal = broker_refusal(exc, "Write")
    assert refusal is not None
    assert refusal.reason is Reason.BUS_NOT_AUTHORIZED
    assert f"refused Write on {named}" in refusal.detail
    assert "gateway deploy render" in refusal.detail


@pytest.mark.parametrize(
    "exc",
    [
        errors.KafkaConnectionError(),
        errors.NotLeaderForPartitionError(),
        errors.KafkaTimeoutError(),
        errors.SaslAuthenticationFailed(),
        OSError("connection reset"),
    ],
)
def test_other_errors_are_not_refusals(exc: BaseException) -> None:
    assert broker_refusal(exc, "Read") is None
