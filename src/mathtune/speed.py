"""The fast path on CUDA; every piece has a switch, and on the CPU nothing changes.

- attention: packed rows run in PyTorch's variable-length flash kernel (`mathtune.attention`), no dense mask;
- LoRA: the adapter branch runs in the model's dtype with its scale and sum fused into one GEMM (`fast_lora`);
- liger-kernel: RMSNorm, SwiGLU, RoPE, and linear + cross-entropy without materialising logits;
- optional: torch.compile of each decoder layer, gradient checkpointing on only some layers.

What was applied is recorded on the model (`fast_path_report`).
"""

from __future__ import annotations

import importlib.util
import types
import warnings

from .config import TrainArgs
from .model import backbone_of, unwrap


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _on(flag: bool | None, device) -> bool:
    """A tri-state switch: None means on where CUDA is."""
    return str(device).startswith("cuda") if flag is None else bool(flag)


def wants_liger(args: TrainArgs, device) -> bool:
    if args.use_liger_kernel is None:
        return str(device).startswith("cuda") and liger_available()
    return args.use_liger_kernel


def decoder_layers(model) -> list:
    backbone = backbone_of(model) or unwrap(model)
    return list(getattr(backbone, "layers", []))


def apply_fast_path(model, args: TrainArgs, device, *, attn_impl: str | None = None):
    """Patch `model` in place for speed on `device`; return the fused linear cross-entropy to train with (or None).

    `attn_impl` is the user's --attn_impl: None or "varlen" use the varlen kernel where it passes its self-test;
    anything else keeps the attention the model was loaded with. TrainArgs fields read when present (None = on with
    CUDA): `fast_lora`; (False unless set) `torch_compile`.
    """
    cuda = str(device).startswith("cuda")
    report: dict = {"device": str(device)}
    if cuda and attn_impl in (None, "varlen", "mathtune_varlen"):
        from . import attention

        reason = attention.enable(model, device)
        report["attention"] = attention.NAME if reason is None else f"sdpa ({reason})"
        if reason is not None:
            attention.warn_fallback(reason)
    else:
        report["attention"] = getattr(unwrap(model).config, "_attn_implementation", None)
    if _on(getattr(args, "fast_lora", None), device):
        report["fast_lora_modules"] = fast_lora(model)
    compile_layers_too = bool(getattr(args, "torch_compile", False))
    fused = None
    if wants_liger(args, device):
        fused = _apply_liger(model, kernels=not compile_layers_too)
        report["liger"] = "fused linear CE" + ("" if compile_layers_too else " + RMSNorm, SwiGLU, RoPE")
    if compile_layers_too:
        report["compiled_layers"] = compile_layers(model)
    unwrap(model)._mathtune_fast_path = report
    return fused


def fast_path_report(model) -> dict:
    return dict(getattr(unwrap(model), "_mathtune_fast_path", {}))


def _apply_liger(model, kernels: bool = True):
    from .errors import UserError

    if not liger_available():
        raise UserError("--use_liger_kernel true needs liger-kernel: pip install 'mathtune[gpu]'")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss, _apply_liger_kernel_to_instance

    if kernels:
        # The model's own loss is never called (losses.loss_sum runs the backbone and the head itself), so liger's
        # patched forward with its fused loss is not needed: only the layer kernels.
        _apply_liger_kernel_to_instance(model=unwrap(model), rms_norm=True, swiglu=True, rope=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    return LigerFusedLinearCrossEntropyLoss(reduction="sum", ignore_index=-100)


# --- LoRA ------------------------------------------------------------------------------------------------------------

def _fast_lora_forward(self, x, *args, **kwargs):
    """peft's LoRA Linear forward for the plain case: one active unmerged adapter, no bias, no DoRA or variant.

    peft keeps adapter weights in fp32 (autocast_adapter_dtype) and so casts each layer's input to fp32, runs the
    adapter in fp32, and adds in fp32: several extra full-size passes per layer and fp32 activations kept for the
    backward. Here the adapter runs in the base layer's dtype (the fp32 weights are cast, so their gradients and the
    optimizer stay fp32, as under autocast), and `scale * B(A(x))` is added by the GEMM epilogue (addmm).
    """
    import torch
    import torch.nn.functional as F

    active = self.active_adapters
    if args or kwargs or self.disable_adapters or self.merged or len(active) != 1 or active[0] not in self.lora_A:
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    result = self.base_layer(x)
    dtype = result.dtype
    a = F.linear(self.lora_dropout[name](x if x.dtype == dtype else x.to(dtype)), self.lora_A[name].weight.to(dtype))
    out = torch.addmm(result.reshape(-1, result.shape[-1]), a.reshape(-1, a.shape[-1]),
                      self.lora_B[name].weight.to(dtype).t(), alpha=self.scaling[name])
    return out.view(result.shape)


def _plain_lora_linear(module) -> bool:
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        return False
    if type(module) is not Linear or getattr(module, "fan_in_fan_out", False):
        return False
    for name in module.lora_A:
        if getattr(module, "use_dora", {}).get(name) or name in getattr(module, "lora_variant", {}):
            return False
        a, b = module.lora_A[name], module.lora_B[name]
        if getattr(a, "bias", None) is not None or getattr(b, "bias", None) is not None:
            return False
        if not (hasattr(a, "weight") and hasattr(b, "weight") and a.weight.dim() == 2 and b.weight.dim() == 2):
            return False
    return True


def fast_lora(model) -> int:
    """Give every plain peft LoRA Linear in `model` the fused forward; returns how many were patched."""
    count = 0
    for module in model.modules():
        if _plain_lora_linear(module):
            module.forward = types.MethodType(_fast_lora_forward, module)
            count += 1
    return count


# --- memory/speed trade-offs -----------------------------------------------------------------------------------------

def enable_checkpointing(model) -> None:
    """Recompute activations in the backward pass of every layer; transformers 5 renamed the method (the old name
    warns)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_gradient_checkpointing(model, layers: int | None) -> int:
    """Checkpoint the first `layers` decoder layers (None: all, 0: none); returns how many are checkpointed.

    Each layer left out keeps its activations (more memory) and skips its recomputation (less time), so this trades
    memory for speed in steps of one layer.
    """
    found = decoder_layers(model)
    if layers == 0:
        disable = getattr(model, "activation_checkpointing_disable", None) or getattr(
            model, "gradient_checkpointing_disable", None)
        if disable is not None:
            disable()
        return 0
    enable_checkpointing(model)
    unwrap(model).config.use_cache = False
    keep = len(found) if layers is None else min(layers, len(found))
    for i, layer in enumerate(found):
        if hasattr(layer, "gradient_checkpointing"):
            layer.gradient_checkpointing = i < keep
    return keep


def compile_layers(model) -> int:
    """torch.compile each decoder layer (dynamic shapes: packed lengths change every micro-batch)."""
    count = 0
    for layer in decoder_layers(model):
        layer.compile(dynamic=True)
        count += 1
    if not count:
        warnings.warn("torch_compile: no decoder layers found; nothing compiled", stacklevel=2)
    return count
