"""The fast path: `apply(model, FastArgs, device)` patches a model for speed and returns how to compute its loss.

Every piece has a switch in `FastArgs`; on the CPU only packed attention and gradient checkpointing apply:

- attention: packed rows run in PyTorch's variable-length flash kernel (`fastpath.attention`), no dense mask; off
  CUDA each row runs SDPA on its own slice (exact, and memory grows with the longest row, not the pack);
- LoRA: the adapter branch runs in the model's dtype with its scale and sum fused into one GEMM (`fastpath.lora`);
- liger-kernel: RMSNorm, SwiGLU, RoPE, and linear + cross-entropy without materialising logits (`fastpath.liger`);
- memory/speed: gradient checkpointing on all or some layers, torch.compile of each layer (`fastpath.checkpointing`).

What is on is `FastPath.report`; what the attention runs is stored on the model, so models do not share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import FastArgs
from ..data.packing import Batch
from ..model import unwrap
from . import attention
from .checkpointing import compile_layers, set_gradient_checkpointing
from .liger import apply_liger, liger_available
from .lora import fast_lora
from .loss import loss_sum

__all__ = ["FastPath", "apply", "switch"]


def switch(flag: bool | None, device, available: bool = True) -> bool:
    """A tri-state speed switch: None means on where CUDA is and the feature is `available`; True or False as set."""
    if flag is None:
        return str(device).startswith("cuda") and available
    return bool(flag)


@dataclass(frozen=True)
class FastPath:
    """How to compute the loss of a model `apply` prepared; `FastPath(device)` alone is the plain path (no speed
    features), so every caller gets its loss the same way."""

    device: Any
    report: dict = field(default_factory=dict)
    """What is on: device, checkpointed_layers, attention (and attention_kernel), fast_lora_modules, liger,
    compiled_layers."""
    fused_linear_ce: Callable[..., Any] | None = None
    """liger-kernel's fused linear cross-entropy (summed), or None for the head + cross-entropy in fp32."""

    def loss_fn(self, model, batch: Batch):
        """Sum of token losses over the trained tokens of `batch`; the caller divides by the step's token count."""
        return loss_sum(model, batch, self.device, self.fused_linear_ce)


def apply(model, fast: FastArgs, device) -> FastPath:
    """Patch `model` in place for speed on `device` as `fast` asks; return its loss function and what is on.

    `fast.attn_impl` None or "varlen" runs packed attention in the varlen kernel where it passes its self-test;
    any other name keeps the attention the model was loaded with.
    """
    report: dict = {"device": str(device)}
    if fast.gradient_checkpointing:
        report["checkpointed_layers"] = set_gradient_checkpointing(model, fast.checkpoint_layers)
    report["attention"] = _attention(model, fast.attn_impl, device)
    kernel = attention.kernel_of(model)
    if kernel is not None:
        report["attention_kernel"] = kernel.name
    if switch(fast.fast_lora, device):
        report["fast_lora_modules"] = fast_lora(model)
    fused = None
    if switch(fast.use_liger_kernel, device, liger_available()):
        fused = apply_liger(model, kernels=not fast.torch_compile)
        report["liger"] = "fused linear CE" + ("" if fast.torch_compile else " + RMSNorm, SwiGLU, RoPE")
    if fast.torch_compile:
        report["compiled_layers"] = compile_layers(model)
    return FastPath(device, report, fused)


def _attention(model, attn_impl: str | None, device) -> str | None:
    """Enable varlen attention where asked for; returns what the report says about attention. Off CUDA (or where no
    kernel passes its self-test) packed rows run SDPA row by row, never through a dense (L x L) mask."""
    if attn_impl not in (None, "varlen", attention.NAME):
        return getattr(unwrap(model).config, "_attn_implementation", None)
    reason = attention.enable(model, device)  # off CUDA: "not a CUDA device", without a self-test
    if reason is None:
        return attention.NAME
    why = attention.attach(model, None)
    if why is not None:
        return f"sdpa ({why})"
    if str(device).startswith("cuda"):  # a GPU without a working kernel is worth a warning; a CPU never has one
        attention.warn_fallback(reason)
    return f"{attention.NAME} (per-row sdpa: {reason})"
