"""`mathtune deploy` with no model flag serves the embedded SmolLM2-135M-Instruct: its replies end at its own
end-of-turn token, and streamed, whole and `infer` answers agree with its real tokenizer."""

from __future__ import annotations

import json

import openai
import pytest
from serve_helpers import serve

from mathtune.cli import main

QUESTIONS = ["What is 2 + 3?", "Name a prime number greater than 10.", "Say hello in French."]


@pytest.mark.slow
def test_embedded_model_served_like_infer(tmp_path):
    from mathtune.serve.config import DeployArgs
    from mathtune.serve.models import load_served

    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"query": q}) + "\n" for q in QUESTIONS))
    assert main(["infer", "--input", str(source), "--output", str(target), "--max_new_tokens", "64"]) == 0
    expected = [json.loads(line)["response"] for line in target.read_text().splitlines()]
    served = load_served(DeployArgs())
    (name,) = served.names
    with serve(served) as running:
        client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0, timeout=300)
        for question, answer in zip(QUESTIONS, expected, strict=True):
            messages = [{"role": "user", "content": question}]
            whole = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=64)
            streamed = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=64,
                                                      stream=True)
            assert whole.choices[0].message.content == answer
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer
        short = client.chat.completions.create(model=name, messages=[{"role": "user", "content": QUESTIONS[0]}],
                                               temperature=0, max_tokens=200)
        assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 200
