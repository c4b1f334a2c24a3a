"""Use cases written against ports (Protocols); no Kafka, HTTP or SQL here."""
