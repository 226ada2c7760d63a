"""The `backfill` subcommand: (re)publish a past range of periods, with corrections.

The package owns the backfill's reading of published state back from Kafka (`state`), deciding
which periods to measure at which step and what to refuse (`plan`), measuring and publishing
them (`runner`), showing progress and the report (`render`) and the command line (`command`).
It may import the exporter's domain, `pipeline` and `publication` (the one publishing policy)
and the factories of `wiring` (the composition root), never the worker; nothing but `cli` imports it, through
`register`. Modules depend downwards only: command → render → runner → plan → state.
"""

from exporter.backfill.command import register

__all__ = ["register"]
