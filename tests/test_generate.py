"""mathtune.generate: the KV cache is used, batching and the static cache do not change greedy replies."""

from __future__ import annotations

import pytest

from mathtune.generate import generate

QUESTIONS = [[{"role": "user", "content": q}] for q in
             ("What is 2 + 3?", "Solve x + 4 = 9.", "Hello! How are you? The quick brown fox jumps.", "12 * 7")]


@pytest.fixture
def tiny(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tiny_tokenizer


def forward_lengths(model) -> list[int]:
    lengths: list[int] = []
    model.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    return lengths


def test_decoding_uses_the_kv_cache_even_when_the_config_turned_it_off(tiny):
    model, tokenizer = tiny
    model.config.use_cache = False  # as in a model built for training
    model.generation_config.use_cache = False
    model.generation_config.min_new_tokens = 6
    lengths = forward_lengths(model)
    generate(model, tokenizer, QUESTIONS[:2], max_new_tokens=6, batch_size=2, progress=False)
    assert len(lengths) == 6
    assert lengths[0] > 1 and lengths[1:] == [1] * 5  # the prompt once, then one new token per step


def test_batch_size_does_not_change_greedy_replies(tiny):
    model, tokenizer = tiny
    one = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=1, progress=False)
    batched = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=3, progress=False)
    assert batched == one
    assert all(len(r) == 1 for r in one)


def test_static_cache_gives_the_same_greedy_replies(tiny):
    model, tokenizer = tiny
    dynamic = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4, progress=False)
    static = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4, progress=False,
                      static_cache=True)
    assert static == dynamic


def test_static_cache_gives_every_batch_of_a_call_one_shape(tiny):
    model, tokenizer = tiny
    shapes: list[tuple[int, int]] = []
    model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    dynamic = generate(model, tokenizer, QUESTIONS, max_new_tokens=3, batch_size=3, progress=False)
    static = generate(model, tokenizer, QUESTIONS, max_new_tokens=3, batch_size=3, progress=False,
                      static_cache=True)
    assert static == dynamic  # the rows that fill up the short last batch leave no reply behind
    assert all(len(r) == 1 for r in static)
    prefills = [s for s in shapes if s[1] > 1]
    assert len(prefills) == 4  # two batches without, two with the static cache
    assert prefills[2] == prefills[3] == (3, 64)  # the second batch held one question: filled up to three rows
    assert prefills[0][0] == 3 and prefills[1][0] == 1 and prefills[0][1] < 64


def test_chat_reads_a_line_that_is_not_utf8(tiny):
    import io

    from mathtune.infer import InferArgs, repl

    model, tokenizer = tiny
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe what is 2 + 3?\n/exit\n"), encoding="utf-8")
    out = io.StringIO()
    repl(model, tokenizer, InferArgs(max_new_tokens=3), stdin=stdin, out=out)
    assert out.getvalue().count("<<< ") == 2  # answered the first line, then left at /exit
