"""The batch worker: one thread owns the model; requests queue, and whenever the worker is free it takes everything
waiting (up to `max_batch_size` rows) and answers it in one `Generator.generate_ids` call per group of requests that
can share a batch (same served model and sampling settings).

Step-level batching: a batch runs until its last row ends, and requests arriving meanwhile wait for the next one.
Every batch runs on the generator's fast decoding loop where it applies (transformers' generate otherwise). Streamed
requests and those with stop sequences go through the generator's row hook (`_stepped`): each row's tokens are seen
as they come (every decoding step on a CPU, every 8 on a GPU), so a reply is streamed as it grows, delivered the
moment its own row ends (not when the batch does), ended at its own `max_tokens` or stop sequence, and stopped when
its client leaves (which also frees its place in the queue at once). Plain requests come whole (see `_whole`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..generate import Generator, Sampling
from .models import ServedModels


@dataclass(frozen=True)
class Request:
    """One chat completion request, checked: what the worker needs of it."""

    model: str  # a served name
    messages: list[dict[str, str]]
    prompt_tokens: int
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False

    @property
    def rows(self) -> int:
        """Rows the request takes in a batch: greedy decoding gives n equal replies, so it runs once."""
        return 1 if self.temperature == 0 else self.n


@dataclass(frozen=True)
class Delta:
    """New text of some choices (index -> text), for a streamed request."""

    texts: dict[int, str]


@dataclass(frozen=True)
class Done:
    """The finished replies: each choice's whole text and why it ended ('stop' or 'length')."""

    texts: list[str]
    reasons: list[str]
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Done | Failed


class QueueFull(Exception):
    """More requests than --max_queue are admitted."""


@dataclass
class Choice:
    """One row's reply as it grows. `text` is decoded incrementally (from `prefix` on, `read` ids already turned into
    text), since decoding every row's whole reply at every step would cost more than the step on a GPU."""

    ids: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0  # characters of `text` already streamed
    prefix: int = 0
    read: int = 0
    finish: str | None = None


class Job:
    """A request in the worker's hands; `deliver(event)` passes events to whoever waits for it (thread-safe)."""

    def __init__(self, request: Request, deliver: Callable[[Event], None]) -> None:
        self.request, self.deliver = request, deliver
        self.choices = [Choice() for _ in range(request.rows)]
        self.cancelled = False
        self.released = False
        self.done = False

    def key(self) -> tuple:
        """Requests of equal keys share a batch. A seeded request runs alone: its reply then depends on the seed
        alone, not on what else happened to arrive with it."""
        r = self.request
        return (r.model, r.temperature, r.top_p if r.temperature else 1.0, r.rows, self.needs_text,
                None if r.seed is None else (r.seed, id(self)))

    @property
    def needs_text(self) -> bool:
        return self.request.stream or bool(self.request.stop)


