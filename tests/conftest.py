from types import ModuleType

import httpx
import httpx2
import pytest

# Every async test runs on each event loop and each HTTP stack (the manager's own token
# requests, and the clients tests make through `http_module`); on asyncio also with the
# manager's token requests on aiohttp's transport.
COMBINATIONS = [
    ("asyncio", "httpx2"),
    ("asyncio", "httpx"),
    ("asyncio", "aiohttp"),
    ("trio", "httpx2"),
    ("trio", "httpx"),
]


@pytest.fixture(params=[pytest.param(c, id="-".join(c)) for c in COMBINATIONS])
def anyio_backend(request, monkeypatch):
    backend, stack = request.param
    monkeypatch.setenv("TOKENFLIGHT_HTTP", stack)
    return backend


@pytest.fixture
def http_module(anyio_backend) -> ModuleType:
    """The HTTP library of this test's stack: `httpx` or `httpx2` (the same API)."""
    import os

    return httpx if os.environ["TOKENFLIGHT_HTTP"] == "httpx" else httpx2


@pytest.fixture
def no_retry_wait():
    """Retries without waits (tokenflight.testing.set_testing), undone after the test."""
    from tokenflight.testing import set_testing

    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)
