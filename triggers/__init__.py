"""Which Kafka topic feeds which function, and the local dispatcher that delivers them."""
