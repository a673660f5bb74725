"""mathtune.decode_attention: a decoding step's grouped-query attention equals transformers' SDPA attention (which
repeats each key/value head for its query heads) for boolean and additive masks with left padding; the decoding loop
runs its steps through it and leaves the model's own attention in place afterwards."""

from __future__ import annotations

import pytest
import torch
from test_decode import EOS, prompts, random_llama
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from mathtune import decode_attention
from mathtune.decode import Decoder
from mathtune.decode_attention import NAME, grouped_step_attention, switched_to


class Layer(torch.nn.Module):
    """What transformers hands the attention function: the layer (sdpa reads num_key_value_groups and is_causal)."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.training = groups, True, False


def sdpa(layer, q, k, v, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(layer, q, k, v, mask, scaling=0.3)[0]


def step_inputs(rows: int, heads: int, kv_heads: int, slots: int, additive: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, heads, 1, 16, generator=g)
    k, v = (torch.randn(rows, kv_heads, slots, 16, generator=g) for _ in range(2))
    first = torch.randint(0, slots - 1, (rows,), generator=g)  # left padding: slots before `first` are masked
    allowed = (torch.arange(slots)[None, :] >= first[:, None])[:, None, None, :]
    allowed[0, ..., -1] = False  # a slot not written yet
    if not additive:
        return q, k, v, allowed
    return q, k, v, torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 1), (8, 2), (6, 3), (4, 4)])
@pytest.mark.parametrize("additive", [False, True])
def test_a_step_equals_sdpa_with_repeated_heads(heads, kv_heads, additive):
    q, k, v, mask = step_inputs(5, heads, kv_heads, 23, additive, seed=heads * 10 + kv_heads)
    layer = Layer(heads // kv_heads)
    got, weights = grouped_step_attention(layer, q, k, v, mask, scaling=0.3)
    assert weights is None and got.shape == (5, 1, heads, 16)
    torch.testing.assert_close(got, sdpa(layer, q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_a_strided_cache_view_is_read_in_place():
    """The loop hands the first `used` slots of a longer buffer: a non-contiguous view."""
    q, k, v, mask = step_inputs(3, 8, 2, 40, False, seed=3)
    layer = Layer(4)
    got = grouped_step_attention(layer, q, k[:, :, :29], v[:, :, :29], mask[..., :29], scaling=0.3)[0]
    torch.testing.assert_close(got, sdpa(layer, q, k[:, :, :29], v[:, :, :29], mask[..., :29]), atol=1e-5,
                               rtol=1e-5)


def test_what_it_does_not_cover_goes_to_the_models_own_attention(monkeypatch):
    layer = Layer(2)
    setattr(layer, decode_attention.PREVIOUS_ATTR, "sdpa")
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 3, 16, generator=g), torch.randn(2, 2, 3, 16, generator=g), torch.randn(2, 2, 3, 16,
                                                                                                          generator=g)
    got = grouped_step_attention(layer, q, k, v, None, scaling=0.3)[0]  # a prefill: 3 query tokens, no mask
    torch.testing.assert_close(got, sdpa(layer, q, k, v, None))
    q, k, v, mask = step_inputs(2, 4, 2, 9, False, seed=4)
    window = grouped_step_attention(layer, q, k, v, mask, scaling=0.3, sliding_window=4)[0]  # sdpa ignores it
    torch.testing.assert_close(window, sdpa(layer, q, k, v, mask))
    seen = []  # a softcap reaches the model's own attention (transformers' sdpa refuses it in some versions only)
    own = lambda *args, **kwargs: seen.append(kwargs["softcap"]) or ("own", None)  # noqa: E731
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "recording", own)
    setattr(layer, decode_attention.PREVIOUS_ATTR, "recording")
    assert grouped_step_attention(layer, q, k, v, mask, scaling=0.3, softcap=30.0)[0] == "own" and seen == [30.0]
    assert decode_attention.fp32_scores_possible(torch.bfloat16, "cpu") is False  # bf16 on the CPU falls back too


def count_grouped_steps(monkeypatch) -> list[int]:
    calls: list[int] = []
    scores = decode_attention._scores

    def spy(q, k):
        calls.append(q.shape[0])
        return scores(q, k)

    monkeypatch.setattr(decode_attention, "_scores", spy)
    return calls


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_loop_steps_through_it_with_the_same_replies(monkeypatch, attention):
    model = random_llama(attention)
    plain = Decoder(model, EOS, pad_id=0, grouped_attention=False).generate(prompts(), n=2, max_new_tokens=10)
    calls = count_grouped_steps(monkeypatch)
    assert calls == []
    grouped = Decoder(model, EOS, pad_id=0).generate(prompts(), n=2, max_new_tokens=10)
    assert grouped == plain
    assert len(calls) >= 2 * 9  # both layers, every step after the prefill
    assert model.config._attn_implementation == attention  # switched back


def test_switching_restores_the_implementation_after_an_error():
    model = random_llama()
    with pytest.raises(RuntimeError), switched_to(model):
        assert model.config._attn_implementation == NAME
        raise RuntimeError("a step failed")
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 scores in fp32 need CUDA")
def test_on_a_gpu_bf16_steps_keep_fp32_scores_and_match_sdpa():
    assert decode_attention.fp32_scores_possible(torch.bfloat16, "cuda")
    q, k, v, mask = (t.cuda() for t in step_inputs(64, 32, 4, 300, False, seed=7))
    layer = Layer(8)
    got = grouped_step_attention(layer, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, scaling=0.3)[0]
    want = sdpa(layer, q, k, v, mask)  # fp32 reference
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)
