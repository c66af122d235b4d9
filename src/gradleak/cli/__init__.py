"""The `gradleak` command: one module per command, shared flags declared once."""

from gradleak.cli.app import main

__all__ = ["main"]
