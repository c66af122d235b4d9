"""The exit codes of `gradleak`, for every command."""

EXIT_OK = 0
# A study that ran to its end but some of whose cells failed (`sweep`, `bench`): their
# reasons are in the study's summary.md and results.csv, and a re-run runs them again.
EXIT_CELLS_FAILED = 1
# Bad input: a flag argparse refuses, or a GradleakError (one line on stderr).
EXIT_USAGE = 2
# Ctrl-C: 128 + SIGINT, what a shell reports for a process interrupted that way. A command
# that SIGTERM (kill, Slurm) stopped the same way returns it too, and `main` reports 143.
EXIT_INTERRUPTED = 130
