"""`mathtune deploy`'s server through the real `openai` client on a loopback port: the routes, greedy answers equal
to `infer`'s, streaming, sampling settings, 32 concurrent clients batched together, and authentication."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_helpers import serve

from mathtune.cli import main

PROMPTS = ["What is 2 + 3?", "Solve x + 4 = 9.", "Hello! How are you?", "Compute 12 * 7.",
           "Knights always tell the truth.", "The quick brown fox"]


def ask(client, prompt, **kwargs):
    settings = {"temperature": 0, "max_tokens": 12, **kwargs}
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], **settings)


@pytest.fixture(scope="module")
def infer_answers(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """`mathtune infer --input` on PROMPTS, greedy, 12 new tokens: what the server must answer."""
    folder = tmp_path_factory.mktemp("infer")
    (folder / "in.jsonl").write_text("".join(json.dumps({"query": p}) + "\n" for p in PROMPTS))
    assert main(["infer", "--ckpt_dir", str(tiny_model_dir), "--dtype", "fp32", "--input", str(folder / "in.jsonl"),
                 "--output", str(folder / "out.jsonl"), "--max_new_tokens", "12"]) == 0
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    return {row["query"]: row["response"] for row in rows}


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(server.url.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["admitted"] == 0


def test_greedy_answers_equal_infer(client, infer_answers):
    for prompt in PROMPTS:
        reply = ask(client, prompt)
        assert reply.choices[0].message.content == infer_answers[prompt], prompt
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.object == "chat.completion"
        assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5


def test_stream_gives_the_same_text_in_pieces(client, infer_answers):
    prompt = PROMPTS[0]
    chunks = list(ask(client, prompt, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == infer_answers[prompt]
    assert len(pieces) > 1  # text arrives as it is generated, not in one piece at the end
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    whole = ask(client, prompt)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_max_tokens_and_stop_sequences(client):
    full = ask(client, PROMPTS[1], max_tokens=30).choices[0].message.content
    short = ask(client, PROMPTS[1], max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert full.startswith(short.choices[0].message.content)
    # a stop sequence taken from the greedy reply itself: the reply ends just before it, both ways
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    expected = full[: full.find(stop)]
    cut = ask(client, PROMPTS[1], max_tokens=30, stop=[stop, "@@never@@"])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    streamed = ask(client, PROMPTS[1], max_tokens=30, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_sampling_n_and_seed(client):
    first = ask(client, PROMPTS[2], temperature=1.0, n=3, seed=7, max_tokens=16)
    again = ask(client, PROMPTS[2], temperature=1.0, n=3, seed=7, max_tokens=16)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # the same seed, the same replies
    assert len(set(texts)) > 1  # sampled: a random tiny model's 16 tokens do not repeat three times
    other = ask(client, PROMPTS[2], temperature=1.0, n=3, seed=8, max_tokens=16)
    assert [c.message.content for c in other.choices] != texts
    greedy = ask(client, PROMPTS[2], n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    assert greedy.usage.completion_tokens == 2 * ask(client, PROMPTS[2]).usage.completion_tokens


def test_32_concurrent_clients_are_batched(server, infer_answers):
    before = server.batcher.stats()["batches"]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    barrier = threading.Barrier(32)

    def one(prompt: str) -> str:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        barrier.wait()
        return ask(client, prompt).choices[0].message.content

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, prompts))
    assert answers == [infer_answers[p] for p in prompts]
    batches = server.batcher.stats()["batches"] - before
    assert batches <= 8, f"32 requests took {batches} generate calls: not batched"


def test_api_key(served_tiny):
    with serve(served_tiny, api_key="s3cret") as running:
        for key in ("wrong", "s3cre", "s3cret2"):
            client = openai.OpenAI(base_url=running.url, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                ask(client, "What is 2 + 3?")
            assert caught.value.body["type"] == "authentication_error"
        anonymous = httpx.get(running.url + "/models")
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=running.url, api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["tiny"]
        assert ask(good, "What is 2 + 3?").choices[0].message.content is not None
        assert httpx.get(running.url.removesuffix("/v1") + "/health").status_code == 200  # probes need no key


def test_stream_of_several_sampled_choices_equals_the_whole_answer(client):
    settings = {"temperature": 1.0, "n": 2, "seed": 3, "max_tokens": 10}
    whole = ask(client, PROMPTS[3], **settings)
    pieces = {0: "", 1: ""}
    reasons = {}
    for chunk in ask(client, PROMPTS[3], stream=True, **settings):
        for choice in chunk.choices:
            pieces[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert pieces == {c.index: c.message.content for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}


def test_content_as_text_parts_and_a_conversation(client, tiny_model_dir):
    from mathtune.generate import Generator, Sampling
    from mathtune.model import load_for_inference

    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 3?"}]
    assert ask(client, parts).choices[0].message.content == ask(client, "What is 2 + 3?").choices[0].message.content
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"},
                    {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "What is 2 + 3?"}]
    reply = client.chat.completions.create(model="tiny", messages=conversation, temperature=0, max_tokens=12)
    model, tokenizer, _ = load_for_inference(str(tiny_model_dir), dtype="fp32")
    expected = Generator(model, tokenizer).generate([conversation], Sampling(12), progress=False)[0][0]
    assert reply.choices[0].message.content == expected


def test_a_failed_generation_is_a_500_and_the_server_keeps_serving(served_tiny, monkeypatch):
    with serve(served_tiny) as running:
        real = running.batcher.generator.generate_ids
        calls = []

        def failing_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("CUDA out of memory (simulated)")
            return real(*args, **kwargs)

        monkeypatch.setattr(running.batcher.generator, "generate_ids", failing_once)
        client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client, "What is 2 + 3?")
        assert "out of memory" in caught.value.body["message"] and caught.value.body["type"] == "server_error"
        assert ask(client, "What is 2 + 3?").choices[0].message.content is not None
        deadline = time.monotonic() + 10  # the worker releases a request's place just after the reply goes out
        while running.batcher.stats()["admitted"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running.batcher.stats()["admitted"] == 0


def test_a_batch_stops_each_request_at_its_own_max_tokens_and_counts_what_it_delivered(served_tiny, monkeypatch):
    """A 3-token request batched with a 30-token one: its row stops at 3 in the fast loop (never past its own
    room in the context), and /health's token count is the tokens delivered, not the batch's longest."""
    with serve(served_tiny, batch_wait_ms=500) as running:
        generator = running.batcher.generator
        asked: list = []
        real = generator.generate_ids

        def spy(conversations, sampling, **kw):
            asked.append((len(conversations), sorted(kw.get("limits") or [])))
            return real(conversations, sampling, **kw)

        monkeypatch.setattr(generator, "generate_ids", spy)
        barrier = threading.Barrier(2)

        def one(max_tokens: int):
            client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0, timeout=120)
            barrier.wait()
            return ask(client, PROMPTS[1], max_tokens=max_tokens)

        before = running.batcher.stats()["tokens"]
        with ThreadPoolExecutor(2) as pool:
            short, long = pool.map(one, [3, 30])
        assert asked == [(2, [3, 30])], "the two requests were not batched: the test would prove nothing"
        assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
        assert long.usage.completion_tokens > 3
        delivered = short.usage.completion_tokens + long.usage.completion_tokens
        assert running.batcher.stats()["tokens"] - before == delivered


@pytest.mark.parametrize("every", [1, 8])
def test_streamed_and_stop_requests_run_on_the_fast_loop_and_a_stop_split_across_tokens_ends_the_reply(
        server, client, monkeypatch, every):
    """Streamed requests and those with stop sequences take the decoding loop through its row hook (no longer
    transformers' generate); a stop sequence made of the end of one token and the start of the next ends the reply
    before it, both ways, counting the tokens up to the one that completed it, also where the hook hears 8 steps at
    a time (as on a GPU) and so sees tokens past the stop."""
    from mathtune.decode import Decoder
    from mathtune.generate import Generator, Sampling

    hooked: list[bool] = []
    real = Decoder.generate

    def spy(self, *args, **kwargs):
        hooked.append(kwargs.get("on_rows") is not None)
        monkeypatch.setattr(self, "check_every", every)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Decoder, "generate", spy)
    assert server.batcher.generator.fast_path_reason() is None
    tokenizer = server.models.tokenizer
    (ids,), = Generator(server.models.network, tokenizer).generate_ids(
        [[{"role": "user", "content": PROMPTS[0]}]], Sampling(30), progress=False)
    pieces = [tokenizer.decode([t]) for t in ids]
    full = tokenizer.decode(ids)
    at = [len("".join(pieces[: k + 1])) for k in range(len(pieces))]  # where each token's text ends
    k = next(k for k in range(len(ids) - 1) if pieces[k] and pieces[k + 1] and "\ufffd" not in pieces[k] + pieces[k + 1]
             and full.find(pieces[k][-1] + pieces[k + 1][0]) == at[k] - 1)
    stop = pieces[k][-1] + pieces[k + 1][0]
    plain = ask(client, PROMPTS[0], max_tokens=30, stop=[stop])
    assert plain.choices[0].message.content == full[: at[k] - 1] and plain.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens == k + 2
    chunks = list(ask(client, PROMPTS[0], max_tokens=30, stop=[stop], stream=True,
                      stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[: at[k] - 1]
    assert chunks[-1].usage.completion_tokens == k + 2
    assert hooked == [False, True, True]  # the reference above without the hook, then both requests with it
