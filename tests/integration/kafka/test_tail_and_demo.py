"""`tail` shows what a read_committed consumer sees; `demo` runs the whole job on the default."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from exporter import cli
from exporter.clock import FakeClock
from exporter.config import Config
from exporter.periods import iso
from tests.rigs.kafka import T0, hours, publish_periods

H = 3600


def test_tail_prints_committed_records(kafka_config: Callable[..., Config], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = kafka_config()
    clock = FakeClock(T0 + 3 * H)
    publish_periods(cfg, clock, hours(2))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)
                                   | {"sysdig": {"token": "t", "url": "http://127.0.0.1:1"}}))
    assert cli.main(["tail", "--config.file", str(path), "--log.format", "text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(x) for x in lines]
    assert len(docs) == 8
    assert {d["period_start"] for d in docs} == {iso(T0), iso(T0 + H)}
    assert all(d["revision"] == 0 and d["unit"] in ("Core-Hours", "GiB-Hours") for d in docs)
    assert cli.main(["tail", "--config.file", str(path), "--format", "table", "--latest"]) == 0
    out = capsys.readouterr().out
    assert "8 records" in out
    assert cli.main(["tail", "--config.file", str(path), "--topic", "manifests"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("distribute", [[], ["--distribute-idle", "even"]])
def test_demo_exports_and_matches_ground_truth(capsys: pytest.CaptureFixture[str],
                                               distribute: list[str]) -> None:
    assert cli.main(["demo", "--periods", "2", *distribute]) == 0
    out = capsys.readouterr().out
    assert "exported 2 periods" in out
    assert "NO" not in out
    assert "Every (period, workload, resource) once: yes" in out
    # GPUs, MIG slices, storage classes and idle next to cpu and memory, by cost center, each
    # row exactly the truth.
    [header] = [ln for ln in out.splitlines() if "GPU-Hours" in ln and "Core-Hours" in ln]
    # memory, then the storage classes standard, premium-ssd, nfs and none
    assert header.count("GPU-Hours") == 3 and header.count("GiB-Hours") == 5
    for name in ("gpu.mig-1g.5gb", "storage.premium-ssd", "storage.nfs", "storage.<none>"):
        assert name in out
    rows = [ln for ln in out.splitlines() if ln.rstrip(" │").endswith("exact")]
    assert len(rows) > 10 and sum("__idle__" in ln for ln in rows) == 2
    # GPU idle capacity: each cluster's __idle__ row has idle GPUs and MIG slices (the
    # columns after cpu and memory), and the capacity table a line per GPU resource.
    columns = [c.strip() for c in header.strip("┃ ").split("┃")]
    gpu_columns = [i for i, c in enumerate(columns) if c == "GPU-Hours"]
    for ln in rows:
        if "__idle__" in ln:
            cells = [c.strip() for c in ln.strip("│ ").split("│")]
            assert all(Decimal(cells[i]) > 0 for i in gpu_columns), ln
    capacity = [ln for ln in out.splitlines() if "(GPU-Hours)" in ln]
    assert len(capacity) == 2 * 3 and all(ln.rstrip(" │").endswith("yes") for ln in capacity)


def test_tail_manifests_honour_latest_and_format(kafka_config: Callable[..., Config],
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = kafka_config()
    clock = FakeClock(T0 + 3 * H)
    publish_periods(cfg, clock, hours(2))
    publish_periods(cfg, clock, hours(1))  # the same first period again: a second manifest
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)
                                   | {"sysdig": {"token": "t", "url": "http://127.0.0.1:1"}}))
    base = ["tail", "--config.file", str(path), "--topic", "manifests"]
    assert cli.main(base) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli.main([*base, "--latest"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert cli.main([*base, "--latest", "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "2 manifests" in out and "content_hash" not in out.splitlines()[-1]
    assert not out.lstrip().startswith("{")


def test_tail_rejects_a_reversed_window_in_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {bootstrap_servers: '127.0.0.1:9'}\n")
    code = cli.main(["tail", "--config.file", str(path), "--from", "2026-11-02T00:00:00Z",
                     "--to", "2026-11-01T00:00:00Z"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--from 2026-11-02T00:00:00Z is not before --to 2026-11-01T00:00:00Z" in err


def test_demo_refuses_hours_past_the_simulators_10s_window(
        capsys: pytest.CaptureFixture[str]) -> None:
    # GPUs and claims are simulated at 10 s only, so a rolled-up hour would have no truth.
    assert cli.main(["demo", "--periods", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--periods must be 1 to " in err and "10 s window" in err
