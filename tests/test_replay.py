"""Replay rows (the base model's own finished replies to everyday prompts) that keep a fine-tuned model a chat model."""

import json

import pytest

from mathtune import quickstart, replay
from mathtune.generate import Generator


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from mathtune.model import load_model

    return load_model(tiny_model_dir, "fp32", "cpu")


def test_replay_prompts_ship_with_the_package_and_never_meet_the_chat_check():
    prompts = replay.replay_prompts()
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts)
    checked = {prompt for prompt, _ in quickstart.CHAT_PROMPTS}
    assert not checked & set(prompts)


def test_only_finished_nonempty_replies_become_rows(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    prompts = ["What is 1 + 1?", "Say hi.", "Name a colour."]
    monkeypatch.setattr(replay, "replay_prompts", lambda: prompts)
    finished = tiny_tokenizer("two", add_special_tokens=False)["input_ids"]
    cut_off = [finished[0]] * replay.MAX_NEW_TOKENS  # ran to the limit: would teach stopping mid-sentence
    monkeypatch.setattr(Generator, "generate_ids", lambda self, conversations, sampling, **kw: [[finished], [cut_off],
                                                                                               [[]]])
    assert replay.write_replay_rows(tiny_model, tiny_tokenizer, tmp_path / "replay.jsonl", progress=False) == 1
    (row,) = [json.loads(line) for line in (tmp_path / "replay.jsonl").read_text().splitlines()]
    assert row["messages"][0] == {"role": "user", "content": "What is 1 + 1?"}
    assert row["messages"][1]["role"] == "assistant" and row["messages"][1]["content"] == "two"


def test_the_replies_are_the_models_own_greedy_answers(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    from mathtune.generate import Sampling

    prompts = ["What is 1 + 1?", "Say hi.", "Name a colour."]
    monkeypatch.setattr(replay, "replay_prompts", lambda: prompts)
    monkeypatch.setattr(replay, "MAX_NEW_TOKENS", 40)
    written = replay.write_replay_rows(tiny_model, tiny_tokenizer, tmp_path / "replay.jsonl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "replay.jsonl").read_text().splitlines()]
    generator = Generator(tiny_model, tiny_tokenizer)
    ids = generator.generate_ids([[{"role": "user", "content": p}] for p in prompts], Sampling(max_new_tokens=40),
                                 progress=False)
    kept = [(p, generator.decode(i[0]).strip()) for p, i in zip(prompts, ids, strict=True)
            if len(i[0]) < 40 and generator.decode(i[0]).strip()]
    assert written == len(rows) == len(kept)
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows] == kept