class Batcher:
    """Queue and worker thread around one `ServedModels`."""

    def __init__(self, models: ServedModels, max_batch_size: int = 128, max_queue: int = 512,
                 batch_wait_ms: float = 10.0) -> None:
        self.models, self.max_batch_size, self.max_queue = models, max_batch_size, max_queue
        self.wait_s = batch_wait_ms / 1000
        self.generator = Generator(models.network, models.tokenizer)
        self.eos = set(self.generator.eos)
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._admitted = 0
        self._arriving = 0  # requests being checked (tokenized) on their way to the queue
        self._running = 0
        self._closing = False
        self.batches = 0  # generate calls made and tokens generated (for /health)
        self.tokens = 0
        self._thread = threading.Thread(target=self._loop, name="mathtune-batcher", daemon=True)
        self._thread.start()

    # --- the request side (event loop threads) ---

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around checking a request before `submit`: an idle worker waits for it to join the next batch."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def submit(self, request: Request, deliver: Callable[[Event], None]) -> Job:
        job = Job(request, deliver)
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._admitted >= self.max_queue:
                raise QueueFull(f"{self._admitted} requests are running or waiting (--max_queue {self.max_queue})")
            self._admitted += 1
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: free its place now; its rows stop at the next decoding step."""
        with self._cond:
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)
            self._release(job)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"admitted": self._admitted, "waiting": len(self._pending), "running": self._running,
                    "batches": self.batches, "tokens": self.tokens}

    def close(self, timeout: float | None = None) -> None:
        """Answer what is queued, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _release(self, job: Job) -> None:
        if not job.released:  # under self._cond
            job.released = True
            self._admitted -= 1

    # --- the worker ---

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                self._run([job for job in group if not job.cancelled])

    def _take(self) -> list[Job] | None:
        """Everything waiting, up to max_batch_size rows, once a burst of arrivals has gone quiet."""
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            # A burst is over when nothing arrived for wait_s and no request is between its HTTP parsing and the
            # queue; at most 25 x wait_s (250 ms by default, a small part of a batch's seconds on a GPU), so a
            # steady stream of arrivals cannot hold a batch back for long.
            give_up = time.monotonic() + 25 * self.wait_s
            while self.wait_s and sum(j.request.rows for j in self._pending) < self.max_batch_size:
                before = len(self._pending)
                self._cond.wait(self.wait_s)
                if time.monotonic() > give_up or (len(self._pending) == before and not self._arriving):
                    break
            taken, rows = [], 0
            for job in list(self._pending):
                if taken and rows + job.request.rows > self.max_batch_size:
                    break
                taken.append(job)
                rows += job.request.rows
            del self._pending[: len(taken)]
            return taken

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        first = jobs[0].request
        sampling = Sampling(max(j.request.max_tokens for j in jobs), first.temperature, first.top_p, first.rows,
                            first.seed)
        with self._cond:
            self._running = len(jobs)
        try:
            with self.models.using(first.model):
                if jobs[0].needs_text or self.generator.fast_path_reason() is not None:
                    self._stepped(jobs, sampling)
                else:
                    self._whole(jobs, sampling)
            self.batches += 1
        except Exception as exc:  # the server keeps serving; these requests get a 500 naming the cause
            for job in jobs:
                if not job.done:
                    job.done = True
                    job.deliver(Failed(f"generation failed: {type(exc).__name__}: {exc}"))
                    with self._cond:
                        self._release(job)
        finally:
            with self._cond:
                self._running = 0

    def _stepped(self, jobs: list[Job], sampling: Sampling) -> None:
        """Streamed requests and those with stop sequences (and every request where the fast loop does not apply):
        the generator's row hook sees each row grow and stops it at its stop sequence or when its client leaves;
        each row ends at its own max_tokens; each reply is delivered when its row ends."""
        self.generator.generate_ids([j.request.messages for j in jobs], sampling, batch_size=len(jobs),
                                    progress=False, limits=[j.request.max_tokens for j in jobs],
                                    on_rows=lambda new, ended: self._grow(jobs, new, ended))
        for job in (j for j in jobs if not j.cancelled):  # rows that ran to the batch's token limit unseen
            for choice in job.choices:
                choice.finish = choice.finish or "length"
            self._finish(job)

    def _whole(self, jobs: list[Job], sampling: Sampling) -> None:
        """Plain requests: the generator's fast decoding loop (decode.py: several times transformers' generate on a
        GPU) without the row hook (no host work per row between steps); so replies come when the batch ends, each
        row stops at its own request's max_tokens (never past its room in the context), and a client that leaves
        frees its place at once but not its row."""
        replies = self.generator.generate_ids([j.request.messages for j in jobs], sampling, batch_size=len(jobs),
                                              progress=False, limits=[j.request.max_tokens for j in jobs])
        for job, rows in zip(jobs, replies, strict=True):
            for choice, ids in zip(job.choices, rows, strict=True):
                choice.ids = ids  # generate_ids has cut each reply at its request's own limit
                choice.finish = "length" if len(ids) >= job.request.max_tokens else "stop"
                self.tokens += len(choice.ids)
            if not job.cancelled:
                self._finish(job)

    def _grow(self, jobs: list[Job], new: dict[int, list[int]], ended: set[int]) -> list[int]:
        """The row hook of one batch (see decode.RowHook): row r is choice r % rows of jobs[r // rows]. Takes each
        row's new tokens, streams and finishes what it can; returns the rows to stop (stop sequence, client gone)."""
        per_job = len(jobs[0].choices)
        stop: list[int] = []
        texty: list[tuple[int, Job, Choice]] = []
        for row, ids in new.items():
            job = jobs[row // per_job]
            choice = job.choices[row % per_job]
            if job.cancelled or choice.finish is not None:
                stop.append(row)
                continue
            choice.ids += ids
            self.tokens += len(ids)
            if row in ended:  # at its limit, or at end-of-turn before it
                choice.finish = "length" if len(choice.ids) >= job.request.max_tokens else "stop"
            if job.needs_text:
                texty.append((row, job, choice))
        if texty:
            stop += self._detokenize(texty)
        for job in jobs:
            if job.done or job.cancelled:
                continue
            if job.request.stream:
                self._stream(job)
            if all(c.finish is not None for c in job.choices):
                self._finish(job)
        return stop

    def _detokenize(self, texty: list[tuple[int, Job, Choice]]) -> list[int]:
        """Extend each row's text by its new tokens (two batched decodes for all rows); returns the rows that reached
        a stop sequence, which end there."""
        decode = self.models.tokenizer.batch_decode
        before = decode([c.ids[c.prefix : c.read] for _, _, c in texty], skip_special_tokens=True)
        after = decode([c.ids[c.prefix :] for _, _, c in texty], skip_special_tokens=True)
        stopped = []
        for (row, job, choice), old, new in zip(texty, before, after, strict=True):
            # A token that ends inside a character decodes to U+FFFD until the character's last byte comes.
            read = choice.read
            if len(new) > len(old) and not new.endswith("\ufffd"):
                choice.text += new[len(old) :]
                choice.prefix, choice.read = choice.read, len(choice.ids)
            if job.request.stop and choice.finish != "stop" and first_stop(choice.text, job.request.stop) is not None:
                self._trim(choice, job.request.stop, read)
                choice.finish = "stop"
                stopped.append(row)
        return stopped

    def _trim(self, choice: Choice, stops: tuple[str, ...], read: int) -> None:
        """Drop the tokens after the one that completed a stop sequence: several may have come in one stretch of
        steps, and the usage counts the reply's tokens up to its stop."""
        decode = self.models.tokenizer.decode
        for size in range(read + 1, len(choice.ids)):
            if first_stop(decode(choice.ids[:size], skip_special_tokens=True), stops) is not None:
                self.tokens -= len(choice.ids) - size
                del choice.ids[size:]
                return

    def _stream(self, job: Job) -> None:
        """Pass on the text that can no longer turn out to be part of a stop sequence."""
        texts = {}
        for index, choice in enumerate(job.choices):
            safe = len(choice.text) - held_back(choice.text, job.request.stop)
            if choice.finish is None and safe > choice.shown:
                texts[index] = choice.text[choice.shown : safe]
                choice.shown = safe
        if texts and len(job.choices) < job.request.n:  # greedy n > 1 runs one row: its text goes to every choice
            texts = {index: texts[0] for index in range(job.request.n)}
        if texts:
            job.deliver(Delta(texts))

    def _finish(self, job: Job) -> None:
        """Deliver the whole replies: decoded in one piece (as `infer` decodes them), cut before a stop sequence."""
        if job.done:
            return
        job.done = True
        texts, reasons = [], []
        for choice in job.choices:
            text = self.models.tokenizer.decode(choice.ids, skip_special_tokens=True)
            cut = first_stop(text, job.request.stop)
            texts.append(text if cut is None else text[:cut])
            reasons.append("stop" if cut is not None else choice.finish or "length")
        copies = job.request.n // len(job.choices)  # greedy n > 1: one row, n equal replies
        tokens = sum(len(c.ids) for c in job.choices) * copies
        job.deliver(Done(texts * copies, reasons * copies, tokens))
        with self._cond:
            self._release(job)


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop sequence starts in `text`, or None (OpenAI leaves the stop sequence out)."""
    found = [at for at in (text.find(s) for s in stops) if at != -1]
    return min(found) if found else None


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of `text` that may be the start of a stop sequence, not to be streamed yet."""
    longest = 0
    for s in stops:
        for size in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:size]):
                longest = size
                break
    return longest
