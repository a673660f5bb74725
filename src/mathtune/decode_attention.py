"""Attention of the decoding loop's steps (one new token per row) that reads each key/value head once.

transformers' SDPA attention repeats every key/value head for the query heads that share it (`repeat_kv`) whenever
a mask is given, and the decoding loop always gives one (left padding, slots not written yet). For a grouped-query
model each step then copies the whole live KV cache `heads / kv_heads` times (8x for Yi-1.5-6B, 3x for SmolLM2-135M)
before the masked kernel reads the copy. Here the query heads of a group are batched against their one key/value
head: scores [rows, kv_heads, group, slots] from one batched matmul, the mask, an fp32 softmax, one batched matmul
with the values. The scores are computed in fp32 (bf16 inputs, fp32 output on CUDA; fp32 inputs on the CPU), as
SDPA's kernels keep them; where this torch cannot give fp32 scores for the cache's dtype, or the call is not a
one-token step with a 4D mask, transformers' own attention runs instead.

The loop switches a model to this attention (`NAME`, registered with transformers) only around its decoding steps
(`switched_to`), so prefill, training and transformers' `generate` are untouched.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

from .model import attention_layers

NAME = "mathtune_decode"
PREVIOUS_ATTR = "_mathtune_decode_previous"  # on each attention layer: the implementation it falls back to
# Keyword arguments of transformers' attention functions that change the result (attention sinks, logit soft-capping,
# a sliding window): a call with any of them goes to the model's own attention.
CHANGES_ATTENTION = ("s_aux", "softcap", "sliding_window")


def grouped_step_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: query (B, Hq, 1, D), key/value (B, Hkv, S, D), a 4D mask (B, 1, 1, S),
    bool (True = attend) or additive -> ((B, 1, Hq, D), None)."""
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if (length != 1 or dropout or attention_mask is None or attention_mask.dim() != 4 or heads % kv_heads
            or any(kwargs.get(name) is not None for name in CHANGES_ATTENTION)
            or not fp32_scores_possible(key.dtype, key.device.type)):
        return _previous(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                 **kwargs)
    group = heads // kv_heads
    q = query.reshape(rows * kv_heads, group, dim)  # query head h reads key/value head h // group, as repeat_kv
    k = key.reshape(rows * kv_heads, key.shape[2], dim)
    v = value.reshape(rows * kv_heads, value.shape[2], dim)
    scores = _scores(q, k).view(rows, kv_heads, group, -1)
    scores = scores * (dim**-0.5 if scaling is None else scaling)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(rows * kv_heads, group, -1)
    out = torch.bmm(probs, v)  # [rows * kv_heads, group, dim]
    return out.view(rows, 1, heads, dim), None


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    if q.dtype == torch.float32:
        return torch.bmm(q, k.transpose(1, 2))
    return torch.bmm(q, k.transpose(1, 2), out_dtype=torch.float32)


@functools.cache
def fp32_scores_possible(dtype: torch.dtype, device_type: str) -> bool:
    """Whether this torch gives fp32 scores for `dtype` inputs on `device_type` (bmm's out_dtype: CUDA only)."""
    if dtype == torch.float32:
        return True
    if device_type != "cuda":
        return False
    try:
        a = torch.ones((1, 1, 8), dtype=dtype, device=device_type)
        return torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _previous(module) -> Any:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    name = getattr(module, PREVIOUS_ATTR, "sdpa")
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, eager_attention_forward)


def _mask_passthrough(*args, **kwargs):
    """Mask interface: the loop hands a ready 4D mask, which transformers passes through without calling this;
    anything else gets SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


@functools.cache
def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, grouped_step_attention)
    AttentionMaskInterface.register(NAME, _mask_passthrough)
    return NAME


@contextlib.contextmanager
def switched_to(base_model) -> Iterator[None]:
    """Run `base_model` (a transformers model) with the grouped step attention inside the block; its own
    implementation before and after (and as the fallback inside)."""
    config = base_model.config
    previous = getattr(config, "_attn_implementation", None) or "sdpa"
    if previous == NAME:
        yield
        return
    register()
    for layer in attention_layers(base_model):
        setattr(layer, PREVIOUS_ATTR, previous)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
