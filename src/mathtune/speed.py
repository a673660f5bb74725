"""The fast path on CUDA: fused kernels from liger-kernel (RMSNorm, SwiGLU, RoPE, linear + cross-entropy).

Each piece has a flag to turn it off; on the CPU, or without liger-kernel, everything falls back to plain PyTorch.
"""

from __future__ import annotations

import importlib.util

from .config import TrainArgs


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def wants_liger(args: TrainArgs, device) -> bool:
    if args.use_liger_kernel is None:
        return str(device).startswith("cuda") and liger_available()
    return args.use_liger_kernel


def apply_fast_path(model, args: TrainArgs, device):
    """Patch `model` in place with fused kernels when wanted; return the fused linear cross-entropy (or None)."""
    if not wants_liger(args, device):
        return None
    from .errors import UserError

    if not liger_available():
        raise UserError("--use_liger_kernel true needs liger-kernel: pip install 'mathtune[gpu]'")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss, _apply_liger_kernel_to_instance

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    _apply_liger_kernel_to_instance(model=base, rms_norm=True, swiglu=True, rope=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    return LigerFusedLinearCrossEntropyLoss(reduction="sum", ignore_index=-100)
