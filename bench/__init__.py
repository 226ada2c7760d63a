"""Performance benchmark of the exporter's per-period path (`python -m bench`, `make bench`).

The harness records the Sysdig simulator's answers for a fleet once, serves the recorded bytes
from a trivial HTTP server in a separate process (so the simulator's PromQL evaluation is not in
the exporter's time, and the server's CPU is not in the exporter's process), and drives the real
`SysdigSource` (real sdcclient), `Pipeline`, `AvroCodec` and `KafkaPeriodSink` against a real
noida-db broker. Each measurement runs in a fresh subprocess so peak RSS is its own.

Layout: `fleets` (sizes, configuration), `record` (simulator answers to files), `replay` (the
HTTP server), `measure` (per-period phases, ceilings, Avro and consumer throughput), `backfill`
(RSS over many periods), `profile` (cProfile of one period), `report` (tables), `__main__` (the
driver and the subprocess entry points).
"""
