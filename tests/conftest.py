import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture
def no_retry_wait():
    """Retries without waits (tokenflight.testing.set_testing), undone after the test."""
    from tokenflight.testing import set_testing

    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)
