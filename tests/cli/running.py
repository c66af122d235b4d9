"""Running the command in-process, as the command-line tests do."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gradleak.cli import main


def cli_exit(argv: Sequence[str]) -> int:
    """Exit code of `gradleak argv`, whether main returns it or argparse exits with it."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command wrote to stderr (no traceback), which names an error."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    return lines[0]
