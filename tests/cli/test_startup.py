"""Start-up: `gradleak --help` imports no command module, and the heavy libraries wait for use.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from gradleak.cli import app

from .running import cli_exit

pytestmark = pytest.mark.usefixtures("one_thread")

# Seconds of import each, or more; none is needed before a command runs.
HEAVY = ["torch", "matplotlib", "jinja2", "scipy", "torchmetrics"]
# Imported only inside the functions that use them: never by an image attack's modules.
OPTIONAL = [
    "matplotlib",
    "jinja2",
    "scipy",
    "torchmetrics",
    "opacus",
    "transformers",
    "flwr",
    "ray",
]


def _fresh(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_top_level_parser_imports_no_command_and_no_heavy_library() -> None:
    seen = _fresh(
        f"""
        import contextlib, io, json, sys
        import gradleak.cli.app as app
        parser = app.build_parser()
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            app.main(["--help"])
        print(json.dumps({{
            "heavy": [m for m in {HEAVY!r} if m in sys.modules],
            "commands": sorted(m for m in sys.modules if m.startswith("gradleak.cli.")),
            "listed": "train-inverter" in out.getvalue(),
        }}))
        """
    )
    assert seen["heavy"] == []
    # The parser's own modules only: no command module is imported for the listing.
    assert seen["commands"] == ["gradleak.cli.app", "gradleak.cli.exits"]
    assert seen["listed"]


def test_choosing_a_command_imports_that_command_only() -> None:
    seen = _fresh(
        """
        import json, sys
        import gradleak.cli.app as app
        args = app.build_parser().parse_args(["report", "somewhere"])
        print(json.dumps({
            "handler": args.handler.__module__,
            "loaded": [m for m in ("gradleak.cli.report", "gradleak.cli.attack",
                                   "gradleak.cli.sweep") if m in sys.modules],
        }))
        """
    )
    assert seen == {"handler": "gradleak.cli.report", "loaded": ["gradleak.cli.report"]}


def test_an_attack_run_leaves_the_optional_libraries_unimported_and_reports_still_work(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    seen = _fresh(
        f"""
        import json, sys
        from gradleak.cli.app import main
        code = main(["attack", "--iterations", "2", "--out", {str(run)!r}, "--no-progress"])
        unused = [m for m in {OPTIONAL!r} if m in sys.modules]
        # The report and its plots import matplotlib and jinja2 when they are used.
        report = main(["report", {str(run)!r}])
        print(json.dumps({{
            "codes": [code, report],
            "unused": unused,
            "used": [m for m in ("matplotlib", "jinja2") if m in sys.modules],
        }}))
        """
    )
    assert seen == {"codes": [0, 0], "unused": [], "used": ["matplotlib", "jinja2"]}
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html  # the loss and quality plots were drawn


def test_a_command_help_declares_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["attack", "--help"]) == 0
    assert "--iterations" in capsys.readouterr().out
    assert cli_exit(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_the_listing_shows_each_summary_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit(["--help"]) == 0
    listing = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for command in app.COMMANDS:
        assert f"{command.name} {' '.join(command.summary.split())}" in listing


def test_a_command_module_that_passes_its_own_summary_is_refused() -> None:
    parser = app.Parser(prog="gradleak")
    commands = parser.add_subparsers(dest="command", action=app.LazyCommands)
    commands.list_command(app.Command("attack", "gradleak.cli.attack:add_attack", "summary"))
    with pytest.raises(ValueError, match="summary belongs in cli/app.py COMMANDS"):
        commands.add_parser("attack", help="a second summary")


def test_an_adder_that_registers_nothing_is_a_defect(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("gradleak_test_commands")
    module.add_nothing = lambda commands: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    parser = app.Parser(prog="gradleak")
    commands = parser.add_subparsers(dest="command", action=app.LazyCommands)
    commands.list_command(app.Command("attack", f"{module.__name__}:add_nothing", "summary"))
    with pytest.raises(RuntimeError, match="did not register the command 'attack'"):
        parser.parse_args(["attack"])
