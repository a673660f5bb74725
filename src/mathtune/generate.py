"""One generator for infer, eval and quickstart (and next for RL rollouts and a server).

`Generator` holds what every caller needs decided the same way: prompts rendered through the chat template, the
end-of-turn tokens (the model's and the tokenizer's, see `model.end_of_turn_ids`), stop words, and sampling
settings. It serves batched generation (length-sorted batches through mathtune.decode's loop, or transformers'
generate where that loop does not apply) with live progress in tokens and a per-row hook that sees each reply grow
(and may stop it), and one streamed reply that Ctrl-C stops, through that same hook on either path.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data.tokenize import render_ids
from .model import end_of_turn_ids
from .seeding import seed_everything

if TYPE_CHECKING:  # decode imports torch, which `import mathtune.generate` does not
    from .decode import RowHook, RowTracker

Conversation = Sequence[dict[str, str]]
TokensCallback = Callable[[int], None]


@dataclass(frozen=True)
class Sampling:
    """How replies are drawn: greedy when temperature is 0; `n` replies per prompt; `seed` reseeds before a call
    (None leaves the generators as they are)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be positive, got {self.max_new_tokens} and {self.n}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0) or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0: greedy decoding gives the same reply n times")

    def generate_kwargs(self) -> dict[str, Any]:
        """The sampling arguments of transformers' `generate`; None clears what a model's generation config sets."""
        if self.temperature == 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}


@dataclass(frozen=True)
class Reply:
    """One streamed reply; `interrupted` when Ctrl-C stopped it, `text` then being what was shown so far."""

    text: str
    interrupted: bool = False


def cut_at_stop_words(text: str, stop_words: Sequence[str]) -> str:
    """`text` up to and including the earliest stop word (SWIFT keeps the stop word in the response)."""
    cut = len(text)
    for word in stop_words:
        at = text.find(word)
        if at != -1:
            cut = min(cut, at + len(word))
    return text[:cut]


def until_eos(ids: list[int], eos: Sequence[int]) -> list[int]:
    """Generated ids before the first end-of-turn token; after it a batched row holds only padding."""
    for k, token in enumerate(ids):
        if token in eos:
            return ids[:k]
    return ids


def within_context(model: Any, max_new_tokens: int) -> int:
    """--max_new_tokens no larger than the model's context, said in one line when it was: beyond the context,
    generation runs on until killed (or fails deep inside the model)."""
    import sys

    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not context or max_new_tokens <= context:
        return max_new_tokens
    print(f"--max_new_tokens {max_new_tokens:,} is beyond the model's context of {context:,} tokens; using "
          f"{context:,}", file=sys.stderr, flush=True)
    return context


