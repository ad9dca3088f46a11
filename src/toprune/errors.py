"""One exception type for user mistakes: the CLI prints its message as a single line, never a traceback."""


class ToPruneError(Exception):
    """A user-facing error (bad path, corrupt plan, mismatched model, ...). The message is one line."""
