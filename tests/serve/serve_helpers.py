"""Starting the server in a thread of the test process, on a free loopback port (tests and conftest share it)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Running:
    url: str  # the API base, http://127.0.0.1:PORT/v1
    batcher: object
    models: object


@contextlib.contextmanager
def serve(models, *, api_key: str | None = None, max_queue: int = 512, max_batch_size: int = 128,
          batch_wait_ms: float = 20.0, default_max_tokens: int = 512) -> Iterator[Running]:
    """The app on a socket bound before uvicorn starts (no race for the port), stopped as Ctrl-C stops it."""
    import uvicorn

    from mathtune.serve.app import create_app
    from mathtune.serve.batcher import Batcher

    batcher = Batcher(models, max_batch_size, max_queue, batch_wait_ms)
    app = create_app(models, batcher, api_key, default_max_tokens)
    # proto TCP, as `deploy` binds it: asyncio sets TCP_NODELAY only on such sockets (else 40 ms stalls a reply)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=None,
                                           timeout_keep_alive=120))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}/v1", batcher, models)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
