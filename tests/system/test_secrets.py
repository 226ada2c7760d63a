"""No secret ever leaves the process: every command, its logs, errors, /metrics and the records.

Known values are configured as the Sysdig token (from a file, inline and from the environment),
the Kafka SASL password (noida accepts SASL/PLAIN, so it is really used) and the Schema Registry
basic-auth password (the registry fake checks it). Every subcommand runs as a real process, on
its happy path and on its error paths (wrong token, wrong registry password, unreachable broker);
then everything they printed, what the health server serves, and every byte on the three topics
are scanned for the values, their base64 forms and their distinctive middles. Zero hits.
"""

from __future__ import annotations

import base64
import json
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker, free_port
from chargeback_simulator.server import SimulatorServer
from exporter.clock import SystemClock
from exporter.config import Config, load_config
from exporter.periods import align_down, iso
from tests.fakes.schema_registry import FakeSchemaRegistry
from tests.rigs.campaign import tune_server
from tests.rigs.harness import ExporterProcess, clean_env, is_event, read_committed, read_uncommitted

pytestmark = pytest.mark.slow

TOKEN = "sdc-token-7Q2fKx9LmZ4pRt"
ENV_TOKEN = "sdc-envtok-3Hs8Vb1NcY6wJe"
WRONG_TOKEN = "sdc-wrongtok-5Gd2Pq7XaU0kMi"
SASL_PASSWORD = "sasl-pass-8Jw4Ck2RnE6tYb"
REGISTRY_USER = "exporter"
REGISTRY_PASSWORD = "sr-pass-1Lm9Zt5QvB3xHs"
WRONG_REGISTRY_PASSWORD = "sr-wrongpass-6Fy2Nd8KcR4wPa"
SIM_TOKEN = "sim-cli-token-2Rk7Wm4XpT9eLc"
SECRETS = (TOKEN, ENV_TOKEN, WRONG_TOKEN, SASL_PASSWORD, REGISTRY_PASSWORD, WRONG_REGISTRY_PASSWORD,
           SIM_TOKEN)


def needles() -> dict[bytes, str]:
    """Byte patterns that would betray a secret, with what each one is."""
    out: dict[bytes, str] = {}
    composites = [(s, s) for s in SECRETS] + [
        (f"{REGISTRY_USER}:{p}", p) for p in (REGISTRY_PASSWORD, WRONG_REGISTRY_PASSWORD)] + [
        (f"\0exporter\0{SASL_PASSWORD}", SASL_PASSWORD), (f"Bearer {TOKEN}", TOKEN)]
    for text, secret in composites:
        raw = text.encode()
        out[raw] = secret
        out[secret[6:18].encode()] = secret  # a distinctive middle: no partial leak either
        for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            out[enc] = f"base64 of {secret}"
            out[enc.rstrip(b"=")[:-2]] = f"base64 of {secret}"  # any padding or alignment
    return out


def scan(sources: dict[str, bytes]) -> list[str]:
    hits = []
    for where, data in sources.items():
        for needle, what in needles().items():
            if needle in data:
                hits.append(f"{what} in {where}")
    return hits


