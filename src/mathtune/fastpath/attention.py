"""Attention for packed rows that never crosses rows and never builds a dense mask.

Packed micro-batches are one long sequence whose position ids restart at every row. transformers turns that into
a dense (L x L) block-diagonal mask, which SDPA can only run through its slower masked kernels (and which takes
L^2 bytes: 1 GiB at 32k tokens). Here the row boundaries become `cu_seqlens` offsets and the attention runs in
PyTorch's variable-length flash kernel, which skips the blocks between rows entirely: through the public
`torch.nn.attention.varlen.varlen_attn` where this torch has it, else through the private
`aten::_flash_attention_forward` it wraps (torch before 2.9).

The attention function is registered with transformers as `mathtune_varlen`; it holds no state of its own. What a
model runs is a `Kernel` stored on the model's attention layers by `enable` (transformers calls the attention
function with the layer, not the model), so two models in one process are independent. The kernel is only taken
where it is exact (its device and dtypes, no padding mask, no KV cache offset, no attention dropout) and after
`flash_selftest` passed on this GPU; everything else (CPU, padded batches, generation, a model without a kernel)
goes to transformers' SDPA attention, row by row where rows are packed (`per_row_attention`: no L x L mask
either), so results never depend on which route ran. Row offsets travel with each forward call as keyword arguments
(`packed_kwargs`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import first_line
from ..model import attention_layers, unwrap

NAME = "mathtune_varlen"
KERNEL_ATTR = "_mathtune_varlen"
"""The attribute that holds a model's `Kernel`, on the unwrapped model and on each of its attention layers."""
PUBLIC = "torch.nn.attention.varlen"
ATEN = "aten._flash_attention_forward"
NO_KERNEL = "this torch has neither torch.nn.attention.varlen nor aten::_flash_attention_forward"


@dataclass(frozen=True)
class Kernel:
    """A causal variable-length attention kernel and where it applies."""

    name: str
    call: Callable[..., Any]
    """(q (T, Hq, D), k and v (T, Hkv, D), int32 row offsets, longest row, scale) -> (T, Hq, D); contiguous inputs."""
    device_type: str = "cuda"
    dtypes: tuple[str, ...] = ("float16", "bfloat16")
    """The flash kernel has no fp32 version; other dtypes go to SDPA."""

    def fits(self, query, key, dropout: float) -> bool:
        return (query.device.type == self.device_type and str(query.dtype).removeprefix("torch.") in self.dtypes
                and key.dtype == query.dtype and not dropout and query.shape[-1] % 8 == 0
                and query.shape[-1] <= 256)


