"""Varlen attention: on the CPU it equals per-row SDPA, each attention call sees one row, and a model with it equals
one without; the kernel route in a model equals SDPA (a per-row reference kernel stands in for flash on the CPU); a
model's kernel is its own. On a GPU: the public torch.nn.attention.varlen and the private aten ops give the same
outputs and gradients."""

import pytest
import torch
import torch.nn.functional as F
from test_train import examples

from mathtune.data.packing import collate
from mathtune.fastpath import attention
from mathtune.fastpath.checkpointing import set_gradient_checkpointing
from mathtune.fastpath.loss import loss_sum
from mathtune.model import load_model


def test_cu_seqlens_from_restarting_positions():
    cu, longest = attention.cu_seqlens(torch.tensor([[0, 1, 2, 0, 0, 1, 2, 3, 0, 1]]))
    assert cu.tolist() == [0, 3, 4, 8, 10] and cu.dtype == torch.int32 and longest == 4
    cu, longest = attention.cu_seqlens(torch.arange(7)[None])
    assert cu.tolist() == [0, 7] and longest == 7


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




def test_cpu_fast_path_runs_packed_rows_one_by_one_and_matches_transformers_mask(tiny_model_dir, tiny_tokenizer,
                                                                                 monkeypatch):
    """fastpath.apply on the CPU sends packed rows through per_row_attention: the loss and gradients equal
    transformers' SDPA with its block-diagonal mask, and no attention call ever sees more than one row (the (L x L)
    mask of a 64k-token pack would take 4 GiB before SDPA's scores)."""
    from mathtune import fastpath
    from mathtune.config import FastArgs

    data = examples(tiny_tokenizer, 4)
    batch = collate(data, [0, 1, 2, 3], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    longest = max(len(data[i]) for i in range(4))
    cpu = torch.device("cpu")
    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        seen.append((query.shape[-2], key.shape[-2], attn_mask is None))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    results = []
    for route in ("transformers", "per_row"):
        model = load_model(tiny_model_dir, "fp32", "cpu")
        if route == "per_row":
            report = fastpath.apply(model, FastArgs(), cpu).report
            assert report["attention"].startswith(attention.NAME + " (per-row sdpa")
            monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
        loss = loss_sum(model, batch, cpu)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    monkeypatch.undo()
    assert len(seen) == 2 * 4  # 2 layers x 4 rows
    assert all(q == k <= longest and no_mask for q, k, no_mask in seen)
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_flash_selftest_declines_without_cuda():
    assert attention.flash_selftest("cpu") == "not a CUDA device"


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


def _reference_kernel(calls: list) -> attention.Kernel:
    """A CPU fp32 kernel that records the row offsets it was given and computes what the flash kernel would."""

    def call(q, k, v, cu, max_len, scale):
        calls.append(cu)
        return _reference_varlen(q, k, v, cu, max_len, scale)

    return attention.Kernel("reference", call, device_type="cpu", dtypes=("float32",))


@pytest.mark.parametrize("checkpointing", [None, 0])
def test_flash_route_plumbing_in_a_model_equals_sdpa(tiny_model_dir, tiny_tokenizer, checkpointing, lora_model):
    """The kernel itself is only checked on a GPU (flash_selftest); this checks everything around it on the CPU:
    layouts, cu_seqlens from loss_sum, gradients through checkpointing, the output shape transformers expects."""
    data = examples(tiny_tokenizer, 4)
    batch = collate(data, [0, 1, 2, 3], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    calls = []
    results = []
    for route in ("sdpa", "varlen"):
        model = lora_model(tiny_model_dir)
        model.train()
        set_gradient_checkpointing(model, checkpointing)
        if route == "varlen":
            assert attention.attach(model, _reference_kernel(calls)) is None
            assert attention.kernel_of(model).name == "reference"
        torch.manual_seed(3)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert calls and calls[0].tolist() == [0, *torch.tensor([len(data[i]) for i in range(4)]).cumsum(0).tolist()]
    assert len(calls) == 2 * (2 if checkpointing is None else 1)  # 2 layers, each run again in the backward
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6)


def test_a_kernel_on_one_model_leaves_another_unchanged(tiny_model_dir, tiny_tokenizer):
    """The kernel lives on the model it was attached to: a second model, loaded plainly or even switched to
    mathtune_varlen by name, never runs it (a process-wide switch would send both through it)."""
    data = examples(tiny_tokenizer, 4)
    batch = collate(data, [0, 1, 2, 3], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    cpu = torch.device("cpu")
    calls = []
    enabled = load_model(tiny_model_dir, "fp32", "cpu").eval()
    plain = load_model(tiny_model_dir, "fp32", "cpu").eval()
    by_name = load_model(tiny_model_dir, "fp32", "cpu").eval()
    assert attention.attach(enabled, _reference_kernel(calls)) is None
    by_name.set_attn_implementation(attention.register())
    assert plain.config._attn_implementation == "sdpa" and by_name.config._attn_implementation == attention.NAME
    for other in (plain, by_name):
        assert attention.kernel_of(other) is None
        assert not any(hasattr(m, attention.KERNEL_ATTR) for m in other.modules())
    with torch.no_grad():
        want = loss_sum(plain, batch, cpu)
        torch.testing.assert_close(loss_sum(by_name, batch, cpu), want, rtol=1e-5, atol=1e-5)
        assert calls == []
        torch.testing.assert_close(loss_sum(enabled, batch, cpu), want, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # one per decoder layer of the enabled model only


def test_enable_declines_without_cuda(tiny_model_dir):
    model = load_model(tiny_model_dir, "fp32", "cpu")
    assert attention.enable(model, "cpu") == "not a CUDA device"
    assert attention.kernel_of(model) is None and model.config._attn_implementation == "sdpa"


def test_kernels_prefer_the_public_api_where_torch_has_it():
    names = [kernel.name for kernel in attention.candidate_kernels()]
    assert names == [name for name, present in ((attention.PUBLIC, attention.public_varlen() is not None),
                                                (attention.ATEN, hasattr(torch.ops.aten, "_flash_attention_forward")))
                     if present]
    if torch.__version__ >= (2, 13):  # the installed torch here; its varlen_attn takes window_size and enable_gqa
        assert names[0] == attention.PUBLIC


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash kernel needs CUDA")
@pytest.mark.parametrize(("heads", "kv_heads", "dtype"), [(4, 2, torch.bfloat16), (8, 8, torch.float16)])
def test_public_varlen_and_aten_ops_give_the_same_outputs_and_gradients(heads, kv_heads, dtype):
    public = attention.public_varlen()
    assert public is not None, f"torch {torch.__version__} has no usable torch.nn.attention.varlen"
    gen = torch.Generator(device="cpu").manual_seed(0)
    sizes = [7, 1, 130, 64, 33]
    total, head_dim = sum(sizes), 64
    cu = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(total, h, head_dim, generator=gen).to("cuda", dtype) for h in (heads, kv_heads, kv_heads))
    if heads != kv_heads and not attention.public_takes_gqa():
        # torch 2.9-2.12: varlen_attn has no enable_gqa; the call refuses, so enable() falls back to the aten ops
        with pytest.raises(ValueError, match="enable_gqa"):
            public(q, k, v, cu, max(sizes), head_dim**-0.5)
        kernel, reason = attention.choose_kernel("cuda", heads, kv_heads, head_dim)
        assert reason is None and kernel.name == attention.ATEN
        return
    grad = torch.randn(total, heads, head_dim, generator=gen).to("cuda", dtype)
    results = []
    for kernel in (public, attention.aten_varlen):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = kernel(*inputs, cu, max(sizes), head_dim**-0.5)
        results.append((out, *torch.autograd.grad(out, inputs, grad)))
    for name, got, want in zip(("out", "dq", "dk", "dv"), *results, strict=True):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3, msg=lambda m, n=name: f"{n}: {m}")
    ref = _reference_varlen(*(t.float() for t in (q, k, v)), cu.cpu(), max(sizes), head_dim**-0.5)
    torch.testing.assert_close(results[0][0].float().cpu(), ref.cpu(), rtol=2e-2, atol=2e-2)
