"""The fast path on the CPU: varlen attention equals SDPA with a block-diagonal mask, the fused LoRA forward equals
peft's, the loss on trained positions only equals the full-logits loss, and nothing changes without CUDA."""

import pytest
import torch
import torch.nn.functional as F
from test_train import examples

from mathtune import attention
from mathtune.config import TrainArgs
from mathtune.data.packing import collate
from mathtune.losses import loss_sum
from mathtune.model import attach_lora, load_model
from mathtune.speed import apply_fast_path, fast_lora, fast_path_report, set_gradient_checkpointing


def test_cu_seqlens_from_restarting_positions():
    cu, longest = attention.cu_seqlens(torch.tensor([[0, 1, 2, 0, 0, 1, 2, 3, 0, 1]]))
    assert cu.tolist() == [0, 3, 4, 8, 10] and cu.dtype == torch.int32 and longest == 4
    cu, longest = attention.cu_seqlens(torch.arange(7)[None])
    assert cu.tolist() == [0, 7] and longest == 7


def test_block_causal_mask():
    mask = attention.block_causal_mask(torch.tensor([0, 2, 5], dtype=torch.int32), 5, "cpu")[0, 0]
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert torch.equal(mask, want.bool())


class _Module(torch.nn.Module):
    is_causal = True

    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize("with_kwargs", [True, False])
def test_varlen_attention_on_cpu_equals_per_row_sdpa(with_kwargs):
    torch.manual_seed(0)
    sizes = [3, 1, 6, 4]
    total, heads, kv_heads, dim = sum(sizes), 4, 2, 8
    q = torch.randn(1, heads, total, dim)
    k, v = torch.randn(1, kv_heads, total, dim), torch.randn(1, kv_heads, total, dim)
    positions = torch.cat([torch.arange(n) for n in sizes])[None]
    extra = attention.packed_kwargs(positions, "cpu") if with_kwargs else {"position_ids": positions}
    out, _ = attention.varlen_attention_forward(_Module(heads // kv_heads), q, k, v, None, scaling=dim**-0.5,
                                                **extra)
    assert out.shape == (1, total, heads, dim)
    start = 0
    for n in sizes:
        kk = k[:, :, start : start + n].repeat_interleave(2, 1)
        vv = v[:, :, start : start + n].repeat_interleave(2, 1)
        want = F.scaled_dot_product_attention(q[:, :, start : start + n], kk, vv, is_causal=True).transpose(1, 2)
        torch.testing.assert_close(out[:, start : start + n], want, rtol=1e-5, atol=1e-5)
        start += n


def test_model_with_varlen_attention_matches_sdpa_packed_and_padded(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 4)
    sdpa = load_model(tiny_model_dir, "fp32", "cpu").eval()
    varlen = load_model(tiny_model_dir, "fp32", "cpu").eval()
    varlen.set_attn_implementation(attention.register())
    assert varlen.config._attn_implementation == attention.NAME
    for packing in (True, False):
        batch = collate(data, [0, 1, 2, 3], packing=packing, pad_id=tiny_tokenizer.pad_token_id)
        with torch.no_grad():
            want = loss_sum(sdpa, batch, torch.device("cpu"))
            got = loss_sum(varlen, batch, torch.device("cpu"))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Generation (padding mask + KV cache) goes through SDPA unchanged.
    ids = torch.tensor([[tiny_tokenizer.pad_token_id] * 2 + data[0].input_ids[:6], data[1].input_ids[:8]])
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert torch.equal(varlen.generate(input_ids=ids, attention_mask=mask, **kwargs),
                       sdpa.generate(input_ids=ids, attention_mask=mask, **kwargs))


def _lora(model_dir, dropout=0.0):
    torch.manual_seed(5)
    model = attach_lora(load_model(model_dir, "fp32", "cpu"), rank=4, alpha=16, dropout=dropout,
                        target_modules="all-linear")
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B so the adapter branch matters
            torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fast_lora_equals_peft_forward_and_gradients(tiny_model_dir, tiny_tokenizer, dropout):
    data = examples(tiny_tokenizer, 3)
    batch = collate(data, [0, 1, 2], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    results = []
    for fast in (False, True):
        model = _lora(tiny_model_dir, dropout)
        model.train()
        if fast:
            assert fast_lora(model) == 14  # 7 linear layers x 2 decoder layers
        torch.manual_seed(11)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (slow_loss, slow_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-5, atol=1e-5)
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) == 28
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-4, atol=1e-6)


