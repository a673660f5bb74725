"""Memory/speed trade-offs on decoder layers: gradient checkpointing on some or all of them, torch.compile of each."""

from __future__ import annotations

import warnings

from ..model import backbone_of, unwrap


def decoder_layers(model) -> list:
    backbone = backbone_of(model) or unwrap(model)
    return list(getattr(backbone, "layers", []))


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
