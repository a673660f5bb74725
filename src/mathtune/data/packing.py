"""Micro-batches: rows packed into long sequences with per-row positions, or padded rows; labels pre-shifted.

Labels are shifted per row before concatenation, so the last token of a row never learns to predict the first token
of the next one. Packed rows carry position ids that restart at 0; transformers derives from them a mask under which
attention never crosses rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .tokenize import IGNORE_INDEX, Encoded


@dataclass(frozen=True)
class Batch:
    """Tensors for one micro-batch, plus which rows it holds (for error messages)."""

    input_ids: object
    labels: object
    position_ids: object | None
    attention_mask: object | None
    rows: tuple[int, ...]
    num_tokens: int
    num_trained: int


def plan_batches(lengths: Sequence[int], *, seed: int, epoch: int, batch_size: int, max_length: int,
                 packing: bool) -> list[list[int]]:
    """Row indices of each micro-batch of one epoch, in a seeded shuffled order.

    With packing, rows are placed first-fit into bins of batch_size * max_length tokens, keeping the shuffled order
    as far as it goes, so every bin is nearly full and the order still differs from epoch to epoch.
    """
    order = list(range(len(lengths)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    if not packing:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    capacity = batch_size * max_length
    bins: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = lengths[index]
        for b, free in enumerate(room):
            if size <= free:
                bins[b].append(index)
                room[b] -= size
                break
        else:
            bins.append([index])
            room.append(capacity - size)
    return bins


def shifted_labels(example: Encoded) -> list[int]:
    """Labels aligned with inputs: position t holds the token to predict at t (that is, token t + 1)."""
    return example.labels[1:] + [IGNORE_INDEX]


def collate(examples: Sequence[Encoded], rows: Sequence[int], *, packing: bool, pad_id: int) -> Batch:
    import torch

    chosen = [examples[i] for i in rows]
    if packing:
        ids = [t for e in chosen for t in e.input_ids]
        labels = [t for e in chosen for t in shifted_labels(e)]
        positions = [p for e in chosen for p in range(len(e))]
        input_ids = torch.tensor([ids])
        label_t = torch.tensor([labels])
        position_ids = torch.tensor([positions])
        attention_mask = None
    else:
        width = max(len(e) for e in chosen)
        input_ids = torch.full((len(chosen), width), pad_id)
        label_t = torch.full((len(chosen), width), IGNORE_INDEX)
        attention_mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for r, e in enumerate(chosen):
            input_ids[r, : len(e)] = torch.tensor(e.input_ids)
            label_t[r, : len(e)] = torch.tensor(shifted_labels(e))
            attention_mask[r, : len(e)] = 1
        position_ids = None
    trained = int((label_t != IGNORE_INDEX).sum())
    return Batch(input_ids, label_t, position_ids, attention_mask, tuple(rows), sum(len(e) for e in chosen), trained)
