"""`simulate` and `demo` live in the `simulator` extra; without it the CLI says how to install it.

The production image installs the exporter alone, so these subcommands must fail there with one
line and exit 2 (a usage error), whatever flags follow them, while every other subcommand works.
An entry of None in `sys.modules` makes Python's import fail exactly as for a missing package.
"""

from __future__ import annotations

import sys

import pytest

from exporter import cli


def _uninstall(monkeypatch: pytest.MonkeyPatch, top: str) -> None:
    for name in [m for m in sys.modules if m == top or m.startswith(f"{top}.")] or [top]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("top", ["chargeback_simulator", "numpy", "promql_parser", "noida_db"])
@pytest.mark.parametrize(
    "argv",
    [["simulate"], ["simulate", "--port", "0", "--seed", "3"], ["demo", "--periods", "2"], ["demo", "-h"]],
)
def test_missing_extra_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], top: str, argv: list[str]
) -> None:
    _uninstall(monkeypatch, "chargeback_simulator")
    _uninstall(monkeypatch, top)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"chargeback-exporter {argv[0]}: error: ")
    assert "pip install 'sysdig-chargeback-exporter[simulator]'" in err
    assert "Traceback" not in err


def test_other_commands_work_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _uninstall(monkeypatch, "chargeback_simulator")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("chargeback-exporter ")
    # Unknown flags of the real subcommands are still usage errors, as before.
    with pytest.raises(SystemExit) as exc:
        cli.main(["check-config", "--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_installed_extra_registers_the_real_subcommands() -> None:
    args = cli.build_parser().parse_args(["simulate", "--seed", "4"])
    assert args.seed == 4
    args = cli.build_parser().parse_args(["demo", "--periods", "2"])
    assert args.periods == 2
