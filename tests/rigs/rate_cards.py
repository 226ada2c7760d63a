"""Rate cards that tests in several folders price with, as YAML text."""

from __future__ import annotations

# The smallest valid card. Tests derive broken cards from it by replacing text and expect the
# problems at its lines and columns, so a change here moves their expectations.
MINIMAL = """\
currency: EUR
versions:
  - id: v1
    effective_from: 2026-01-01T00:00:00Z
    default: {cpu: "0.03", memory: "0.004"}
"""

# Default prices only, from January 2026: cpu 0.0310 and memory 0.0042 EUR per unit-hour.
JANUARY_2026 = """\
currency: EUR
versions:
  - id: "2026-01"
    effective_from: 2026-01-01T00:00:00Z
    default: {cpu: "0.0310", memory: "0.0042"}
"""
