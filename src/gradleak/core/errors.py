"""The one error type the user sees: a single line, exit code 2."""


class GradleakError(Exception):
    """Bad input or an impossible request; the message names the problem and the fix."""
