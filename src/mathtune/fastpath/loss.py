"""Summed next-token cross-entropy over trained tokens; the caller divides by the token count of the whole step.

The output head runs only on trained positions (labels != -100): prompt tokens and padding never get logits, which
saves the head's matmul on them and the (tokens x vocab) fp32 logits that would otherwise be kept for the backward.
"""

from __future__ import annotations

from ..data.packing import Batch
from ..data.tokenize import IGNORE_INDEX
from ..model import backbone_of, unwrap


def _inputs(batch: Batch, device) -> dict:
    inputs = {"input_ids": batch.input_ids.to(device)}
    if batch.position_ids is not None:
        inputs["position_ids"] = batch.position_ids.to(device)
        if batch.input_ids.shape[0] == 1:
            from .attention import packed_kwargs

            inputs.update(packed_kwargs(batch.position_ids, device))
    if batch.attention_mask is not None:
        inputs["attention_mask"] = batch.attention_mask.to(device)
    return inputs


def _backbone_and_head(model):
    """The decoder stack and the output projection, when logits are exactly head(hidden) (no soft-capping/scale)."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None, None
    backbone = backbone_of(base)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if backbone is None or head is None or not hasattr(head, "weight"):
        return None, None
    return backbone, head


def kept_states(model, batch: Batch, device):
    """(x, target, head) for the trained positions of `batch` (labels != -100), flattened in order: x holds their
    final hidden states and `head` the output projection that makes logits of them, or, where a model's logits are
    not exactly head(hidden), x holds their logits and `head` is None; target holds the tokens they predict. The
    output head never runs on the other positions."""
    import torch

    inputs = _inputs(batch, device)
    labels = batch.labels.reshape(-1).cpu()
    keep = torch.nonzero(labels != IGNORE_INDEX).flatten()
    target = labels.index_select(0, keep).to(device, non_blocking=True)
    backbone, head = _backbone_and_head(model)
    if backbone is None:
        logits = model(**inputs, use_cache=False).logits
        return logits.reshape(-1, logits.size(-1)).index_select(0, keep.to(device)), target, None
    hidden = backbone(**inputs, use_cache=False).last_hidden_state
    return hidden.reshape(-1, hidden.size(-1)).index_select(0, keep.to(device, non_blocking=True)), target, head


def kept_logits(model, batch: Batch, device):
    """(logits [N, V], target [N]) of the trained positions of `batch`, in the model's dtype."""
    x, target, head = kept_states(model, batch, device)
    return (x if head is None else head(x)), target


def loss_sum(model, batch: Batch, device, fused_linear_ce=None):
    """Sum of token losses of `batch` (labels are already shifted).

    With `fused_linear_ce` (liger-kernel's), the output projection and the loss run chunk by chunk and logits are
    never materialised; otherwise the logits of trained positions are upcast to fp32 for a stable loss.
    """
    import torch
    import torch.nn.functional as F

    x, target, head = kept_states(model, batch, device)
    if head is None:
        return F.cross_entropy(x.float(), target, reduction="sum").to(torch.float32)
    if target.numel() == 0:
        return x.sum().float()  # 0, still attached to the graph
    if fused_linear_ce is not None:
        return fused_linear_ce(head.weight, x, target, getattr(head, "bias", None)).to(torch.float32)
    return F.cross_entropy(head(x).float(), target, reduction="sum").to(torch.float32)
