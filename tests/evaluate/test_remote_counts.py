"""Token counts from a server: each reply keeps its own count, even where two questions get the same reply."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mathtune.errors import UserError
from mathtune.evaluate import remote as remote_mod


def test_identical_replies_to_different_questions_keep_their_own_counts(monkeypatch):
    used = {"q1": 3, "q2": 7, "q3": 5}

    def fake_post(remote, path, body=None, retries=0):
        question = body["messages"][-1]["content"]
        return {"choices": [{"index": 0, "message": {"content": "42"}}], "usage": {"completion_tokens": used[question]}}

    monkeypatch.setattr(remote_mod, "pick_model", lambda remote: "m")
    monkeypatch.setattr(remote_mod, "post", fake_post)
    settings = SimpleNamespace(max_new_tokens=8, temperature=0.0, top_p=1.0, num_samples=1, batch_size=2)
    make_generate, counts, _ = remote_mod.remote_generator(remote_mod.RemoteArgs("http://x/v1"), settings, False)
    outputs = make_generate(True)([[{"role": "user", "content": q}] for q in used])
    assert outputs == [["42"], ["42"], ["42"]]
    flat = [t for samples in outputs for t in samples]
    assert [len(ids) for ids in counts(flat)["input_ids"]] == [3, 7, 5]
    with pytest.raises(ValueError, match="last call"):
        counts(["other"])


def test_api_base_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    settings = SimpleNamespace(infer_backend="pt", static_cache=False)
    with pytest.raises(UserError, match="one process"):
        remote_mod.check_job(remote_mod.RemoteArgs("http://x/v1"), model=None, adapter=None, loaded=None,
                             baseline=False, settings=settings)
