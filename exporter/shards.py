"""Sharding: which clusters a replica owns, and the identity it publishes under.

Several replicas split a fleet, each owning a disjoint set of clusters (docs/deploy.md,
"Sharding"): an explicit list per shard (`shard.clusters`), or the clusters whose name hashes
to the shard (`shard.index` of `shard.count`, `shard_of`). Each shard publishes under a Kafka
transactional id and checkpoint key of its own (`instance_id`), so shards never fence each
other and a second replica of the same shard is fenced.

Imports nothing of the exporter: the configuration validates shards with it.
"""

from __future__ import annotations

import hashlib

SHARD_INFIX = "-shard-"


def shard_of(cluster: str, count: int) -> int:
    """The hash shard (0 to `count` - 1) that owns `cluster`.

    The first 8 bytes of the SHA-256 digest of the UTF-8 name, read as a big-endian unsigned
    64-bit integer, modulo `count`: stable across processes, versions and languages (unlike
    Python's `hash`), so every replica and any consumer compute the same owner.
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    digest = hashlib.sha256(cluster.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def instance_id(transactional_id: str, shard: str | None) -> str:
    """The Kafka transactional id and checkpoint key of a replica: `transactional_id` alone
    when unsharded, `<transactional_id>-shard-<shard>` for a shard."""
    return transactional_id if shard is None else f"{transactional_id}{SHARD_INFIX}{shard}"
