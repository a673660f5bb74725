"""A fused forward for peft's LoRA Linear: the adapter runs in the model's dtype, its scale and sum in one GEMM."""

from __future__ import annotations

import types


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
