"""Run this directory's pytest-asyncio tests on ferroloop (and only them:
a conftest.py applies to the tests under its directory).

pytest-asyncio >= 1.4 takes loop factories from the
`pytest_asyncio_loop_factories` hook; older versions take the loop from the
`event_loop_policy` fixture (overriding it is deprecated from 1.4 on).
"""

from __future__ import annotations

import ferroloop
import pytest
import pytest_asyncio.plugin

HAS_LOOP_FACTORIES_HOOK = hasattr(
    getattr(pytest_asyncio.plugin, "PytestAsyncioSpecs", None), "pytest_asyncio_loop_factories"
)

if HAS_LOOP_FACTORIES_HOOK:

    def pytest_asyncio_loop_factories(config, item):
        return {"ferroloop": ferroloop.new_event_loop}

else:

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return ferroloop.EventLoopPolicy()
