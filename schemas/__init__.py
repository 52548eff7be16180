"""Wire contract of hookfleet: the event catalog, every Kafka message and the topic names."""