def cu_seqlens(position_ids) -> tuple[object, int]:
    """Row offsets [0, l1, l1+l2, ..., L] (int32) and the longest row, for one packed sequence.

    A row starts wherever the position does not follow the previous one by 1 (transformers' own rule).
    """
    import torch

    pos = position_ids.reshape(-1)
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    edges = torch.nonzero(starts).flatten()
    cu = torch.cat([edges, edges.new_tensor([pos.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def packed_kwargs(position_ids, device) -> dict:
    """Keyword arguments that tell attention where the rows of a packed batch are, computed on the CPU once per
    micro-batch (no GPU sync per layer). The names are transformers' flash-attention kwargs, so `flash_attention_2`
    reads them too, and SDPA or eager ignore them."""
    cu, longest = cu_seqlens(position_ids.cpu())
    cu = cu.to(device, non_blocking=True)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


# --- the two ways to reach the flash kernel ---------------------------------------------------------------------------

@functools.cache
def _aten_autograd():
    """The autograd Function around the private aten ops; built once because its class needs torch imported."""
    import torch

    class FlashVarlen(torch.autograd.Function):
        """Causal variable-length flash attention on (total, heads, head_dim) tensors; k/v may have fewer heads
        (grouped-query attention is native to the kernel). Arguments are passed positionally where the aten
        schema has been stable since torch 2.2."""

        @staticmethod
        def forward(ctx, q, k, v, cu, max_len, scale):
            out, lse, rng, unused, _ = torch.ops.aten._flash_attention_forward(
                q, k, v, cu, cu, max_len, max_len, 0.0, True, False, scale=scale)
            ctx.save_for_backward(q, k, v, out, lse, cu, rng, unused)
            ctx.max_len, ctx.scale = max_len, scale
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, out, lse, cu, rng, unused = ctx.saved_tensors
            dq, dk, dv = torch.ops.aten._flash_attention_backward(
                grad.contiguous(), q, k, v, out, lse, cu, cu, ctx.max_len, ctx.max_len, 0.0, True, rng, unused,
                scale=ctx.scale)
            return dq, dk, dv, None, None, None

    return FlashVarlen


def aten_varlen(q, k, v, cu, max_len: int, scale: float | None):
    """The fallback: `aten::_flash_attention_forward` / `_backward` directly."""
    return _aten_autograd().apply(q.contiguous(), k.contiguous(), v.contiguous(), cu, int(max_len), scale)


def public_varlen() -> Callable[..., Any] | None:
    """`torch.nn.attention.varlen.varlen_attn` as a kernel call, or None where this torch has no version of it that
    takes a scale and a causal mask (it appeared in 2.9; causality later moved to `window_size`). Where it has no
    `enable_gqa`, a call with fewer k/v heads raises, so the self-test with the model's heads falls back to aten."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "scale" not in params:
        return None
    if "window_size" in params:
        causal: dict[str, Any] = {"window_size": (-1, 0)}
    elif "is_causal" in params:
        causal = {"is_causal": True}
    else:
        return None
    takes_gqa = public_takes_gqa()

    def call(q, k, v, cu, max_len: int, scale: float | None):
        grouped = q.shape[1] != k.shape[1]
        if grouped and not takes_gqa:
            raise ValueError("this torch's varlen_attn has no enable_gqa")
        gqa = {"enable_gqa": grouped} if takes_gqa else {}
        return varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, int(max_len), int(max_len),
                           scale=scale, **causal, **gqa)

    return call


def public_takes_gqa() -> bool:
    """Whether this torch's varlen_attn takes grouped-query heads (`enable_gqa`; not in torch 2.11)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    return "enable_gqa" in inspect.signature(varlen_attn).parameters


def _disable_compile(fn):
    """Keep torch.compile out of the kernel call: max_len changes every micro-batch and would force recompiles."""
    import torch

    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def candidate_kernels() -> list[Kernel]:
    """The flash kernels this torch offers, preferred first: the public API, then the private ops it wraps."""
    import torch

    found = []
    public = public_varlen()
    if public is not None:
        found.append(Kernel(PUBLIC, _disable_compile(public)))
    if hasattr(torch.ops.aten, "_flash_attention_forward"):
        found.append(Kernel(ATEN, _disable_compile(aten_varlen)))
    return found


# --- transformers' attention interface --------------------------------------------------------------------------------

def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: query (B, Hq, L, D), key/value (B, Hkv, S, D) -> ((B, L, Hq, D), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kernel: Kernel | None = getattr(module, KERNEL_ATTR, None)
    packed = attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2] > 1
    if packed:
        cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
        if cu is None and kwargs.get("position_ids") is not None:
            cu, longest = cu_seqlens(kwargs["position_ids"])  # one GPU sync per layer: pass packed_kwargs instead
        if cu is not None:
            if longest is None:
                longest = int((cu[1:] - cu[:-1]).max())
            if kernel is not None and kernel.fits(query, key, dropout):
                q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
                cu = cu.to(device=query.device, dtype=torch.int32)
                return kernel.call(q, k, v, cu, longest, scaling).unsqueeze(0), None
            if cu.numel() > 2:  # several rows and no kernel for them
                return per_row_attention(module, query, key, value, cu, scaling, dropout, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **_without_packing(kwargs))


def per_row_attention(module, query, key, value, cu, scaling, dropout: float, kwargs: dict):
    """Packed rows without a kernel (the CPU, fp32): transformers' SDPA attention on each row's slice, causal, the
    outputs concatenated. Exact like the kernel, and like it never builds the (L x L) mask, whose size (4 GiB at 64k
    tokens, and SDPA's fp32 scores on top) made long packs impossible off the GPU; the cost is one call per row and
    layer. query (1, Hq, L, D), key/value (1, Hkv, L, D) -> ((1, L, Hq, D), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rest = _without_packing(kwargs)
    bounds = cu.tolist()
    pieces = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                     scaling=scaling, dropout=dropout, **rest)[0]
              for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    return torch.cat(pieces, dim=1), None


def _without_packing(kwargs: dict) -> dict:
    drop = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "position_ids")
    return {k: v for k, v in kwargs.items() if k not in drop}


def varlen_mask(*args, **kwargs):
    """Mask interface: no mask at all without padding (rows come from cu_seqlens); SDPA's mask with padding."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register `mathtune_varlen` with transformers (attention and mask); registering again replaces the entry with
    the same functions. Returns the name. A model set to it without `enable` runs SDPA."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME


# --- per model --------------------------------------------------------------------------------------------------------

def flash_selftest(device, heads: int = 4, kv_heads: int = 2, head_dim: int = 64, dtype=None,
                   kernel: Kernel | None = None) -> str | None:
    """Run a varlen kernel (the first of `candidate_kernels` unless given) forward and backward on a few packed rows
    and compare with per-row SDPA in fp32.

    Returns None when it agrees, else the reason (so callers can fall back and say why).
    """
    import torch
    import torch.nn.functional as F

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return "not a CUDA device"
    if kernel is None:
        kernels = candidate_kernels()
        if not kernels:
            return NO_KERNEL
        kernel = kernels[0]
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        sizes = [5, 67, 1, 130]
        total = sum(sizes)
        q, k, v = (torch.randn(total, h, head_dim, generator=gen).to(device, dtype).requires_grad_()
                   for h in (heads, kv_heads, kv_heads))
        cu = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int32, device=device)
        scale = head_dim**-0.5
        out = kernel.call(q, k, v, cu, max(sizes), scale)
        grad = torch.randn(out.shape, generator=gen).to(device, dtype)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
        rq, rk, rv = (t.detach().float().requires_grad_() for t in (q, k, v))
        pieces = []
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            qq, kk, vv = (t[a:b].transpose(0, 1) for t in (rq, rk, rv))
            kk = kk.repeat_interleave(heads // kv_heads, 0)
            vv = vv.repeat_interleave(heads // kv_heads, 0)
            pieces.append(F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale).transpose(0, 1))
        ref = torch.cat(pieces)
        rdq, rdk, rdv = torch.autograd.grad(ref, (rq, rk, rv), grad.float())
        for name, got, want in (("out", out, ref), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
            if got.shape != want.shape:
                return f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            err = (got.float() - want).abs().max().item()
            if not err <= 0.05 * max(1.0, want.abs().max().item()):
                return f"{name} differs from SDPA by {err:.3g}"
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use the kernel here
        return first_line(exc, typed=True)
    return None


def attach(model, kernel: Kernel | None) -> str | None:
    """Switch `model` (a transformers model, or a peft model around one) to `mathtune_varlen` running `kernel` (None:
    packed rows run `per_row_attention`); other models are left as they are. Returns None when switched, else why
    not."""
    base = unwrap(model)
    # transformers hands the attention function the layer that calls it, so each attention layer carries the kernel
    layers = attention_layers(base)
    if not layers:
        return "no attention layers found"
    register()
    try:
        base.set_attn_implementation(NAME)
    except Exception:  # noqa: BLE001 - older transformers: set it on the config directly
        base.config._attn_implementation = NAME
    if getattr(base.config, "_attn_implementation", None) != NAME:
        return f"transformers kept attention '{base.config._attn_implementation}'"
    for layer in (base, *layers):
        if kernel is None:
            if hasattr(layer, KERNEL_ATTR):
                delattr(layer, KERNEL_ATTR)
        else:
            setattr(layer, KERNEL_ATTR, kernel)
    return None


def choose_kernel(device, heads: int, kv_heads: int, head_dim: int) -> tuple[Kernel | None, str | None]:
    """(the first of `candidate_kernels` that passes its self-test on `device` with these head shapes, None), or
    (None, why none did: every kernel's reason)."""
    if not str(device).startswith("cuda"):
        return None, "not a CUDA device"
    kernels = candidate_kernels()
    if not kernels:
        return None, NO_KERNEL
    reasons = []
    for kernel in kernels:
        reason = flash_selftest(device, heads, kv_heads, head_dim, kernel=kernel)
        if reason is None:
            return kernel, None
        reasons.append(f"{kernel.name}: {reason}")
    return None, "; ".join(reasons)


def enable(model, device) -> str | None:
    """Switch `model` to the first varlen kernel that passes its self-test on `device` with the model's head shape.
    Returns None when enabled, else why not."""
    config = unwrap(model).config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    kernel, reason = choose_kernel(device, config.num_attention_heads, kv_heads, head_dim)
    return reason if kernel is None else attach(model, kernel)


def kernel_of(model) -> Kernel | None:
    """The varlen kernel `model` runs, or None."""
    return getattr(unwrap(model), KERNEL_ATTR, None)


def warn_fallback(reason: str) -> None:
    warnings.warn(f"packed attention falls back to SDPA with a dense mask: {reason}", stacklevel=2)
