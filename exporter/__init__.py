"""Sysdig chargeback exporter: usage from Sysdig to exactly-once Avro billing records on Kafka.

The top-level modules are the domain along the data flow (`units`, `org`, `pricing`,
`shared_costs`, `coverage`, `records`, `money`), the one export path (`pipeline`,
`publication`, `completeness`), the composition root (`wiring`) and the subcommands; the
adapters are packages (`sysdig`, `avro`, `kafka`), each the only importer of its client
library. Domain modules import no adapter and never `wiring`; only the subcommands build
adapters, through `wiring`. The map is docs/architecture.md.
"""

__version__ = "0.1.0"
