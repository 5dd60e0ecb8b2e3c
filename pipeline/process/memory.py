"""Handing freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Give the memory freed so far back to the OS.

    glibc keeps freed heap memory for reuse, and with several threads allocating tens of
    MB at a time (ingest's objects) the heap fragments: without this a refresh process
    carries a few hundred MB into every later step, and ingest's peak grows with the
    number of objects it writes. Best effort: other C libraries have no malloc_trim."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
