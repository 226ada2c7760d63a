"""The conformance suite's real Prometheus (Debian's, loaded with the synthetic fleet).

Imported rather than redefined so both suites evaluate against the same data set; a session run
of both starts one Prometheus per package.
"""

from conformance.conftest import conformance_data, prometheus  # noqa: F401
