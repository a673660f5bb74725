"""Chat-template tokenization with a loss mask: only assistant turns (and their end-of-turn token) are trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized conversation.

    input_ids: the rendered chat template, tokenized.
    labels: input_ids where trained, IGNORE_INDEX elsewhere.
    """

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def char_limit(tokenizer, max_tokens: int) -> int:
    """Characters beyond which a text cannot fit in `max_tokens` tokens: a token covers at most as many characters as
    the longest vocabulary entry (byte-level and SentencePiece entries are never shorter than their text). Lets a
    caller refuse or cut a huge row without tokenizing it, which alone takes minutes for 20 MB."""
    longest = max((len(t) for t in tokenizer.get_vocab()), default=1)
    return max_tokens * max(longest, 1)


def _render(tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    # The template already holds every special token; plain encode would add a BOS on some tokenizers.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_conversation(tokenizer, messages: Sequence[dict[str, str]]) -> Encoded:
    """Render `messages` through the tokenizer's chat template and mask everything but assistant turns.

    Each assistant turn's span is what the template adds between the prompt for that turn (the history plus the
    generation prompt) and the history including the turn, so the end-of-turn token is trained too.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        full = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if full[: len(input_ids)] != input_ids or full[: len(prompt)] != prompt[: len(full)]:
            raise ValueError("chat template does not render conversations as growing prefixes; cannot mask turns")
        if not prompt:
            # A response-only row: nothing precedes the reply but the template's own header.
            prompt = _assistant_header_prefix(tokenizer, full)
        input_ids.extend(prompt[len(input_ids) :])
        labels.extend([IGNORE_INDEX] * (len(prompt) - len(labels)))
        input_ids.extend(full[len(prompt) :])
        labels.extend(full[len(prompt) :])
    if not input_ids:
        raise ValueError("conversation has no assistant turn to train on")
    return Encoded(input_ids, labels)


def _assistant_header_prefix(tokenizer, full: list[int]) -> list[int]:
    """For a conversation that starts with the assistant, the tokens before its content (system, header)."""
    probe = _render(tokenizer, [{"role": "assistant", "content": "\x00"}], add_generation_prompt=False)
    marker = tokenizer("\x00", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(marker) + 1):
        if probe[start : start + len(marker)] == marker:
            return full[:start]
    return []
