"""`shards` renders one Deployment (and one backfill Job) per shard, which the application
accepts as disjoint shards with their own transactional ids; the default stays one Deployment.

Each rendered workload is materialised as its pod would see it (ConfigMap files and
environment) and loaded with the application's own configuration loader, so what is asserted
is what each pod would run with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, load_config
from tests.integration.helm.chartlib import CHART, Helm, Rendered, Result
from tests.integration.helm.test_chart_config import check_config, materialise
from tests.integration.helm.test_chart_manifests import render_notes

SHARD_LABEL = "chargeback-exporter/shard"
BASE = CHART / "ci" / "default-values.yaml"
CLUSTERS = ["prod-eu-1", "prod-eu-2", "prod-us-1"]
LISTED = [{"name": "eu", "clusters": CLUSTERS[:2]}, {"name": "us", "clusters": CLUSTERS[2:]}]
HASHED = [{"name": "h0", "index": 0}, {"name": "h1", "index": 1}]


def loaded(rendered: Rendered, workload: dict[str, Any], root: Path) -> Config:
    """The configuration the workload's pod would load (the app's loader, the pod's env)."""
    path, env = materialise(rendered, workload, root)
    assert check_config(path, env).returncode == 0
    return load_config(path, environ=env)


def test_the_default_is_one_unsharded_deployment(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(BASE)
    dep = rendered.one("Deployment")
    assert dep["metadata"]["name"] == "billing-chargeback-exporter"
    assert SHARD_LABEL not in dep["spec"]["selector"]["matchLabels"]
    cfg = loaded(rendered, dep, tmp_path)
    assert not cfg.shard.sharded and cfg.instance_id == "chargeback-exporter"


@pytest.mark.parametrize("shards", [HASHED, LISTED], ids=["hash", "list"])
def test_two_shards_render_two_disjoint_deployments(
        helm: Helm, tmp_path: Path, shards: list[dict[str, Any]],
        kube_validate: Callable[[Path], Result]) -> None:
    rendered = helm.render(BASE, values={"shards": shards,
                                         "config": {"kafka": {"transactional_id": "billing"}}})
    deps = rendered.all("Deployment")
    assert [d["metadata"]["name"] for d in deps] == [
        f"billing-chargeback-exporter-{s['name']}" for s in shards]
    configs = []
    for dep, shard in zip(deps, shards, strict=True):
        spec = dep["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        assert spec["selector"]["matchLabels"][SHARD_LABEL] == shard["name"]
        assert spec["template"]["metadata"]["labels"][SHARD_LABEL] == shard["name"]
        configs.append(loaded(rendered, dep, tmp_path / shard["name"]))
    assert [c.instance_id for c in configs] == [f"billing-shard-{s['name']}" for s in shards]
    # Every cluster belongs to exactly one shard.
    for cluster in [*CLUSTERS, "staging-ap-9"]:
        owners = [c.shard.name for c in configs if c.shard.owns(cluster)]
        assert len(owners) == (1 if "clusters" not in shards[0] or cluster in CLUSTERS else 0), owners
    if "index" in shards[0]:
        assert [(c.shard.index, c.shard.count) for c in configs] == [(0, 2), (1, 2)]
        assert all(c.discovers_clusters for c in configs)
    else:
        assert [list(c.clusters) for c in configs] == [s["clusters"] for s in shards]
    # One Service selects both shards' pods.
    selector = rendered.one("Service")["spec"]["selector"]
    for dep in deps:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.text, encoding="utf-8")
    res = kube_validate(out)
    assert res.returncode == 0, res.output
    assert res.output.count(" passed for resource ") == len(rendered.docs)


def test_each_shard_gets_its_own_backfill_job(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(CHART / "ci" / "shards-values.yaml")
    jobs = rendered.all("Job")
    assert len(jobs) == 2 and len({j["metadata"]["name"] for j in jobs}) == 2
    ids = []
    for job in jobs:
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        cfg = loaded(rendered, job, tmp_path / job["metadata"]["name"])
        assert env["CHARGEBACK_BACKFILL__TRANSACTIONAL_ID"] == f"{cfg.instance_id}-backfill"
        ids.append(env["CHARGEBACK_BACKFILL__TRANSACTIONAL_ID"])
    assert ids == ["chargeback-exporter-shard-h0-backfill", "chargeback-exporter-shard-h1-backfill"]


@pytest.mark.parametrize(("values", "message"), [
    ({"shards": [{"name": "a", "clusters": ["c1", "c2"]}, {"name": "b", "clusters": ["c2"]}]},
     "shards: cluster c2 is in shards a and b (it would be billed twice)"),
    ({"shards": [{"name": "a", "clusters": ["x"]}, {"name": "b", "index": 0}]},
     "shards: either every shard lists its clusters or every shard has a hash index, not a mix"),
    ({"shards": [{"name": "a", "index": 0}, {"name": "b", "index": 2}]},
     "shards: hash indexes must be 0 to 1, each once (index 1 is missing)"),
    ({"shards": [{"name": "a", "index": 0}, {"name": "b", "index": 0}]},
     "shards: hash indexes must be 0 to 1, each once (index 1 is missing)"),
    ({"shards": [{"name": "a", "index": 0}, {"name": "a", "index": 1}]},
     "shards: name a is used twice"),
    ({"shards": HASHED, "backfill": {"transactionalId": "mine"}},
     "backfill.transactionalId: not with shards"),
])
def test_the_chart_refuses_inconsistent_shards(helm: Helm, values: dict[str, Any], message: str) -> None:
    res = helm.template(BASE, values=values)
    assert res.returncode != 0
    assert message in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("Error")]) == 1


@pytest.mark.parametrize("shard", [
    {"name": "EU_1", "clusters": ["x"]},
    {"name": "a"},
    {"name": "a", "clusters": ["x"], "index": 0},
    {"name": "a", "clusters": []},
    {"name": "a", "index": -1},
    {"name": "a", "index": 0, "count": 2},
], ids=["name", "neither", "both", "empty-list", "negative", "count-is-derived"])
def test_the_schema_refuses_a_malformed_shard(helm: Helm, shard: dict[str, Any]) -> None:
    res = helm.template(BASE, values={"shards": [shard]})
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr
    assert "shards.0" in res.stderr


def test_config_shard_is_refused_in_favour_of_shards(helm: Helm) -> None:
    res = helm.template(BASE, values={"config": {"shard": {"name": "a", "clusters": ["x"]}}})
    assert res.returncode != 0
    assert "config: Additional property shard is not allowed" in res.stderr


def test_notes_name_the_shards(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, CHART / "ci" / "shards-values.yaml", tmp_path / "sharded")
    assert notes.startswith("billing-chargeback-exporter runs one pod per shard (replicas 1, "
                            "strategy Recreate),\n2 shards: h0, h1 (Deployments "
                            "billing-chargeback-exporter-<shard>).\n")
    single = render_notes(helm, BASE, tmp_path / "single")
    assert single.startswith("billing-chargeback-exporter runs as a single pod (replicas 1, "
                             "strategy Recreate):\na billing emitter must never overlap with "
                             "itself.\n\nKafka:")
