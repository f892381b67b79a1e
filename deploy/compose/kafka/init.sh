#!/usr/bin/env bash
# The one-shot kafka-init job of the local trial: wait for the cluster, then run the rendered kafka-init.sh
# (topics, SCRAM users, ACLs) as the admin. Re-running it is safe (compose run --rm kafka-init).
set -euo pipefail

umask 077
admin_password="$(</run/secrets/kafka-admin-password)"
export XCHG_ADMIN_CONFIG=/tmp/admin.properties
cat >"$XCHG_ADMIN_CONFIG" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin_password}";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/ca.crt
PROPERTIES
unset admin_password
export XCHG_BOOTSTRAP=kafka-1:9093,kafka-2:9093,kafka-3:9093
export XCHG_SCRAM_DIR=/run/xchg/scram

for attempt in $(seq 1 60); do
  if /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$XCHG_BOOTSTRAP" \
      --command-config "$XCHG_ADMIN_CONFIG" --list >/dev/null 2>&1; then
    break
  fi
  if ((attempt == 60)); then
    echo "kafka-init: the cluster did not answer the admin in 5 minutes" >&2
    exit 1
  fi
  sleep 5
done
exec bash /opt/xchg/kafka-init.sh
