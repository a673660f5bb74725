"""A server on a free loopback port, in a thread of the test process, around the tiny model of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_helpers import Running, serve


@pytest.fixture(scope="session")
def served_tiny(tiny_model_dir):
    """The tiny model loaded as `mathtune deploy --model DIR --dtype fp32` loads it."""
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    return load_served(DeployArgs(model=str(tiny_model_dir), dtype="fp32", served_model_name="tiny"))


@pytest.fixture(scope="module")
def server(served_tiny) -> Iterator[Running]:
    with serve(served_tiny) as running:
        yield running


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
