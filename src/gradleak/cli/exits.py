"""The exit codes of `gradleak`, for every command."""

EXIT_OK = 0
# Bad input: a flag argparse refuses, or a GradleakError (one line on stderr).
EXIT_USAGE = 2
# Ctrl-C: 128 + SIGINT, what a shell reports for a process interrupted that way.
EXIT_INTERRUPTED = 130
