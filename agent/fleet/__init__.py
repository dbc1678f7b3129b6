"""The fleet path: committed evidence to NATS JetStream, and on to PostgreSQL.

- :mod:`.wire`: subjects, message ids and the head message (the one definition
  both the publisher and the collector use);
- :mod:`.schema`: the PostgreSQL schema, as versioned migrations;
- the agent's publisher, a process of its own (asyncio + nats-py; the trio
  daemon imports none of it but :mod:`.publisher_process`, :mod:`.status` and
  :mod:`.nats_options`, to check the files at start):
  :mod:`.publisher` (the loop), :mod:`.outbox` (committed records after the
  cursor), :mod:`.cursor` (the last acknowledged seq, on disk),
  :mod:`.heads` (the head and seal it announces), :mod:`.segment_read`,
  :mod:`.backoff`, :mod:`.nats_options` (auth and TLS from the settings).
"""
