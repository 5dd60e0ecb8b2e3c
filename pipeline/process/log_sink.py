"""Where long work reports its progress: a function taking one line. The front ends pass
one that streams to the screen or stderr; a caller that wants no output passes `no_log`."""

from collections.abc import Callable

Log = Callable[[str], None]


def no_log(_: str) -> None:
    """A `Log` that discards its line."""
