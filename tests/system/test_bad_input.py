"""Bad input that only the real process meets: one line on stderr, never a traceback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from chargeback_simulator.localbroker import LocalBroker
from tests.rigs.harness import ExporterProcess


@pytest.mark.parametrize("extra", [{"no.such.property": "x"}, {"message.timeout.ms": "999999999"}],
                         ids=["unknown-property", "invalid-value"])
def test_a_bad_librdkafka_setting_in_kafka_extra_is_one_line(
        tmp_path: Path, noida: LocalBroker, extra: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "sysdig": {"url": "http://127.0.0.1:9", "token": "bad-input-token"},
        "kafka": {"bootstrap_servers": noida.bootstrap, "partitions": 1, "replication_factor": 1,
                  "transactional_id": f"bad-{tag}", "extra": extra,
                  "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}", "checkpoint": f"c-{tag}"}},
        "web": {"enabled": False},
    }))
    proc = ExporterProcess(["run", "--once", "--config.file", str(path)])
    code = proc.wait(120)
    plain = [ln for ln in proc.stderr_lines if not ln.startswith("{")]
    assert "Traceback" not in proc.stderr, plain[-3:]
    assert code == 2 and len(plain) == 1 and "kafka.extra" in plain[0], plain
