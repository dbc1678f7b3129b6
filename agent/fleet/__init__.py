"""The fleet path: committed evidence to NATS JetStream, and on to PostgreSQL.

- :mod:`.wire`: subjects, message ids and the head message (the one definition
  both the publisher and the collector use);
- :mod:`.schema`: the PostgreSQL schema, as versioned migrations.
"""