class Generator:
    """Replies of `model` to chat conversations, ended at an end-of-turn token or at one of `stop_words`."""

    def __init__(self, model: Any, tokenizer: Any, stop_words: Sequence[str] = (), fast: bool = True) -> None:
        if any(not word for word in stop_words):
            raise ValueError("an empty stop word would end every reply at once")
        self.model, self.tokenizer, self.stop_words = model, tokenizer, tuple(stop_words)
        self.eos = end_of_turn_ids(tokenizer, getattr(model, "generation_config", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.fast = fast  # decode.Decoder where it applies (`fast_path_reason`); False: transformers' generate only
        self._decoder: Any = None  # kept: its cache buffers and CUDA graphs serve the next calls

    def fast_path_reason(self, streaming: bool = False) -> str | None:
        """Why a batched call (or with `streaming`, `stream`) takes transformers' generate rather than the fast
        decoding loop (None: it does not). Stop words keep batches off the loop, which knows tokens only; `stream`
        cuts its text at them itself (through its row hook, on either path)."""
        from .decode import unsupported

        if not self.fast:
            return "fast=False"
        if self.stop_words and not streaming:
            return "stop words"
        return unsupported(self.model)

    def release(self) -> None:
        """Free the fast loop's KV buffers and CUDA graphs (kept by default so that the next call reuses them)."""
        if self._decoder is not None:
            self._decoder.release()

    def decoder_stats(self) -> dict[str, Any]:
        """The fast loop's held KV buffers (rows, slots, kv_gib) and CUDA graphs (None: eager or not used yet)."""
        if self._decoder is None:
            return {"rows": 0, "slots": 0, "kv_gib": 0.0, "cuda_graphs": None}
        return self._decoder.stats()

    def render(self, conversations: Sequence[Conversation]) -> list[list[int]]:
        """Token ids of each conversation through the chat template, the assistant header appended (the same
        renderer as training's, so a prompt at inference is what the model was trained on)."""
        return [render_ids(self.tokenizer, c, add_generation_prompt=True) for c in conversations]

    def decode(self, ids: list[int]) -> str:
        """The text of generated ids (end-of-turn already cut), cut at the first stop word."""
        return cut_at_stop_words(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop_words)

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling = Sampling(), *,
                 batch_size: int = 32, static_cache: bool = False, progress: bool = True,
                 on_tokens: TokensCallback | None = None) -> list[list[str]]:
        """For each conversation, `sampling.n` replies; see `generate_ids`."""
        rows = self.generate_ids(conversations, sampling, batch_size=batch_size, static_cache=static_cache,
                                 progress=progress, on_tokens=on_tokens)
        return [[self.decode(ids) for ids in samples] for samples in rows]

    def generate_ids(self, conversations: Sequence[Conversation], sampling: Sampling = Sampling(), *,
                     batch_size: int = 32, static_cache: bool = False, progress: bool = True,
                     on_tokens: TokensCallback | None = None, on_rows: RowHook | None = None,
                     limits: Sequence[int] | None = None) -> list[list[list[int]]]:
        """For each conversation, the token ids of `sampling.n` replies, each cut before its end-of-turn token.
        `limits`: each conversation's own most new tokens (at most `sampling.max_new_tokens`); the fast loop stops
        each row at its own, transformers' generate runs the batch to its largest and the replies are cut (with
        `on_rows`, it too stops each row at its own).

        Longest prompts first, in batches of `batch_size`, left-padded. `progress` shows a bar in tokens from the
        first decoding step on; `on_tokens(count)` hears of every step's new tokens too.

        `on_rows`: a `decode.RowHook`, rows named `conversation * n + sample`; it hears each batch's rows as they
        grow (on the fast loop every `check_every` steps, in transformers' generate every step) and stops the rows it
        returns, whose replies are then cut there (a server streams replies and frees a departed client's row so).

        Where `fast_path_reason()` is None (the usual case), batches run through `decode.Decoder`: a static KV cache,
        each prompt prefilled once for its n samples, finished rows leaving the batch, CUDA graphs on a GPU; then a
        batch holds `batch_size` prompts and `static_cache` changes nothing. Otherwise transformers' generate runs:

        `static_cache`: a preallocated KV cache, with which transformers compiles the decoding step (CUDA graphs) on a
        GPU. Every batch of the call then has one shape, so that it compiles once: the width of the longest prompt
        rounded up to a multiple of 64, and a short last batch filled up with repeats of its first row (their
        replies are dropped).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if limits is not None and len(limits) != len(conversations):
            raise ValueError(f"{len(limits)} limits for {len(conversations)} conversations")
        prompts = self.render(conversations)
        # Longest first: similar lengths share a batch (little padding) and memory trouble shows up at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[list[list[int]]] = [[] for _ in prompts]
        # Static cache: one cache shape for the call, from its longest prompt (the first in `order`).
        fast = self.fast_path_reason() is None
        static_cache = static_cache and not fast
        static_width = -(-len(prompts[order[0]]) // 64) * 64 if static_cache and prompts else None
        if sampling.seed is not None:
            seed_everything(sampling.seed)
        bar = TokenProgress(len(prompts), sampling.n * sampling.max_new_tokens, progress, on_tokens)
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                real = len(chunk)  # rows whose replies are kept
                if static_cache and len(order) > batch_size:
                    chunk = chunk + [chunk[0]] * (batch_size - real)  # one batch shape
                hook = _named(on_rows, chunk[:real], sampling.n) if on_rows is not None else None
                mine = [limits[i] for i in chunk] if limits is not None else None
                if fast:
                    new = self._fast_batch([prompts[i] for i in chunk], sampling, bar, mine, hook)
                else:
                    new = self._batch([prompts[i] for i in chunk], real, static_width, sampling, bar, hook, mine)
                for k, ids in enumerate(new):
                    results[chunk[k // sampling.n]].append(ids if mine is None else ids[: mine[k // sampling.n]])
                bar.batch_done(real, sum(len(ids) for ids in new))
        finally:
            bar.close()
        return results

    def _batch(self, prompts: list[list[int]], real: int, static_width: int | None, sampling: Sampling,
               bar: TokenProgress | None, on_rows: RowHook | None = None,
               limits: list[int] | None = None) -> list[list[int]]:
        """One batch's replies, `real` prompts' worth (the rest fill a static-cache batch), cut at end-of-turn (and,
        with `on_rows`, where it stopped them)."""
        import torch

        width = static_width or max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        extra: dict[str, Any] = {"cache_implementation": "static"} if static_width else {}
        # Counting reads each step's tokens back from the device; nobody listening, nothing is counted.
        listened = bar is not None and bar.listened
        counters = [token_counter(real * sampling.n, [*self.eos, self.pad_id], bar.tokens)] if listened else []
        from .decode import RowTracker

        tracker = None
        if on_rows is not None:
            cuts = [m for m in limits or [sampling.max_new_tokens] * real for _ in range(sampling.n)]
            tracker = RowTracker(cuts[: real * sampling.n], self.eos)
            counters.append(row_stopper(tracker, on_rows, width, sampling.max_new_tokens))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                      stopping_criteria=counters, **self._generate_kwargs(sampling), **extra)
        replies = [until_eos(ids, self.eos) for ids in out[: real * sampling.n, width:].tolist()]
        return replies if tracker is None else [ids[:m] for ids, m in zip(replies, tracker.limits, strict=True)]

    def _fast_batch(self, prompts: list[list[int]], sampling: Sampling, bar: TokenProgress | None,
                    limits: list[int] | None = None, on_rows: RowHook | None = None) -> list[list[int]]:
        from .decode import Decoder

        if self._decoder is None:
            self._decoder = Decoder(self.model, self.eos, self.pad_id)
        # Benchmarks force reply lengths through the generation config, as they do for transformers' generate.
        least = getattr(getattr(self.model, "generation_config", None), "min_new_tokens", None) or 0
        return self._decoder.generate(prompts, sampling.n, sampling.max_new_tokens, sampling.temperature,
                                      sampling.top_p, min_new_tokens=least,
                                      on_step=bar.tokens if bar is not None and bar.listened else None,
                                      limits=limits, on_rows=on_rows)

    def _generate_kwargs(self, sampling: Sampling) -> dict[str, Any]:
        extra = {"stop_strings": list(self.stop_words), "tokenizer": self.tokenizer} if self.stop_words else {}
        return {"max_new_tokens": sampling.max_new_tokens, "num_return_sequences": sampling.n,
                "eos_token_id": self.eos, "pad_token_id": self.pad_id,
                "use_cache": True,  # even where the model's generation config turns the cache off
                **sampling.generate_kwargs(), **extra}

    def stream(self, messages: Conversation, sampling: Sampling = Sampling(),
               on_text: Callable[[str], None] | None = None) -> Reply:
        """One reply to `messages`, its text passed to `on_text` piece by piece as it comes.

        Ctrl-C (KeyboardInterrupt) while it runs stops it: the reply is then the text passed on so far, marked
        `interrupted`; the caller decides whether that ends anything more.

        Its new tokens reach `TextPieces` through the row hook (`on_rows`) on either path, so that the same tokens
        show the same pieces and the reply, shown and generated, ends at the first stop word: on the fast decoding
        loop (one row) unless `fast_path_reason(streaming=True)` says otherwise, then on transformers' generate.
        """
        if sampling.n != 1:
            raise ValueError("stream gives one reply; ask generate for n > 1")
        pieces = TextPieces(self.tokenizer, self.stop_words, on_text or (lambda text: None))

        def grow(new: dict[int, list[int]], ended: set[int]) -> list[int]:
            return [0] if pieces.add(new.get(0, []), 0 in ended) else []

        try:
            ids = self.render([messages])[0]
            if sampling.seed is not None:
                seed_everything(sampling.seed)
            if self.fast_path_reason(streaming=True) is None:
                reply = self._fast_batch([ids], sampling, None, on_rows=grow)[0]
            else:
                reply = self._batch([ids], 1, None, sampling, None, grow)[0]
        except KeyboardInterrupt:
            return Reply(pieces.text, interrupted=True)
        return Reply(self.decode(reply))


class TokenProgress:
    """Live progress of a batched generation, in tokens: a tqdm bar with elapsed time, tokens/s and an estimate of
    the time left, and the prompts done as postfix.

    Its total starts at the token budget (prompts x samples x max_new_tokens), an upper bound; as each batch ends,
    the budget its replies left unused comes off, so the estimate tightens and the bar ends at 100%.
    """

    def __init__(self, prompts: int, budget_per_prompt: int, enabled: bool = True,
                 on_tokens: TokensCallback | None = None) -> None:
        from tqdm.auto import tqdm

        self.prompts, self.done, self.budget_per_prompt, self.on_tokens = prompts, 0, budget_per_prompt, on_tokens
        self.listened = enabled or on_tokens is not None
        self.bar = tqdm(total=prompts * budget_per_prompt, desc="generate", unit="tok", disable=not enabled,
                        postfix=f"prompts 0/{prompts}")

    def tokens(self, count: int) -> None:
        """`count` new tokens in this decoding step."""
        if count:
            self.bar.update(count)
        if self.on_tokens is not None:
            self.on_tokens(count)

    def batch_done(self, prompts: int, generated: int) -> None:
        """A batch of `prompts` prompts ended having generated `generated` tokens."""
        self.bar.total -= prompts * self.budget_per_prompt - generated
        self.done += prompts
        self.bar.set_postfix_str(f"prompts {self.done}/{self.prompts}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def token_counter(rows: int, end_ids: Sequence[int], on_step: TokensCallback) -> Any:
    """A transformers StoppingCriteria that never stops: after each decoding step it calls `on_step(count)` with the
    new tokens of the first `rows` rows that are still running (rows past `rows` fill a static-cache batch).

    A row stops counting at its first end-of-turn or padding token (transformers pads a row that a stop string
    ended), so the counts add up to the replies' lengths before end-of-turn.
    """
    import torch
    from transformers import StoppingCriteria

    class TokenCounter(StoppingCriteria):
        def __init__(self) -> None:
            self.running: torch.Tensor | None = None
            self.end: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if self.end is None:
                self.end = torch.tensor(sorted(set(end_ids)), device=input_ids.device)
            new = input_ids[:rows, -1]
            running = ~torch.isin(new, self.end)
            if self.running is not None:
                running &= self.running
            self.running = running
            on_step(int(running.sum()))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return TokenCounter()


def row_stopper(tracker: RowTracker, on_rows: RowHook, width: int, max_new_tokens: int) -> Any:
    """A transformers StoppingCriteria that passes each step's new token of every open row to `on_rows` (through
    `tracker`, as the fast loop does) and stops the rows that ended or that it names; rows past the tracker's (a
    static-cache batch's filler) stop at once."""
    import torch
    from transformers import StoppingCriteria

    class RowStopper(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            last = input_ids.shape[1] - width >= max_new_tokens
            tracker.report(on_rows, input_ids[: len(tracker.limits), -1:], last)
            stop = torch.ones(input_ids.shape[0], dtype=torch.bool)
            stop[list(tracker.open)] = False
            return stop.to(input_ids.device)

    return RowStopper()


def _named(on_rows: RowHook, prompts: Sequence[int], n: int) -> RowHook:
    """`on_rows` over one batch, whose row r holds sample r % n of conversation prompts[r // n]: rows named as
    `generate_ids` names them (conversation * n + sample) in both directions."""

    def batch_hook(new: dict[int, list[int]], ended: set[int]) -> list[int]:
        names = {row: prompts[row // n] * n + row % n for row in new}
        back = {name: row for row, name in names.items()}
        stop = on_rows({names[row]: ids for row, ids in new.items()}, {names[row] for row in ended})
        return [back[name] for name in stop or () if name in back]

    return batch_hook


class TextPieces:
    """A reply's text from its token ids as they come, passed on in pieces that end at a space or a line (a word or
    a character of several bytes is never split: the tokens of one may come in different calls), up to and
    including the first stop word."""

    def __init__(self, tokenizer: Any, stop_words: Sequence[str], on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.stop_words, self.on_text = tokenizer, tuple(stop_words), on_text
        self.ids: list[int] = []
        self.start = 0  # ids before it are passed on (up to a line's end): decoding starts here, not at the reply's
        self.sent = 0  # characters of the text from `start` on that are passed on
        self.text = ""  # everything passed on

    def add(self, ids: list[int], end: bool) -> bool:
        """Take the next tokens (`end`: the reply is over: pass everything on); True when a stop word has come."""
        self.ids += ids
        tail = self.tokenizer.decode(self.ids[self.start :], skip_special_tokens=True)
        whole = self.text + tail[self.sent :]
        stopped = any(word in whole for word in self.stop_words)
        if stopped or end:
            self._send(cut_at_stop_words(whole, self.stop_words)[len(self.text) :])
            return stopped
        ready = tail.rfind(" ") + 1
        # Letters, digits and spaces go out at once (text without spaces streams too); anything else waits for a
        # space or a line: it may be a character whose last bytes are still to come (U+FFFD until they do).
        if tail.endswith("\n") or all(c.isspace() or unicodedata.category(c)[0] in "LMN" for c in tail[self.sent :]):
            ready = len(tail)
        if ready > self.sent:
            self._send(tail[self.sent : ready])
            self.sent = ready
        if tail.endswith("\n"):  # decode from here on, the line's last token kept for the spacing it gives the next
            self.start = len(self.ids) - 1
            self.sent = len(self.tokenizer.decode(self.ids[self.start :], skip_special_tokens=True))
        return False

    def _send(self, text: str) -> None:
        if text:
            self.text += text
            self.on_text(text)
