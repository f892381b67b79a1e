#!/usr/bin/env bash
# Kafka's kafka-metadata-quorum.sh, run from the Maven-fetched jars (see kafka-run-class).
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class" org.apache.kafka.tools.MetadataQuorumCommand "$@"
