"""mathtune.generate: the KV cache is used, batching and the static cache do not change greedy replies, prompts are
rendered as in training, sampling is seeded, and progress counts every generated token."""

from __future__ import annotations

import pytest

from mathtune.generate import Generator, Sampling

QUESTIONS = [[{"role": "user", "content": q}] for q in
             ("What is 2 + 3?", "Solve x + 4 = 9.", "Hello! How are you? The quick brown fox jumps.", "12 * 7")]


def generate(model, tokenizer, conversations, *, max_new_tokens, batch_size, progress=False, static_cache=False,
             fast=True):
    return Generator(model, tokenizer, fast=fast).generate(conversations, Sampling(max_new_tokens),
                                                           batch_size=batch_size, progress=progress,
                                                           static_cache=static_cache)


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


def test_static_cache_and_the_fast_path_give_the_same_greedy_replies(tiny):
    model, tokenizer = tiny
    dynamic = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4, progress=False, fast=False)
    static = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4, progress=False,
                      static_cache=True, fast=False)
    fast = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4, progress=False)
    assert static == dynamic == fast


def test_static_cache_gives_every_batch_of_a_call_one_shape(tiny):
    model, tokenizer = tiny
    shapes: list[tuple[int, int]] = []
    model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    dynamic = generate(model, tokenizer, QUESTIONS, max_new_tokens=3, batch_size=3, progress=False, fast=False)
    static = generate(model, tokenizer, QUESTIONS, max_new_tokens=3, batch_size=3, progress=False,
                      static_cache=True, fast=False)
    assert static == dynamic  # the rows that fill up the short last batch leave no reply behind
    assert all(len(r) == 1 for r in static)
    prefills = [s for s in shapes if s[1] > 1]
    assert len(prefills) == 4  # two batches without, two with the static cache
    assert prefills[2] == prefills[3] == (3, 64)  # the second batch held one question: filled up to three rows
    assert prefills[0][0] == 3 and prefills[1][0] == 1 and prefills[0][1] < 64


def test_prompts_are_rendered_as_in_training(tiny):
    from mathtune.data.tokenize import encode_conversation

    model, tokenizer = tiny
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    trained = encode_conversation(tokenizer, [*question, {"role": "assistant", "content": "5"}])
    (prompt,) = Generator(model, tokenizer).render([question])
    masked = trained.labels.index(next(t for t in trained.labels if t != -100))
    assert prompt == trained.input_ids[:masked]  # the prompt is exactly what training did not train on


def test_progress_counts_every_generated_token(tiny):
    model, tokenizer = tiny
    steps: list[int] = []
    replies = Generator(model, tokenizer).generate_ids(QUESTIONS, Sampling(max_new_tokens=7), batch_size=3,
                                                       progress=False, on_tokens=steps.append)
    assert sum(steps) == sum(len(r[0]) for r in replies) == 4 * 7  # a random model does not end its turn in 7
    assert len(steps) == 2 * 7 and steps[:7] == [3] * 7 and steps[7:] == [1] * 7  # each step of two batches


def test_progress_stops_counting_a_reply_at_its_end_of_turn(tiny):
    model, tokenizer = tiny
    greedy = Generator(model, tokenizer).generate_ids(QUESTIONS, Sampling(max_new_tokens=40), progress=False)
    # Make a token that one reply comes to later end the turn: that reply stops there, the others may go on.
    row, at = next((r, k) for r, (ids,) in enumerate(greedy) for k in range(1, len(ids)) if ids[k] not in ids[:k])
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, greedy[row][0][at]]
    steps: list[int] = []
    replies = Generator(model, tokenizer).generate_ids(QUESTIONS, Sampling(max_new_tokens=40), batch_size=4,
                                                       progress=False, on_tokens=steps.append)
    assert replies[row][0] == greedy[row][0][:at]
    assert sum(steps) == sum(len(r[0]) for r in replies) < 4 * 40


def test_progress_leaves_out_the_rows_that_fill_a_static_batch_and_counts_each_sample(tiny):
    model, tokenizer = tiny
    steps: list[int] = []
    replies = Generator(model, tokenizer).generate_ids(QUESTIONS, Sampling(max_new_tokens=4), batch_size=3,
                                                       static_cache=True, progress=False, on_tokens=steps.append)
    assert steps == [3] * 4 + [1] * 4  # the last batch is three rows, one of them real
    steps.clear()
    sampled = Generator(model, tokenizer).generate_ids(QUESTIONS[:2], Sampling(4, temperature=1.0, n=3, seed=1),
                                                       progress=False, on_tokens=steps.append)
    assert [len(r) for r in sampled] == [3, 3] and sum(steps) == sum(len(s) for r in sampled for s in r)
    assert len(replies) == 4


def test_progress_bar_is_in_tokens_and_ends_full(tiny, capsys):
    model, tokenizer = tiny
    Generator(model, tokenizer).generate(QUESTIONS, Sampling(max_new_tokens=5), batch_size=3, progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert "0/20" in bar[0] and "prompts 0/4" in bar[0]  # shown before the first token; 4 prompts x 5 at most
    assert "100%" in bar[-1] and "tok/s" in bar[-1] and "prompts 4/4" in bar[-1]


def test_a_seed_repeats_sampled_replies(tiny):
    model, tokenizer = tiny
    generator = Generator(model, tokenizer)
    first = generator.generate(QUESTIONS, Sampling(8, temperature=1.0, n=2, seed=3), progress=False)
    again = generator.generate(QUESTIONS, Sampling(8, temperature=1.0, n=2, seed=3), progress=False)
    other = generator.generate(QUESTIONS, Sampling(8, temperature=1.0, n=2, seed=4), progress=False)
    assert first == again and first != other
    assert all(len(r) == 2 for r in first)


def test_stop_words_cut_the_reply(tiny):
    model, tokenizer = tiny
    (full,), = Generator(model, tokenizer).generate(QUESTIONS[:1], Sampling(12), progress=False)
    word = full[3:5]
    (cut,), = Generator(model, tokenizer, stop_words=[word]).generate(QUESTIONS[:1], Sampling(12), progress=False)
    assert cut == full[: full.index(word) + len(word)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_new_tokens": 0}, "positive"), ({"n": 0}, "positive"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"n": 2}, "temperature > 0"),
])
def test_sampling_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)


def test_release_frees_the_fast_loops_buffers_and_the_next_call_gives_the_same_replies(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from mathtune.generate import Generator, Sampling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    generator = Generator(model, tiny_tokenizer)
    assert generator.decoder_stats() == {"rows": 0, "slots": 0, "kv_gib": 0.0, "cuda_graphs": None}
    questions = [[{"role": "user", "content": q}] for q in ("What is 2 + 3?", "Solve x + 4 = 9.")]
    first = generator.generate(questions, Sampling(8), progress=False)
    held = generator.decoder_stats()
    assert held["rows"] == 2 and held["slots"] >= 8 and held["kv_gib"] > 0 and held["cuda_graphs"] is None
    generator.release()
    assert generator.decoder_stats()["kv_gib"] == 0.0
    assert generator.generate(questions, Sampling(8), progress=False) == first
