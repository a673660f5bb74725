"""Chat-template tokenization with a loss mask: only assistant turns (and their end-of-turn token) are trained."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import UserError, first_line

IGNORE_INDEX = -100
RENDER_SECONDS = 5  # a real template renders a conversation in milliseconds
RENDER_GROWTH = 4  # a template may repeat a message (e.g. a system prompt per turn), not multiply it
RENDER_SLACK = 100_000  # characters of markup a template may add whatever the conversation


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


class TemplateFailure(UserError, ValueError):
    """The chat template failed on a conversation. A ValueError too, so data loading names the row as for any row it
    cannot tokenize; elsewhere (infer, eval) it is one line as any UserError."""


class _RenderTimeout(BaseException):
    """Raised by SIGALRM inside a render; a BaseException so no `except Exception` in a library swallows it."""


@contextlib.contextmanager
def _time_bound(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` with _RenderTimeout. A Jinja template is compiled to Python, so the signal
    stops it between two bytecodes, however it loops (a thread with a timeout could only stop waiting for it). Only
    the main thread receives signals; elsewhere the block runs unbounded in time (still bounded in size)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame) -> None:
        raise _RenderTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:  # someone else's timer was running: give it back
            signal.setitimer(signal.ITIMER_REAL, earlier)


def render_text(tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """The chat template applied to `messages`, bounded: RENDER_SECONDS of time, and a result of at most
    RENDER_GROWTH times the conversation's characters plus RENDER_SLACK. A template that loops, grows a huge string,
    reads what the sandbox blocks or fails otherwise is one line (TemplateFailure), never a hang or a traceback."""
    from jinja2 import TemplateError

    chars = sum(len(str(m.get("content", ""))) for m in messages)
    try:
        with _time_bound(RENDER_SECONDS):
            text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                 add_generation_prompt=add_generation_prompt)
    except _RenderTimeout:
        raise TemplateFailure(f"the chat template did not finish within {RENDER_SECONDS} s") from None
    except MemoryError:
        raise TemplateFailure("the chat template ran out of memory (it builds a huge string)") from None
    except RecursionError:
        raise TemplateFailure("the chat template recursed too deeply") from None
    except TemplateError as exc:
        raise TemplateFailure(f"the chat template failed: {first_line(exc, 160, typed=True)}") from None
    if not isinstance(text, str):
        raise TemplateFailure(f"the chat template rendered {type(text).__name__}, not text")
    if len(text) > RENDER_GROWTH * chars + RENDER_SLACK:
        raise TemplateFailure(f"the chat template rendered {len(text):,} characters from {chars:,}; "
                              "a template adds markup, not text")
    return text


def render_ids(tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    """Token ids of `messages` through the chat template: training's masking and generation's prompts both use it."""
    text = render_text(tokenizer, messages, add_generation_prompt)
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
        prompt = render_ids(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        full = render_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
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
    probe = render_ids(tokenizer, [{"role": "assistant", "content": "\x00"}], add_generation_prompt=False)
    marker = tokenizer("\x00", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(marker) + 1):
        if probe[start : start + len(marker)] == marker:
            return full[:start]
    return []
