"""Summed next-token cross-entropy over trained tokens; the caller divides by the token count of the whole step."""

from __future__ import annotations

from .data.packing import Batch
from .data.tokenize import IGNORE_INDEX


def _inputs(batch: Batch, device) -> dict:
    inputs = {"input_ids": batch.input_ids.to(device)}
    if batch.position_ids is not None:
        inputs["position_ids"] = batch.position_ids.to(device)
    if batch.attention_mask is not None:
        inputs["attention_mask"] = batch.attention_mask.to(device)
    return inputs


def loss_sum(model, batch: Batch, device, fused_linear_ce=None):
    """Sum of token losses of `batch` (labels are already shifted).

    With `fused_linear_ce` (liger-kernel's), the output projection and the loss run chunk by chunk and full logits
    are never materialised; otherwise logits are upcast to fp32 for a stable loss.
    """
    import torch
    import torch.nn.functional as F

    labels = batch.labels.to(device)
    inputs = _inputs(batch, device)
    if fused_linear_ce is not None:
        backbone = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
        hidden = backbone(**inputs, use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        flat = hidden.reshape(-1, hidden.size(-1))
        return fused_linear_ce(head.weight, flat, labels.reshape(-1))
    logits = model(**inputs, use_cache=False).logits
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    ).to(torch.float32)
