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


def pack_rows(rows: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: place rows into as few bins of `capacity` tokens as possible."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(rows, key=lambda r: -lengths[r]):
        for b, free in enumerate(room):
            if lengths[index] <= free:
                bins[b].append(index)
                room[b] -= lengths[index]
                break
        else:
            bins.append([index])
            room.append(capacity - lengths[index])
    return bins


def plan_steps(lengths: Sequence[int], *, seed: int, epoch: int, rows_per_step: int, batch_size: int,
               packing: bool, capacity: int) -> list[list[list[int]]]:
    """For one epoch: the micro-batches (lists of row indices) of each optimizer step.

    Rows are shuffled with the seed and epoch and cut into steps of `rows_per_step` rows (batch size times gradient
    accumulation, as without packing), so an optimizer step sees the same rows whether packed or not. Packing only
    changes how a step's rows are laid into micro-batches: into as few sequences of `capacity` tokens as fit.
    """
    order = list(range(len(lengths)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    steps = [order[i : i + rows_per_step] for i in range(0, len(order), rows_per_step)]
    if packing:
        return [pack_rows(step, lengths, capacity) for step in steps]
    return [[step[i : i + batch_size] for i in range(0, len(step), batch_size)] for step in steps]


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
