"""kill -9 at random points, restart, repeat: a read_committed consumer still sees every
(period, workload, resource) exactly once, equal to the fleet's ground truth.

The seed is in the test id; `scripts/crash-campaign.py` runs bigger campaigns with the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chargeback_simulator.localbroker import LocalBroker
from tests.rigs.campaign import MODES, Campaign, CampaignSpec, plan_kills

pytestmark = pytest.mark.slow

SEEDS = (20261129,)


def test_kill_plan_is_reproducible_from_the_seed() -> None:
    a, b = plan_kills(CampaignSpec(seed=5)), plan_kills(CampaignSpec(seed=5))
    assert a == b and len(a) == 36
    assert plan_kills(CampaignSpec(seed=6)) != a
    assert {k.mode for k in a} == set(MODES)  # every kind of kill point is exercised


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed={s}")
def test_sigkill_campaign_is_exactly_once(seed: int, fresh_noida: LocalBroker, tmp_path: Path) -> None:
    result = Campaign(CampaignSpec(seed=seed), tmp_path, fresh_noida).run()
    summary = result.summary()
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    ledger = result.ledger
    assert ledger is not None
    assert ledger.problems == [], ledger.problems
    assert len(result.kills) >= 30, summary
    assert ledger.periods >= 100, summary
    assert (ledger.duplicates, ledger.gaps, ledger.extras, ledger.wrong_quantities,
            ledger.manifest_problems) == (0, 0, 0, 0, 0), summary
    assert ledger.records > 0 and ledger.manifests >= ledger.periods
    assert result.unexpected_exits == [], result.unexpected_exits
    # The broker itself shows that kills interrupted open transactions (records written, then
    # aborted by the next instance's init_transactions) and that nothing of them is visible.
    assert ledger.aborted_transactions >= 1, summary
