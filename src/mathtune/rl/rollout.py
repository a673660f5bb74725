"""Rollouts: prompts -> sampled completions (through generate.Generator) -> padded tensors for the policy loss.

A completion that ended its turn keeps its end-of-turn token (masked in, as TRL does: the policy learns when to
stop); one cut at max_completion_length has none. Everything after the end is padding, masked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..generate import Generator, Sampling
from .rewards import Prompt


@dataclass
class Rollout:
    """One generation batch: `num_generations` consecutive completions per prompt."""

    prompt_ids: list[list[int]]
    """Per completion, its prompt's ids (the chat template with the assistant header)."""
    completion_ids: list[list[int]]
    """Per completion, its ids, the end-of-turn token included where it ended."""
    texts: list[str]
    truncated: list[bool]


def sample(generator: Generator, prompts: Sequence[Prompt], *, num_generations: int, max_completion_length: int,
           temperature: float, top_p: float, batch_size: int = 32, progress: bool = False) -> Rollout:
    """`num_generations` completions of each prompt, sampled with the global RNG as it stands (so a resumed run,
    which restores that RNG, samples what the uninterrupted run would have)."""
    sampling = Sampling(max_new_tokens=max_completion_length, temperature=temperature, top_p=top_p,
                        n=num_generations, seed=None)
    conversations = [list(p.messages) for p in prompts]
    rendered = generator.render(conversations)
    # Each prompt's n samples at once: they share the prompt's prefill. The fast loop takes the whole generation
    # batch in one go (finished rows leave it, so rows cost only while they run); transformers' generate keeps
    # batches of `batch_size` rows.
    per_batch = len(prompts) if generator.fast_path_reason() is None else max(1, batch_size // num_generations)
    was_training = generator.model.training
    generator.model.eval()  # no dropout while sampling: the policy that samples is the one the ratio compares with
    try:
        samples = generator.generate_ids(conversations, sampling, batch_size=max(1, per_batch), progress=progress)
    finally:
        generator.model.train(was_training)
        _release_if_large(generator)
    end = generator.tokenizer.eos_token_id if generator.tokenizer.eos_token_id in generator.eos else generator.eos[0]
    prompt_ids, completion_ids, texts, truncated = [], [], [], []
    for ids, group in zip(rendered, samples, strict=True):
        for completion in group:
            cut = len(completion) >= max_completion_length
            prompt_ids.append(ids)
            completion_ids.append(list(completion[:max_completion_length]) + ([] if cut else [end]))
            texts.append(generator.decode(completion))
            truncated.append(cut)
    return Rollout(prompt_ids, completion_ids, texts, truncated)


KEEP_KV_SHARE = 0.1
"""Largest share of the card's memory that the sampler's KV buffers may keep through the policy's forward and
backward. The fast loop keeps them (and its CUDA graphs) sized to its largest call so that the next call reuses them;
a GRPO generation batch is sampled in one call, and for the Yi-1.5-6B shape (32 layers x 4 KV heads x 128 dims, bf16:
64 KiB of keys and values per token) 512 rows x 1280 slots hold 40 GiB, a third of an H200 kept idle while training.
Past a tenth of the card (14 GiB on an H200) they are given back after each rollout; the next rollout allocates them
again and recaptures its graphs (about 10 slot windows x a few batch sizes, estimated at seconds on that shape
against a step of a minute or more). A 135M model's batch (23 KiB per token) stays under it and keeps its graphs."""


def _release_if_large(generator: Generator) -> None:
    device = next(generator.model.parameters()).device
    card = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    if should_release(generator.decoder_stats(), card):
        generator.release()


def should_release(held: dict, card_bytes: int | None) -> bool:
    """Whether the sampler gives back what it holds (`Generator.decoder_stats()`) on a card of `card_bytes`."""
    if held["cuda_graphs"] is None:  # eager decoding reallocates its buffers on each call: holding them gains nothing
        return held["kv_gib"] > 0
    return card_bytes is not None and held["kv_gib"] * 2**30 > KEEP_KV_SHARE * card_bytes


@dataclass
class Batch:
    """Padded model inputs for some completions of a rollout: prompts left-padded, completions right-padded."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_width: int


def collate(rollout: Rollout, rows: Sequence[int], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    prompt_width = max(len(rollout.prompt_ids[r]) for r in rows)
    completion_width = max(len(rollout.completion_ids[r]) for r in rows)
    input_ids = torch.full((len(rows), prompt_width + completion_width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for k, r in enumerate(rows):
        prompt, completion = rollout.prompt_ids[r], rollout.completion_ids[r]
        input_ids[k, prompt_width - len(prompt) : prompt_width] = torch.tensor(prompt)
        attention[k, prompt_width - len(prompt) : prompt_width] = 1
        input_ids[k, prompt_width : prompt_width + len(completion)] = torch.tensor(completion, dtype=torch.long)
        attention[k, prompt_width : prompt_width + len(completion)] = 1
    # Positions count real tokens only, as generate counts them with left padding.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    to = {"device": device}
    return Batch(input_ids.to(**to), attention.to(**to), positions.to(**to), input_ids[:, prompt_width:].to(**to),
                 attention[:, prompt_width:].to(**to), prompt_width)


def policy_logps(model, batch: Batch, temperature: float) -> torch.Tensor:
    """Per-token log-probabilities [B, C] of the batch's completion tokens under `model`."""
    from .loss import completion_logps

    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False)
    logits = out.logits[:, batch.prompt_width - 1 : -1]  # position t predicts token t + 1
    return completion_logps(logits, batch.completion_ids, temperature)
