"""The user's conftest: anyio's plugin runs async tests on asyncio and trio."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
