"""The one exception type for mistakes a user can make.

The CLI turns an :class:`AsrbenchError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class AsrbenchError(Exception):
    """A user-caused error: bad path, corrupt audio, malformed manifest, unknown key."""
