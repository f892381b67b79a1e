"""Production deployment files derived from the party registry: Kafka topics, SCRAM users, literal ACLs."""
