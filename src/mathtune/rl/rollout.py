"""Rollouts: prompts -> sampled completions (through generate.Generator) -> the policy's log-probabilities of them.

A completion that ended its turn keeps its end-of-turn token (masked in, as TRL does: the policy learns when to
stop); one cut at max_completion_length has none. Everything after the end is padding, masked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data.packing import Batch as TokenBatch  # input ids, labels, positions, mask: sft's micro-batch
from ..data.tokenize import IGNORE_INDEX
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

    def select(self, rows: Sequence[int]) -> Rollout:
        """These completions only, in this order (dynamic sampling keeps some groups of several rollouts)."""
        return Rollout([self.prompt_ids[r] for r in rows], [self.completion_ids[r] for r in rows],
                       [self.texts[r] for r in rows], [self.truncated[r] for r in rows])

    @staticmethod
    def concat(parts: Sequence[Rollout]) -> Rollout:
        """The parts' completions one after another (groups stay consecutive)."""
        return Rollout([ids for p in parts for ids in p.prompt_ids], [ids for p in parts for ids in p.completion_ids],
                       [t for p in parts for t in p.texts], [c for p in parts for c in p.truncated])


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
    """Model inputs for some completions of a rollout, and their completion tokens as [B, C] (right-padded) with
    the mask of real tokens.

    Packed (on a model with a variable-length attention kernel): every row's prompt and completion one after
    another in one sequence whose positions restart at each row, no padding and no attention mask, so attention runs
    in the varlen flash kernel. Padded (elsewhere): prompts left-padded and completions right-padded under an
    attention mask. SDPA's masked kernel for padded batches has given non-finite gradients on a GPU (issue 14's
    runs, pytorch#119320 and #178251): padded batches go only where no varlen kernel exists (the CPU). Either way
    `inputs.labels` holds, at each position that predicts a completion token, that token (-100 elsewhere): the
    output head runs only there (fastpath.loss.kept_states)."""

    inputs: TokenBatch
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def packs(model) -> bool:
    """Whether `model`'s micro-batches are packed: where it runs a variable-length attention kernel."""
    from ..fastpath.attention import kernel_of

    return kernel_of(model) is not None


def collate(rollout: Rollout, rows: Sequence[int], pad_id: int, device: torch.device | str = "cpu",
            packed: bool = False) -> Batch:
    completion_width = max(len(rollout.completion_ids[r]) for r in rows)
    completion_ids = torch.full((len(rows), completion_width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for k, r in enumerate(rows):
        completion = rollout.completion_ids[r]
        completion_ids[k, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        completion_mask[k, : len(completion)] = 1
    examples = [(rollout.prompt_ids[r], rollout.completion_ids[r]) for r in rows]
    inputs = _packed(examples) if packed else _padded(examples, pad_id)
    return Batch(inputs, completion_ids.to(device), completion_mask.to(device))


def _labels(prompt: Sequence[int], completion: Sequence[int]) -> list[int]:
    """Per position of prompt + completion, the completion token it predicts (-100 where none)."""
    return [IGNORE_INDEX] * (len(prompt) - 1) + list(completion) + [IGNORE_INDEX]


def _packed(examples: list[tuple[Sequence[int], Sequence[int]]]) -> TokenBatch:
    ids = [t for prompt, completion in examples for t in (*prompt, *completion)]
    labels = [t for prompt, completion in examples for t in _labels(prompt, completion)]
    positions = [p for prompt, completion in examples for p in range(len(prompt) + len(completion))]
    return TokenBatch(torch.tensor([ids]), torch.tensor([labels]), torch.tensor([positions]), None, (), len(ids),
                       sum(len(c) for _, c in examples))


def _padded(examples: list[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> TokenBatch:
    prompt_width = max(len(prompt) for prompt, _ in examples)
    width = prompt_width + max(len(completion) for _, completion in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    attention = torch.zeros_like(input_ids)
    for k, (prompt, completion) in enumerate(examples):
        start, end = prompt_width - len(prompt), prompt_width + len(completion)
        input_ids[k, start:end] = torch.tensor([*prompt, *completion], dtype=torch.long)
        labels[k, start:end] = torch.tensor(_labels(prompt, completion), dtype=torch.long)
        attention[k, start:end] = 1
    # Positions count real tokens only, as generate counts them with left padding.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids, labels, positions, attention, (), int(attention.sum()),
                       sum(len(c) for _, c in examples))


def policy_logps(model, batch: Batch, temperature: float) -> torch.Tensor:
    """Per-token log-probabilities [B, C] of the batch's completion tokens under `model` (0 at padding)."""
    from ..fastpath.loss import kept_logits
    from .loss import completion_logps

    mask = batch.completion_mask.bool()
    logits, target = kept_logits(model, batch.inputs, mask.device)
    logps = completion_logps(logits, target, temperature)  # [N], completion tokens in row-major order
    return logps.new_zeros(mask.shape).masked_scatter(mask, logps)
