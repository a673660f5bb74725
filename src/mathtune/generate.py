"""Batched generation shared by infer, eval and quickstart: left padding, length-sorted batches, KV cache,
stop at the model's end-of-turn token or at a stop word."""

from __future__ import annotations

from collections.abc import Sequence

from .model import end_of_turn_ids


def render_prompts(tokenizer, conversations: Sequence[Sequence[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each conversation rendered through the chat template with the assistant header appended."""
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def cut_at_stop_words(text: str, stop_words: Sequence[str]) -> str:
    """`text` up to and including the earliest stop word (SWIFT keeps the stop word in the response)."""
    cut = len(text)
    for word in stop_words:
        at = text.find(word)
        if at != -1:
            cut = min(cut, at + len(word))
    return text[:cut]


def sampling_kwargs(temperature: float, top_p: float) -> dict:
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}


def generate(model, tokenizer, conversations: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int = 512,
             temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, stop_words: Sequence[str] = (),
             batch_size: int = 32, progress: bool = True, static_cache: bool = False) -> list[list[str]]:
    """For each conversation, `num_samples` assistant replies (greedy when temperature is 0).

    `static_cache`: a preallocated KV cache, with which transformers compiles the decoding step (CUDA graphs) on a
    GPU. Every batch of the call then has one shape, so that it compiles once: the width of the longest prompt
    rounded up to a multiple of 64, and a short last batch filled up with repeats of its first row (their replies
    are dropped).
    """
    import torch
    from tqdm.auto import tqdm

    prompts = render_prompts(tokenizer, conversations)
    # Longest first: similar lengths share a batch (little padding) and memory trouble shows up at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = end_of_turn_ids(tokenizer, getattr(model, "generation_config", None))
    device = next(model.parameters()).device
    results: list[list[str]] = [[] for _ in prompts]
    # Static cache: one cache shape for the call, from its longest prompt (the first in `order`).
    static_width = -(-len(prompts[order[0]]) // 64) * 64 if static_cache and prompts else None
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        real = len(chunk)  # rows whose replies are kept
        width = static_width or max(len(prompts[i]) for i in chunk)
        if static_cache and len(order) > batch_size:
            chunk = chunk + [chunk[0]] * (batch_size - real)  # one batch shape
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids = prompts[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        extra = {"stop_strings": list(stop_words), "tokenizer": tokenizer} if stop_words else {}
        if static_cache:
            extra["cache_implementation"] = "static"
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples, eos_token_id=eos, pad_token_id=pad_id,
                use_cache=True,  # even where the model's generation config turns the cache off
                **sampling_kwargs(temperature, top_p), **extra,
            )
        new = out[: real * num_samples, width:].tolist()
        for k, ids in enumerate(new):
            text = tokenizer.decode(until_eos(ids, eos), skip_special_tokens=True)
            results[chunk[k // num_samples]].append(cut_at_stop_words(text, stop_words))
        bar.update(real)
    bar.close()
    return results


def until_eos(ids: list[int], eos: list[int]) -> list[int]:
    """Generated ids before the first end-of-turn token; after it a batched row holds only padding."""
    for k, token in enumerate(ids):
        if token in eos:
            return ids[:k]
    return ids

