"""The `check-labels` subcommand: build the policy from flags and config, check, report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.clock import Clock
from exporter.config import load_config
from exporter.labelcheck.check import build_policy, check_paths
from exporter.labelcheck.output import format_text, to_json, to_sarif
from exporter.model import ORG_KEYS


def _split_keys(values: Sequence[str] | None) -> list[str]:
    if not values:
        return list(ORG_KEYS)
    return [k for v in values for k in v.split(",")]


def _run(args: argparse.Namespace, *, clock: Clock) -> int:
    org = None
    if args.config_file is not None:
        org = load_config(Path(args.config_file)).org
    policy = build_policy(_split_keys(args.required), args.alias or (), args.allowed or (), org)
    report = check_paths(args.paths, policy)
    if args.format == "json":
        sys.stdout.write(json.dumps(to_json(report), indent=2) + "\n")
    elif args.format == "sarif":
        sys.stdout.write(json.dumps(to_sarif(report), indent=2) + "\n")
    else:
        sys.stdout.write(format_text(report))
    for shown, reason in report.skipped:
        print(f"chargeback-exporter check-labels: skipped {shown}: {reason}", file=sys.stderr)
    for problem in report.problems:
        print(f"chargeback-exporter check-labels: error: {problem.text()}", file=sys.stderr)
    if args.format == "text":
        n = len(report.violations)
        print(f"{n} violation{'s' if n != 1 else ''} in {len(report.files)} file"
              f"{'s' if len(report.files) != 1 else ''} checked", file=sys.stderr)
    return report.exit_code()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check-labels PATH...`."""
    p = subparsers.add_parser(
        "check-labels",
        help="check org labels in Kubernetes manifests and Dockerfiles",
        description="Check that Kubernetes workloads (and their pod templates) and Dockerfiles "
        "carry the required org labels with non-blank, allowed values. Exit 0 when clean, 1 on "
        "violations, 2 when an input cannot be read or parsed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="manifest, Dockerfile or directory to walk; - reads YAML from stdin")
    p.add_argument("--required", action="append", metavar="KEYS",
                   help=f"comma-separated required label keys (default: {','.join(ORG_KEYS)})")
    p.add_argument("--allowed", action="append", metavar="KEY=FILE.csv",
                   help="allow-list for KEY: the CSV column named KEY, else its first column")
    p.add_argument("--alias", action="append", metavar="ALIAS=KEY",
                   help="accept label ALIAS for required KEY, e.g. cost-center=costcenter")
    p.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help="exporter config whose org section adds label aliases and allow-lists")
    p.add_argument("--format", choices=("text", "json", "sarif"), default="text",
                   help="output format (default: text)")
    p.set_defaults(handler=_run)
