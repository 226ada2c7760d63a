"""The `check-labels` subcommand: org labels on Kubernetes manifests and Dockerfiles, in review.

The package owns the label policy and the checks over manifests, Dockerfiles and the files they
are read from (`check`), the text, JSON and SARIF output (`output`) and the command line
(`command`). It may import the exporter's config, model and `org` (the allow-list reader billing
uses too), nothing that talks to Sysdig or Kafka; nothing but `cli` imports it, through
`register`. Modules depend downwards only: command → output → check.
"""

from exporter.labelcheck.command import register

__all__ = ["register"]
