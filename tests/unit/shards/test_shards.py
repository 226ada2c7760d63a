"""Sharding: the stable hash of a cluster name, the `shard` section and what it derives."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.config import load_config
from exporter.errors import ConfigError
from exporter.shards import instance_id, shard_of

NAMES = [f"prod-{region}-{i}" for region in ("eu", "us", "ap") for i in range(20)]


def test_shard_of_is_the_sha256_prefix_modulo_the_count() -> None:
    # Written out from the documented rule, independently of the implementation.
    digest = hashlib.sha256(b"prod-eu-1").hexdigest()
    assert shard_of("prod-eu-1", 7) == int(digest[:16], 16) % 7
    assert shard_of("prod-eu-1", 1) == 0
    assert shard_of("größe-ß", 5) == int(hashlib.sha256("größe-ß".encode()).hexdigest()[:16], 16) % 5


def test_shard_of_is_the_same_in_another_process_with_another_hash_seed() -> None:
    """Python's own `hash` of a str changes with PYTHONHASHSEED; the shard never does."""
    script = "from exporter.shards import shard_of; import sys; print([shard_of(n, 4) for n in sys.argv[1:]])"
    seen = set()
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script, *NAMES], capture_output=True,
                             text=True, check=True, env={"PYTHONHASHSEED": seed},
                             cwd=Path(__file__).resolve().parents[3]).stdout
        seen.add(out)
    assert seen == {f"{[shard_of(n, 4) for n in NAMES]}\n"}


def test_shard_of_spreads_names_over_every_shard() -> None:
    counts = [sum(1 for n in NAMES if shard_of(n, 3) == i) for i in range(3)]
    assert all(counts) and sum(counts) == len(NAMES)
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("x", 0)


def test_instance_id() -> None:
    assert instance_id("chargeback", None) == "chargeback"
    assert instance_id("chargeback", "eu") == "chargeback-shard-eu"


def cfg(**sections: Any) -> Any:
    return load_config(environ={}, overrides=sections)


def test_unsharded_by_default() -> None:
    c = cfg(sysdig={"clusters": ["a", "b"]})
    assert not c.shard.sharded
    assert c.instance_id == c.kafka.transactional_id == "chargeback-exporter"
    assert c.clusters == ("a", "b") and not c.discovers_clusters
    assert c.shard.owns("anything")


def test_an_explicit_list_shard() -> None:
    c = cfg(shard={"name": "eu", "clusters": ["prod-eu-1", "prod-eu-2"]},
            kafka={"transactional_id": "billing"})
    assert c.instance_id == "billing-shard-eu"
    assert c.clusters == ("prod-eu-1", "prod-eu-2") and not c.discovers_clusters
    assert c.shard.owns("prod-eu-2") and not c.shard.owns("prod-us-1")
    assert c.shard.describe() == "shard eu (clusters prod-eu-1, prod-eu-2)"


def test_a_hash_shard_discovers_its_clusters_unless_they_are_configured() -> None:
    c = cfg(shard={"name": "s1", "index": 1, "count": 3})
    assert c.discovers_clusters and c.clusters == ()
    assert c.shard.describe() == "shard s1 (hash 1 of 3)"
    assert [n for n in NAMES if c.shard.owns(n)] == [n for n in NAMES if shard_of(n, 3) == 1]
    configured = cfg(shard={"name": "s1", "index": 1, "count": 3}, sysdig={"clusters": NAMES})
    assert not configured.discovers_clusters
    assert configured.clusters == tuple(n for n in NAMES if shard_of(n, 3) == 1)


def test_hash_shards_partition_the_fleet() -> None:
    owned = [cfg(shard={"name": f"s{i}", "index": i, "count": 4}, sysdig={"clusters": NAMES}).clusters
             for i in range(4)]
    flat = [c for part in owned for c in part]
    assert sorted(flat) == sorted(NAMES)  # no gap, no overlap


def test_the_shard_comes_from_the_environment_as_the_chart_sets_it() -> None:
    c = load_config(environ={"CHARGEBACK_SHARD__NAME": "b", "CHARGEBACK_SHARD__CLUSTERS": "[x, y]"})
    assert c.clusters == ("x", "y") and c.instance_id == "chargeback-exporter-shard-b"
    c = load_config(environ={"CHARGEBACK_SHARD__NAME": "h0", "CHARGEBACK_SHARD__INDEX": "0",
                             "CHARGEBACK_SHARD__COUNT": "2"})
    assert (c.shard.index, c.shard.count) == (0, 2)


@pytest.mark.parametrize(("sections", "message"), [
    ({"shard": {"index": 0, "count": 2}}, "shard: name is required with clusters or index and count"),
    ({"shard": {"name": "a"}}, "shard: shard a needs clusters, or index and count"),
    ({"shard": {"name": "a", "index": 0}}, "shard: index and count go together"),
    ({"shard": {"name": "a", "count": 2}}, "shard: index and count go together"),
    ({"shard": {"name": "a", "index": 2, "count": 2}}, "shard: index 2 must be below count 2"),
    ({"shard": {"name": "a", "index": -1, "count": 2}}, "shard.index: Input should be greater"),
    ({"shard": {"name": "a", "index": 0, "count": 0}}, "shard.count: Input should be greater"),
    ({"shard": {"name": "a", "clusters": ["x"], "index": 0, "count": 2}}, "shard: give either clusters"),
    ({"shard": {"name": "EU_1", "clusters": ["x"]}}, "shard.name: must be 1 to 40 lower-case letters"),
    ({"shard": {"name": "a", "clusters": ["x", "x"]}}, "shard.clusters: listed more than once: x"),
    ({"shard": {"name": "a", "clusters": [""]}}, "shard.clusters: cluster names must not be empty"),
    ({"shard": {"name": "a", "clusters": ["x", "z"]}, "sysdig": {"clusters": ["x", "y"]}},
     "shard: clusters z not in sysdig.clusters"),
    ({"shard": {"name": "a", "index": 0, "count": 2}, "sysdig": {"clusters": ["prod-eu-1"]}},
     "shard: none of sysdig.clusters (prod-eu-1) hash to index 0 of count 2"),
    ({"shard": {"name": "a", "clusters": ["x"], "lables": {}}}, "shard.lables: unknown key"),
])
def test_inconsistent_shards_are_one_line_errors(sections: dict[str, Any], message: str) -> None:
    if "count" in sections["shard"] and "sysdig" in sections:
        assert shard_of("prod-eu-1", 2) == 1  # the case below relies on it
    with pytest.raises(ConfigError) as err:
        cfg(**sections)
    assert message in str(err.value) and "\n" not in str(err.value)
