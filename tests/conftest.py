"""The fixtures every tier may use. The embedded stack lives in tests/support/stack.py so that
a module outside stack/ (a Superset or compose test) can ask for it too."""

import pytest

pytest_plugins = ["tests.support.stack"]


@pytest.fixture
def anyio_backend():
    # Function scope, as each Pilot module had it; anyio's own default is module-scoped.
    return "asyncio"
