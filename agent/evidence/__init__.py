"""Evidence: the tamper-evident record of what tracehound saw.

Sans-I/O cores only: these modules turn values into bytes and check bytes,
and never open a file or a socket. The callers own the I/O.

- ``canonical``: one byte form per value (RFC 8785 / JCS), so hashes are stable.
- ``chain``: a blake3 hash chain over NDJSON records, with a verifier that
  names the first break.
- ``seal``: forward-secure keyed seals over the chain head (like journald FSS).
"""
