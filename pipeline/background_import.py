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


def import_in_background(module: str) -> threading.Thread:
    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:
            pass

    thread = threading.Thread(target=load, name=f"import-{module}", daemon=True)
    thread.start()
    return thread
