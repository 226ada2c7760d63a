"""The `backfill` subcommand: (re)publish a past range of periods, with corrections."""
