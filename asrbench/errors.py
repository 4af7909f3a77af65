"""The one exception type for mistakes a user can make.

The CLI turns an :class:`AsrbenchError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class AsrbenchError(Exception):
    """A user-caused error: bad path, corrupt audio, malformed manifest, unknown key.

    The message is kept on one line: line breaks that come with user text (a key, a path, a
    ``--set`` value) are shown escaped.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))
