"""The exporter's units computed through a real Prometheus (behind Sysdig's prefix and auth,
queried by the real sdcclient) equal the fleet's ground truth."""

from __future__ import annotations

import pytest

from chargeback_simulator.allocations import GPU_RESOURCES
from chargeback_simulator.prometheus import SysdigPrometheusProxy
from exporter.config import load_config
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.wiring import build_source
from tests.integration.sysdig.test_source_ground_truth import assert_equals_ground_truth

from .conftest import ConformanceData


@pytest.mark.parametrize("grain", ["pod", "container"])
@pytest.mark.parametrize("hour", [0, 1])
def test_units_through_real_prometheus(conformance_data: ConformanceData,
                                       prometheus_proxy: SysdigPrometheusProxy,
                                       grain: str, hour: int) -> None:
    data = conformance_data
    cfg = load_config(environ={}, overrides={
        "sysdig": {"url": prometheus_proxy.url, "token": data.token, "retention_tiers": False},
        "periods": {"grain": grain},
        "resources": {"gpu": {"resources": dict(GPU_RESOURCES)}},
    })
    period = Period(data.start + hour * 3600, data.start + (hour + 1) * 3600)
    lines = charge_lines(build_source(cfg, data.clock).fetch(period), OrgModel(cfg.org))
    assert_equals_ground_truth(data.fleet, period, lines, grain=grain)
