"""The `chargeback-exporter` command.

`main` picks the clock (the system clock unless one is injected) and hands it to the subcommand;
the adapters are built from configuration by `exporter.wiring`, the composition root. Each
subcommand lives in the module that owns it, which exposes `register(subparsers)`; the
registered handler takes the parsed namespace and the clock and returns an exit code. Every
`ExporterError` becomes one line on stderr (a `ConfigError`, one line per problem) and its exit
code; nothing else escapes as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

from exporter import __version__, stopping
from exporter.clock import Clock, SystemClock
from exporter.errors import ConfigError, ExporterError


class Handler(Protocol):
    """A subcommand: runs it with the parsed arguments on `clock`; returns the exit code."""

    def __call__(self, args: argparse.Namespace, *, clock: Clock) -> int: ...


# Modules that contribute subcommands through `register(subparsers) -> None`.
_COMMAND_MODULES: tuple[str, ...] = (
    "exporter.commands",
    "exporter.preflight",
    "exporter.labelcheck",
    "exporter.run",
    "exporter.backfill",
    "exporter.dashboard",
    "exporter.tail",
    "exporter.focus",
)

# Subcommands of the `simulator` extra (the sibling distribution sysdig-chargeback-simulator),
# which the production image does not carry: registered when it is installed, else answered with
# one line saying how to install it.
_EXTRA_COMMANDS: dict[str, str] = {
    "simulate": "chargeback_simulator.command",
    "demo": "chargeback_simulator.demo",
}
# The top-level modules the extra brings; any other missing module is a bug, not a missing extra.
_EXTRA_MODULES = frozenset({"chargeback_simulator", "numpy", "promql_parser", "noida_db"})
INSTALL_SIMULATOR = "pip install 'sysdig-chargeback-exporter[simulator]'"


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: no usage block above them (`--help` has it).

    Subcommand parsers are of this class too (`add_subparsers` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chargeback-exporter",
        description="Sysdig usage to exactly-once Avro billing records on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    for command, name in _EXTRA_COMMANDS.items():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in _EXTRA_MODULES:
                raise
            _register_missing(sub, command)
        else:
            module.register(sub)
    return parser


def _register_missing(sub: Any, command: str) -> None:
    """A stand-in for an extra's subcommand: takes any arguments, says how to install it."""
    p = sub.add_parser(command, add_help=False, help=f"needs the simulator extra ({INSTALL_SIMULATOR})")

    def missing(args: argparse.Namespace, *, clock: Clock) -> int:
        raise ConfigError(f"needs the simulator extra, which is not installed: {INSTALL_SIMULATOR} "
                          "(from a source checkout: make install)")

    p.set_defaults(handler=missing, takes_any_arguments=True)


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`) on `clock` (default: the system
    clock); returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    # Before the subcommands' imports (hundreds of milliseconds): a SIGTERM from here on stops
    # a graceful command cleanly instead of killing it.
    graceful = words[:1] and words[0] in stopping.GRACEFUL_COMMANDS
    if graceful:
        stopping.install()
    try:
        return _main(words, SystemClock() if clock is None else clock)
    finally:
        if graceful:
            stopping.uninstall()


def _main(argv: Sequence[str], clock: Clock) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args, clock=clock)
    except ExporterError as exc:
        for problem in exc.problems if isinstance(exc, ConfigError) else (str(exc),):
            print(f"chargeback-exporter {args.command}: error: {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"chargeback-exporter {args.command}: interrupted", file=sys.stderr)
        return 130
