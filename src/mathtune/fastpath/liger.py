"""liger-kernel: RMSNorm, SwiGLU, RoPE kernels on the model, and linear + cross-entropy without materialising logits."""

from __future__ import annotations

import importlib.util

from ..errors import UserError
from ..model import unwrap


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def apply_liger(model, kernels: bool = True):
    """Patch the layer kernels into `model` (unless `kernels` is False: torch.compile fuses those itself) and return
    liger's fused linear cross-entropy (summed over tokens) for the loss."""
    if not liger_available():
        raise UserError("--use_liger_kernel true needs liger-kernel: pip install 'mathtune[gpu]'")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss, _apply_liger_kernel_to_instance

    if kernels:
        # The model's own loss is never called (fastpath.loss runs the backbone and the head itself), so liger's
        # patched forward with its fused loss is not needed: only the layer kernels.
        _apply_liger_kernel_to_instance(model=unwrap(model), rms_norm=True, swiglu=True, rope=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    return LigerFusedLinearCrossEntropyLoss(reduction="sum", ignore_index=-100)
