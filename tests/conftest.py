from types import ModuleType

import httpx
import httpx2
import pytest

# Every async test runs on each event loop and each HTTP stack (the manager's own token
# requests, and the clients tests make through `http_module`).
BACKENDS = ["asyncio", "trio"]
STACKS = ["httpx2", "httpx"]


@pytest.fixture(
    params=[pytest.param((b, s), id=f"{b}-{s}") for b in BACKENDS for s in STACKS],
)
def anyio_backend(request, monkeypatch):
    backend, stack = request.param
    monkeypatch.setenv("TOKENFLIGHT_HTTP", stack)
    return backend


@pytest.fixture
def http_module(anyio_backend) -> ModuleType:
    """The HTTP library of this test's stack: `httpx` or `httpx2` (the same API)."""
    import os

    return httpx2 if os.environ["TOKENFLIGHT_HTTP"] == "httpx2" else httpx


@pytest.fixture
def no_retry_wait():
    """Retries without waits (tokenflight.testing.set_testing), undone after the test."""
    from tokenflight.testing import set_testing

    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)