def test_fast_lora_leaves_disabled_and_merged_adapters_alone(tiny_model_dir):
    model = _lora(tiny_model_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        fast_lora(model)
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        assert not torch.allclose(base, want, atol=1e-4)
        model.merge_adapter()
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)


def test_loss_on_trained_positions_equals_full_logits_loss(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 3)
    model = load_model(tiny_model_dir, "fp32", "cpu")
    for packing in (True, False):
        batch = collate(data, [0, 1, 2], packing=packing, pad_id=tiny_tokenizer.pad_token_id)
        inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids,
                  "attention_mask": batch.attention_mask}
        logits = model(**{k: v for k, v in inputs.items() if v is not None}, use_cache=False).logits
        want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.labels.reshape(-1), reduction="sum")
        torch.testing.assert_close(loss_sum(model, batch, torch.device("cpu")), want, rtol=1e-5, atol=1e-5)


def test_apply_fast_path_is_a_no_op_on_cpu(tiny_model_dir):
    model = _lora(tiny_model_dir)
    before = {n: type(m) for n, m in model.named_modules()}
    assert apply_fast_path(model, TrainArgs(), "cpu") is None
    assert {n: type(m) for n, m in model.named_modules()} == before
    assert not any("forward" in vars(m) for m in model.modules())
    assert model.get_base_model().config._attn_implementation == "sdpa"
    assert fast_path_report(model)["attention"] == "sdpa"


def test_flash_selftest_declines_without_cuda():
    assert attention.flash_selftest("cpu") == "not a CUDA device"


def test_partial_gradient_checkpointing(tiny_model_dir):
    model = _lora(tiny_model_dir)
    assert set_gradient_checkpointing(model, 1) == 1
    layers = model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]
    assert set_gradient_checkpointing(model, None) == 2
    assert set_gradient_checkpointing(model, 0) == 0
    assert not any(layer.gradient_checkpointing for layer in layers)


def test_fast_lora_in_bf16_keeps_fp32_adapter_weights_and_gradients(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 3)
    batch = collate(data, [0, 1, 2], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    results = []
    for fast in (False, True):
        torch.manual_seed(5)
        model = attach_lora(load_model(tiny_model_dir, "bf16", "cpu"), rank=4, alpha=16, dropout=0.0,
                            target_modules="all-linear")
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # peft upcasts adapters
        if fast:
            fast_lora(model)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert all(g.dtype == torch.float32 for g in grads.values())
        results.append((loss.detach(), grads))
    (slow_loss, slow_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, slow_loss, rtol=2e-2, atol=0.0)
    for name in slow_grads:
        cos = F.cosine_similarity(fast_grads[name].flatten(), slow_grads[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


def _reference_varlen(q, k, v, cu, max_len, scale):
    """What the flash kernel computes, on (T, H, D) tensors, from per-row SDPA (stands in for it on the CPU)."""
    assert q.dim() == 3 and q.stride(-1) == 1 and cu.dtype == torch.int32 and isinstance(max_len, int)
    assert max_len == int((cu[1:] - cu[:-1]).max())
    groups = q.shape[1] // k.shape[1]
    pieces = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qq, kk, vv = (t[a:b].transpose(0, 1) for t in (q, k, v))
        kk, vv = kk.repeat_interleave(groups, 0), vv.repeat_interleave(groups, 0)
        pieces.append(F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale).transpose(0, 1))
    return torch.cat(pieces)


@pytest.mark.parametrize("checkpointing", [None, 0])
def test_flash_route_plumbing_in_a_model_equals_sdpa(tiny_model_dir, tiny_tokenizer, monkeypatch, checkpointing):
    """The kernel itself is only checked on a GPU (flash_selftest); this checks everything around it on the CPU:
    layouts, cu_seqlens from loss_sum, gradients through checkpointing, the output shape transformers expects."""
    data = examples(tiny_tokenizer, 4)
    batch = collate(data, [0, 1, 2, 3], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    calls = []

    def fake(q, k, v, cu, max_len, scale):
        calls.append(cu)
        return _reference_varlen(q, k, v, cu, max_len, scale)

    results = []
    for route in ("sdpa", "varlen"):
        model = _lora(tiny_model_dir)
        model.train()
        set_gradient_checkpointing(model, checkpointing)
        if route == "varlen":
            model.get_base_model().set_attn_implementation(attention.register())
            monkeypatch.setattr(attention, "_can_flash", lambda *a: True)
            monkeypatch.setattr(attention, "_flash_call", fake)
        torch.manual_seed(3)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert calls and calls[0].tolist() == [0, *torch.tensor([len(data[i]) for i in range(4)]).cumsum(0).tolist()]
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6)
