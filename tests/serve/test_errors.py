"""Bad requests get OpenAI-style 4xx bodies and the server keeps serving; the queue limit answers 429; a client
that leaves mid-stream frees its place at once."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from serve_helpers import serve

GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 4,
        "temperature": 0}

BAD_REQUESTS = [  # (what, body or raw text, status, param, code)
    ("not JSON", '{"model": "tiny", "messages": [', 400, None, None),
    ("JSON but not an object", "[1, 2]", 400, None, None),
    ("unknown model", {**GOOD, "model": "gpt-9"}, 404, "model", "model_not_found"),
    ("no model", {k: v for k, v in GOOD.items() if k != "model"}, 400, "model", None),
    ("no messages", {**GOOD, "messages": []}, 400, "messages", None),
    ("messages not a list", {**GOOD, "messages": "hi"}, 400, "messages", None),
    ("unknown role", {**GOOD, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role", None),
    ("content a number", {**GOOD, "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content", None),
    ("temperature as text", {**GOOD, "temperature": "hot"}, 400, "temperature", None),
    ("temperature above 2", {**GOOD, "temperature": 3.5}, 400, "temperature", None),
    ("top_p 0", {**GOOD, "top_p": 0}, 400, "top_p", None),
    ("max_tokens as text", {**GOOD, "max_tokens": "5"}, 400, "max_tokens", None),
    ("max_tokens 0", {**GOOD, "max_tokens": 0}, 400, "max_tokens", None),
    ("n 0", {**GOOD, "n": 0}, 400, "n", None),
    ("stream as text", {**GOOD, "stream": "yes"}, 400, "stream", None),
    ("seed negative", {**GOOD, "seed": -1}, 400, "seed", None),
    ("five stop sequences", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ("empty stop sequence", {**GOOD, "stop": [""]}, 400, "stop", None),
    ("logprobs", {**GOOD, "logprobs": True}, 400, "logprobs", None),
    ("lone surrogate", '{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', 400,
     "messages.0.content", None),
    ("prompt over the context", {**GOOD, "messages": [{"role": "user", "content": "What is 2 + 3? " * 400}]}, 400,
     "messages", "context_length_exceeded"),
    ("huge prompt", {**GOOD, "messages": [{"role": "user", "content": "7" * 3_000_000}]}, 400, "messages",
     "context_length_exceeded"),
    ("max_tokens beyond the context", {**GOOD, "max_tokens": 600}, 400, "messages", "context_length_exceeded"),
]


@pytest.mark.parametrize(("what", "body", "status", "param", "code"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_an_openai_error(server, what, body, status, param, code):
    url = server.url + "/chat/completions"
    if isinstance(body, str):
        answer = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    else:
        answer = httpx.post(url, json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert (error["param"], error["code"]) == (param, code), error
    assert "Traceback" not in error["message"] and "\n" not in error["message"]
    # the server keeps serving
    assert httpx.post(url, json=GOOD, timeout=60).status_code == 200


def test_unknown_route_and_method(server):
    missing = httpx.get(server.url + "/completions")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(server.url + "/chat/completions")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_openai_client_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x " * 3000}])
    assert caught.value.code == "context_length_exceeded"


@pytest.fixture(scope="module")
def slow_served(tiny_model_dir):
    """The tiny model slowed to about 10 ms a decoding step, so that a 480-token greedy reply (it never ends early)
    takes seconds: long enough to leave in the middle of it."""
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    served = load_served(DeployArgs(model=str(tiny_model_dir), dtype="fp32", served_model_name="tiny"))
    served.network.register_forward_pre_hook(lambda *_: time.sleep(0.01))
    return served


LONG = {**GOOD, "max_tokens": 480}


def _stream_until_first_piece(url: str, leave: threading.Event, seen: threading.Event) -> None:
    """A streaming request that leaves (closes its connection) once it has read a piece of text."""
    with httpx.stream("POST", url + "/chat/completions", json={**LONG, "stream": True}, timeout=60) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                seen.set()
                leave.wait(30)
                return


def _wait_until_idle(health: str, since: float) -> dict:
    """/health once nothing is admitted or running; fails when a client's leaving did not stop its work soon."""
    while True:
        stats = httpx.get(health).json()
        if not stats["admitted"] and not stats["running"]:
            return stats
        assert time.monotonic() - since < 10, f"the work of a client that left was not stopped: {stats}"
        time.sleep(0.05)


def test_queue_limit_429_and_a_client_that_leaves_mid_stream_frees_its_place(slow_served):
    with serve(slow_served, max_queue=1) as running:
        health = running.url.removesuffix("/v1") + "/health"
        leave, seen = threading.Event(), threading.Event()
        worker = threading.Thread(target=_stream_until_first_piece, args=(running.url, leave, seen))
        worker.start()
        assert seen.wait(60), "no text streamed"
        full = httpx.post(running.url + "/chat/completions", json=GOOD, timeout=60)
        assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limit_error"
        assert httpx.get(health).json()["admitted"] == 1
        leave.set()
        worker.join(30)
        stats = _wait_until_idle(health, time.monotonic())
        assert stats["tokens"] < 240, "the row of a client that left kept generating"
        # It streamed on the fast decoding loop, whose row hook stopped the row: the loop holds the buffers it used.
        assert running.batcher.generator.decoder_stats()["rows"] == 1
        answer = httpx.post(running.url + "/chat/completions", json={**LONG, "max_tokens": 4}, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4


def test_non_streaming_client_that_leaves_frees_its_place(slow_served):
    """A plain request runs in the fast decoding loop without the row hook: leaving frees the client's place
    in the queue at once, while its row runs on to the end of the batch."""
    with serve(slow_served, max_queue=1) as running:
        health = running.url.removesuffix("/v1") + "/health"
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/chat/completions", json=LONG, timeout=1.0)
        left_at = time.monotonic()
        while (stats := httpx.get(health).json())["admitted"]:
            assert time.monotonic() - left_at < 2, "the place of a client that left was not freed"
            time.sleep(0.05)
        assert stats["running"] == 1  # the batch goes on: a 480-token reply takes about 5 s here
        answer = httpx.post(running.url + "/chat/completions", json=GOOD, timeout=60)  # admitted, not 429
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
