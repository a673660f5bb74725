"""Rollout sampling gives back the sampler's KV buffers where holding them through training would cost much (or
gain nothing), and keeps them where they are small beside the card and its CUDA graphs would be recaptured."""

from __future__ import annotations

import pytest

from mathtune.generate import Generator
from mathtune.rl.rewards import Prompt
from mathtune.rl.rollout import sample, should_release

H200 = 141 * 2**30


@pytest.mark.parametrize(("held", "card", "release"), [
    ({"kv_gib": 40.0, "cuda_graphs": 60}, H200, True),  # Yi-1.5-6B shape, 512 rows x 1280 slots
    ({"kv_gib": 3.0, "cuda_graphs": 60}, H200, False),  # small beside the card: keep it and the graphs
    ({"kv_gib": 0.5, "cuda_graphs": None}, None, True),  # eager (CPU): reallocated on every call anyway
    ({"kv_gib": 0.0, "cuda_graphs": None}, None, False),  # nothing held
])
def test_when_the_sampler_gives_its_buffers_back(held, card, release):
    assert should_release(held, card) is release


def test_a_cpu_rollout_holds_no_kv_buffers_afterwards(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    generator = Generator(model, tiny_tokenizer)
    prompts = [Prompt(({"role": "user", "content": q},), None, "math", "test") for q in ("2 + 3?", "10 / 2?")]
    rollout = sample(generator, prompts, num_generations=2, max_completion_length=6, temperature=1.0, top_p=1.0)
    assert len(rollout.completion_ids) == 4
    assert generator.decoder_stats() == {"rows": 0, "slots": 0, "kv_gib": 0.0, "cuda_graphs": None}