class Env:
    """Simulator, broker and registry, and the config files of every scenario."""

    def __init__(self, tmp: Path, broker: LocalBroker, registry: FakeSchemaRegistry) -> None:
        self.tmp = tmp
        self.clock = SystemClock()
        self.fleet = Fleet(FleetSpec(seed=9, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3),
                           clock=self.clock, history=4 * 3600)
        self.server = SimulatorServer(self.fleet, self.clock, tokens=[TOKEN, ENV_TOKEN]).start()
        tune_server(self.server)
        self.broker = broker
        self.registry = registry
        self.start = align_down(int(self.clock.time()) - 1800, 600)
        (tmp / "token").write_text(TOKEN + "\n")

    def config(self, name: str, **changes: dict[str, Any]) -> Path:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        doc: dict[str, Any] = {
            "sysdig": {"url": self.server.url, "token_file": str(self.tmp / "token"), "timeout": 10,
                       "max_attempts": 2, "max_retry_time": 10, "retention_tiers": False},
            "periods": {"length": "10m", "settle_delay": "1m", "start": self.start},
            "kafka": {"bootstrap_servers": self.broker.bootstrap, "security_protocol": "SASL_PLAINTEXT",
                      "sasl_mechanism": "PLAIN", "sasl_username": "exporter",
                      "sasl_password": SASL_PASSWORD, "partitions": 1, "replication_factor": 1,
                      "transactional_id": f"secrets-{tag}", "transaction_timeout": 20,
                      "connect_timeout": 10, "framing": "confluent",
                      "schema_registry": {"url": self.registry.url,
                                          "basic_auth_user_info": f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"},
                      "topics": {"records": f"r-{tag}", "manifests": f"m-{tag}", "checkpoint": f"c-{tag}"}},
            "web": {"enabled": True, "listen_address": f"127.0.0.1:{free_port()}"},
            "logging": {"format": "json", "level": "DEBUG"},
        }
        for section, values in changes.items():
            for key, value in values.items():
                if value is None:
                    doc[section].pop(key, None)
                elif isinstance(value, dict) and isinstance(doc[section].get(key), dict):
                    doc[section][key] = {**doc[section][key], **value}
                else:
                    doc[section][key] = value
        path = self.tmp / f"{name}.yaml"
        path.write_text(json.dumps(doc, indent=1))
        return path

    def loaded(self, path: Path) -> Config:
        return load_config(path, environ={})


@pytest.fixture
def env(tmp_path: Path, noida: LocalBroker) -> Iterator[Env]:
    with FakeSchemaRegistry(auth=(REGISTRY_USER, REGISTRY_PASSWORD)) as registry:
        e = Env(tmp_path, noida, registry)
        try:
            yield e
        finally:
            e.server.stop()


def one_line_error(proc: ExporterProcess, command: str) -> str:
    plain = [ln for ln in proc.stderr_lines if not ln.startswith("{")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(plain) == 1 and plain[0].startswith(f"chargeback-exporter {command}: error: "), plain
    return plain[0]


def http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - 127.0.0.1
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:  # /readyz answers 503 when not ready; the body counts
        return exc.read()


def test_no_secret_in_any_output(env: Env, tmp_path: Path) -> None:
    good = env.config("good")
    env_token = env.config("envtoken", sysdig={"token_file": None})
    wrong_token = env.config("wrongtoken", sysdig={"token_file": None, "token": WRONG_TOKEN})
    no_broker = env.config("nobroker", kafka={"bootstrap_servers": "127.0.0.1:1", "connect_timeout": 2})
    wrong_registry = env.config("wrongregistry", kafka={"schema_registry": {
        "basic_auth_user_info": f"{REGISTRY_USER}:{WRONG_REGISTRY_PASSWORD}"}})
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  labels: {costcenter: CC-1}\n"
        "spec:\n  template:\n    metadata:\n      labels: {team: atlas}\n")
    window = ["--from", iso(env.start), "--to", iso(env.start + 1200)]

    def run(*argv: str, token_env: bool = False) -> ExporterProcess:
        extra = {"CHARGEBACK_SYSDIG__TOKEN": ENV_TOKEN} if token_env else {}
        return ExporterProcess(list(argv), env=clean_env(**extra))

    # Phase 1, all at once: the happy export and every error path.
    procs: dict[str, ExporterProcess] = {
        "check-config": run("check-config", "--config.file", str(good)),
        "check-config env": run("check-config", "--config.file", str(env_token), token_env=True),
        "report": run("report", "--config.file", str(good), *window, "--format", "json"),
        "report env": run("report", "--config.file", str(env_token), *window, token_env=True),
        "report wrong token": run("report", "--config.file", str(wrong_token), *window),
        "dashboard export": run("dashboard", "export", "--config.file", str(good)),
        "dashboard install": run("dashboard", "install", "--config.file", str(good)),
        "dashboard install wrong token": run("dashboard", "install", "--config.file", str(wrong_token)),
        "check-labels": run("check-labels", str(manifests), "--config.file", str(good)),
        "run --once": run("run", "--once", "--config.file", str(good)),
        "run --once wrong token": run("run", "--once", "--config.file", str(wrong_token)),
        "run --once wrong registry password": run("run", "--once", "--config.file", str(wrong_registry)),
        "run --once no broker": run("run", "--once", "--config.file", str(no_broker)),
        "tail no broker": run("tail", "--config.file", str(no_broker)),
        "simulate": run("simulate", "--token", SIM_TOKEN, "--port", "0"),
    }
    assert procs["simulate"].wait_stdout(b"Sysdig simulator serving", timeout=60)
    procs["simulate"].signal(signal.SIGTERM)
    codes = {name: p.wait(240) for name, p in procs.items()}

    assert codes["check-config"] == codes["check-config env"] == 0
    for name in ("check-config", "check-config env"):
        assert b"**********" in procs[name].stdout
    assert codes["report"] == codes["report env"] == 0 and json.loads(procs["report"].stdout)
    assert codes["dashboard export"] == codes["dashboard install"] == 0
    assert env.server.dashboards, "the dashboard was installed with the token"
    assert codes["check-labels"] in (0, 1)
    assert codes["run --once"] == 0
    assert procs["run --once"].matching("period exported"), "the good run exported"
    assert codes["simulate"] == 0 and b"1 token(s) from --token" in procs["simulate"].stdout
    for name, command, expect in (("report wrong token", "report", "401"),
                                  ("dashboard install wrong token", "dashboard", "401"),
                                  ("run --once wrong token", "run", "401"),
                                  ("run --once wrong registry password", "run", "401"),
                                  ("run --once no broker", "run", "127.0.0.1:1"),
                                  ("tail no broker", "tail", "127.0.0.1:1")):
        assert codes[name] != 0, name
        assert expect in one_line_error(procs[name], command), name

    # Phase 2: the good instance's data read back, a dry-run backfill, and a serving worker.
    cfg = env.loaded(good)
    phase2 = {
        "tail records": run("tail", "--config.file", str(good)),
        "tail manifests": run("tail", "--config.file", str(good), "--topic", "manifests"),
        "backfill --dry-run": run("backfill", "--config.file", str(good), *window, "--dry-run"),
    }
    serving = run("run", "--config.file", str(good))
    assert serving.wait_event(is_event("worker started"), timeout=60) is not None, serving.stderr[-2000:]
    base = f"http://{cfg.web.listen_address}"
    served = {path: http_get(base + path) for path in ("/metrics", "/healthz", "/readyz")}
    serving.signal(signal.SIGTERM)
    procs.update(phase2)
    procs["run"] = serving
    codes.update({name: p.wait(120) for name, p in {**phase2, "run": serving}.items()})
    assert codes["tail records"] == codes["tail manifests"] == codes["run"] == 0
    assert procs["tail records"].stdout.count(b"\n") >= 1
    assert codes["backfill --dry-run"] == 0, procs["backfill --dry-run"].stderr[-2000:]
    assert b"chargeback_periods_exported_total" in served["/metrics"]

    sources: dict[str, bytes] = {}
    for name, p in procs.items():
        sources[f"{name} stdout"] = p.stdout
        sources[f"{name} stderr"] = p.stderr.encode()
    for path, body in served.items():
        sources[path] = body
    for topic in (cfg.kafka.topics.records, cfg.kafka.topics.manifests, cfg.kafka.topics.checkpoint):
        for reader in (read_committed, read_uncommitted):
            msgs = reader(cfg, topic)
            assert msgs or topic != cfg.kafka.topics.records
            sources[f"{topic} ({reader.__name__})"] = b"".join(
                (m.key or b"") + m.value + b"".join(k.encode() + v for k, v in m.headers.items())
                for m in msgs)
    sources["installed dashboards"] = json.dumps(env.server.dashboards).encode()
    print(json.dumps({"commands": codes, "sources": len(sources),
                      "bytes_scanned": sum(len(v) for v in sources.values()),
                      "errors": {n: [ln for ln in p.stderr_lines if not ln.startswith("{")]
                                 for n, p in procs.items() if codes[n]}}, indent=1))
    assert scan(sources) == []
    # The scan itself works: the same needles are found where the secrets legitimately are.
    assert scan({"token file": (tmp_path / "token").read_bytes()}) == [f"{TOKEN} in token file"] * 2
