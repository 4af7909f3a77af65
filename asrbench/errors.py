"""The one exception type for mistakes a user can make.

The CLI turns an :class:`AsrbenchError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class AsrbenchError(Exception):
    """A user-caused error: bad path, corrupt audio, malformed manifest, unknown key.

    The message is kept on one line: line breaks that come with user text (a key, a path, a
    ``--set`` value) are shown escaped.
    """

    exit_code = 2
    prefix = "error"  # what the command line prints before the message

    def __init__(self, message: str = "") -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'lr'?)`` for the closest valid name to a mistyped one, else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(option) for option in valid], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def excerpt(text, limit: int = 200) -> str:
    """Another library's message on one line: terminal escapes dropped, whitespace collapsed, and
    when longer than ``limit`` cut at the last word boundary before it with `` …`` (never mid-word)."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(text)).split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else text[:limit]  # one word longer than the limit: cut it
    return cut.rstrip(" ,;:") + " …"
