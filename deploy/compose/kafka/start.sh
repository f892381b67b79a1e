#!/usr/bin/env bash
# One node of the local trial cluster: KRaft broker + controller, TLS on every listener, SASL/SCRAM for clients.
#
#   INTERNAL   :9092  SSL, mutual TLS     broker <-> broker replication
#   CLIENT     :9093  SASL_SSL, SCRAM     gateways, notary, kafka-init (admin)
#   CONTROLLER :9094  SSL, mutual TLS     KRaft quorum
#
# Nodes prove themselves to each other with their certificates (principal User:CN=kafka-N, super users).
# Clients authenticate with SCRAM-SHA-512; the authoriser denies everything no ACL allows. Secrets are files
# under /run/secrets (compose.yaml); this script writes the broker configuration to /tmp (mode 0600) at start
# so the keystore password never sits in an image, a volume or the compose file.
set -euo pipefail

id="${XCHG_NODE_ID:?set XCHG_NODE_ID to 1, 2 or 3}"
secrets=/run/secrets
store_password="$(<"$secrets/keystore-password")"
admin_password="$(<"$secrets/kafka-admin-password")"
cluster_id="$(<"$secrets/kafka-cluster-id")"
config=/tmp/server.properties

umask 077
cat >"$config" <<PROPERTIES
node.id=${id}
process.roles=broker,controller
controller.quorum.voters=1@kafka-1:9094,2@kafka-2:9094,3@kafka-3:9094
controller.listener.names=CONTROLLER
listeners=INTERNAL://:9092,CLIENT://:9093,CONTROLLER://:9094
advertised.listeners=INTERNAL://kafka-${id}:9092,CLIENT://kafka-${id}:9093
listener.security.protocol.map=INTERNAL:SSL,CLIENT:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=INTERNAL
log.dirs=/var/lib/kafka/data

ssl.keystore.type=PKCS12
ssl.keystore.location=${secrets}/keystore.p12
ssl.keystore.password=${store_password}
ssl.key.password=${store_password}
ssl.truststore.type=PEM
ssl.truststore.location=${secrets}/ca.crt
ssl.enabled.protocols=TLSv1.3,TLSv1.2
ssl.endpoint.identification.algorithm=https
listener.name.internal.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
listener.name.client.ssl.client.auth=none
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:CN=kafka-1;User:CN=kafka-2;User:CN=kafka-3;User:admin

auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
PROPERTIES

# First start only: format the log directory and bootstrap the admin's SCRAM credential (the other users
# are created by kafka-init, as the admin). Later starts find the directory formatted and skip this.
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$cluster_id" --config "$config" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=${admin_password}]"
unset store_password admin_password
exec /opt/kafka/bin/kafka-server-start.sh "$config"
