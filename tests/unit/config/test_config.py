from pathlib import Path

import pytest

from exporter.config import SysdigConfig, load_config, masked_dict
from exporter.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid() -> None:
    cfg = load_config(environ={})
    assert cfg.periods.length == 3600
    assert cfg.sysdig.verify_tls is True
    assert cfg.periods.grain == "pod"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    p = write(tmp_path, "kafka:\n  topics:\n    recrods: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert str(err.value) == f"{p}: kafka.topics.recrods: unknown key"


def test_bad_values_are_rejected_with_path(tmp_path: Path) -> None:
    p = write(tmp_path, "periods:\n  length: 7m\n")
    with pytest.raises(ConfigError, match=r"periods\.length: must be one of 10m, 1h, 1d"):
        load_config(p, environ={})
    p = write(tmp_path, "sysdig:\n  url: ftp://x\n")
    with pytest.raises(ConfigError, match=r"sysdig\.url: must start with http"):
        load_config(p, environ={})


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, "kafka: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert "\n" not in str(err.value)
    assert str(p) in str(err.value)


def test_environment_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, "kafka:\n  bootstrap_servers: a:9092\n  partitions: 3\n")
    cfg = load_config(p, environ={"CHARGEBACK_KAFKA__BOOTSTRAP_SERVERS": "b:9092",
                                  "CHARGEBACK_PERIODS__SETTLE_DELAY": "2m"})
    assert cfg.kafka.bootstrap_servers == "b:9092"
    assert cfg.kafka.partitions == 3
    assert cfg.periods.settle_delay == 120


def test_unknown_environment_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"environment: sysdig\.tokn: unknown key"):
        load_config(environ={"CHARGEBACK_SYSDIG__TOKN": "x"})


def test_secrets_masked_and_read_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n")
    p = write(tmp_path, f"sysdig:\n  token_file: {secret}\nkafka:\n  sasl_password: hunter22\n")
    cfg = load_config(p, environ={})
    assert cfg.sysdig.resolved_token() == "s3cr3t-token"
    dumped = repr(masked_dict(cfg)) + repr(cfg)
    assert "hunter22" not in dumped
    assert "s3cr3t-token" not in dumped


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = load_config(environ={"CHARGEBACK_SYSDIG__TOKEN_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match=r"sysdig\.token: cannot read secret file"):
        cfg.sysdig.resolved_token()


def test_confluent_framing_needs_registry() -> None:
    with pytest.raises(ConfigError, match="schema_registry"):
        load_config(environ={"CHARGEBACK_KAFKA__FRAMING": "confluent"})


def test_sysdig_tls_verify_follows_requests_order(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a.pem", "b.pem", "c.pem"))
    for f in (a, b, c):
        f.write_text("x")
    both = {"REQUESTS_CA_BUNDLE": str(a), "CURL_CA_BUNDLE": str(b)}
    assert SysdigConfig().tls_verify({}) is True
    assert SysdigConfig().tls_verify(both) == str(a)
    assert SysdigConfig().tls_verify({"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": str(b)}) == str(b)
    assert SysdigConfig(ca_file=c).tls_verify(both) == str(c)
    assert SysdigConfig(verify_tls=False, ca_file=c).tls_verify(both) is False
    with pytest.raises(ConfigError, match=r"^CURL_CA_BUNDLE: CA bundle .*missing.pem does not exist"):
        SysdigConfig().tls_verify({"CURL_CA_BUNDLE": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match=r"^sysdig.ca_file: "):
        SysdigConfig(ca_file=tmp_path / "missing.pem").tls_verify({})


def test_sysdig_limits_margin_and_concurrency_are_validated(tmp_path: Path) -> None:
    cfg = load_config(environ={})
    lim = cfg.sysdig.query_limits()
    assert (lim.segments, lim.raw_series, lim.metrics, lim.samples_per_minute) == (
        100_000, 1_000, 10, 4_000_000_000)
    assert lim.margin == 0.2 and lim.series_budget == 20_000 and lim.concurrency == 4
    for text, problem in (
            ("sysdig:\n  max_concurrency: 201\n", r"sysdig\.max_concurrency: .*200"),
            ("sysdig:\n  limits:\n    margin: 0.01\n", r"sysdig\.limits\.margin: .*0\.05"),
            ("sysdig:\n  limits:\n    margin: 1\n", r"sysdig\.limits\.margin: .*0\.9"),
            ("sysdig:\n  limits:\n    segments: 10000\n  group_series: 9000\n",
             r"sysdig: .*group_series \(9000\) must be at most .* = 8000")):
        with pytest.raises(ConfigError, match=problem):
            load_config(write(tmp_path, text), environ={})
    ok = load_config(write(tmp_path, "sysdig:\n  max_concurrency: 200\n  limits:\n"
                                     "    segments: 10000\n  group_series: 8000\n"), environ={})
    assert ok.sysdig.query_limits().series_budget == 8000


def test_idle_resources_accept_the_charged_gpu_resources(tmp_path: Path) -> None:
    text = ("resources:\n  gpu:\n    resources:\n      nvidia_com_gpu: gpu\n"
            "      nvidia_com_mig_1g_5gb: gpu.mig-1g.5gb\n"
            "idle:\n  enabled: true\n  resources:\n    gpu.mig-1g.5gb: nvidia_com_mig_1g_5gb\n"
            "    cpu: cpu\n    gpu: nvidia_com_gpu\n    memory: memory\n")
    cfg = load_config(write(tmp_path, text), environ={})
    # cpu and memory first, then GPUs by name: the order of the allocatable query's names.
    assert list(cfg.idle.resources.items()) == [
        ("cpu", "cpu"), ("memory", "memory"), ("gpu", "nvidia_com_gpu"),
        ("gpu.mig-1g.5gb", "nvidia_com_mig_1g_5gb")]


def test_idle_resources_must_be_charged(tmp_path: Path) -> None:
    for extra, problem in (
            ("    gpu.mig-3g.20gb: nvidia_com_mig_3g_20gb\n",
             r"^.*: idle: resources: gpu\.mig-3g\.20gb is not a resource charged from node "
             r"allocatable \(cpu, memory, gpu; resources\.gpu\.resources names the GPU ones\)$"),
            ("    storage.standard: standard\n",
             r"idle: resources: storage\.standard is not a resource charged from node"),
            ("    cpus: cpu\n", r"idle: resources: cpus is not a resource charged from node")):
        p = write(tmp_path, f"idle:\n  enabled: true\n  resources:\n    cpu: cpu\n{extra}")
        with pytest.raises(ConfigError, match=problem) as err:
            load_config(p, environ={})
        assert "\n" not in str(err.value)
    p = write(tmp_path, "resources:\n  gpu:\n    enabled: false\n"
                        "idle:\n  resources:\n    gpu: nvidia_com_gpu\n")
    with pytest.raises(ConfigError, match=r"idle: resources: gpu is not a resource charged from node "
                                          r"allocatable \(cpu, memory; resources\.gpu is disabled\)"):
        load_config(p, environ={})
