"""The exporter's development companion: a simulated Sysdig Monitor, local brokers and the demo.

It owns the deterministic synthetic fleet (`fleet`, `series`), the vectorised PromQL evaluator
(`promql`), the HTTP server that serves both as Sysdig's API (`server`, `hostile`, `background`),
a real Prometheus fed with the same fleet (`prometheus`), the noida-db and Tansu launchers
(`localbroker`, `processes`) and the `simulate` and `demo` subcommands (`command`, `demo`). It
may import anything from `exporter`; nothing in `exporter` imports it, except the CLI, which
registers its subcommands when this distribution is installed (the exporter's `simulator` extra).
"""

__version__ = "0.1.0"
