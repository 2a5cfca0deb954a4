"""The one exception type for failures the user can fix.

The CLI turns a DgmError into a one-line message and exit status 1; anything
else is a bug and keeps its traceback (shown with --debug).
"""


class DgmError(Exception):
    """A failure caused by the user's input or environment, with a message that says what to do."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving its state; the CLI exits with status 130."""
