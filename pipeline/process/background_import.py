"""Import a heavy library in a daemon thread while an earlier step mostly waits on a service.

dbt (2-4 s of CPU) and Great Expectations (4-5 s) are imported by the steps that use them.
In a refresh, the step before each one (load before transform, dbt test before validate)
spends most of its time waiting on PostgreSQL, so the import runs then instead of on the
critical path. An import that fails here fails again, and is reported, when the step itself
imports the library.
"""

from __future__ import annotations

import importlib
import threading


def import_in_background(module: str, *, after: tuple[str, ...] = ()) -> threading.Thread:
    """Start importing `module` in a daemon thread. The modules in `after` are imported
    first, here: the step running meanwhile imports them, and two threads importing the
    same module can deadlock on its import lock or see it half-initialised."""
    for earlier in after:
        importlib.import_module(earlier)

    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:
            pass

    thread = threading.Thread(target=load, name=f"import-{module}", daemon=True)
    thread.start()
    return thread
