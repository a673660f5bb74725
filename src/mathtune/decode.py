"""Fast sampling: a plain decoding loop over a preallocated KV cache, for many rows at once.

transformers' `generate` spends most of a small model's decoding step launching kernels from Python (measured on an
H200 with the 135M model: 1,000 tok/s with its dynamic cache, 8,900 with a static cache at batch 32, where the card's
memory bandwidth allows over a million). This loop does less per step and lets the GPU replay it:

- prompts are left-padded to one width and prefilled once; a prompt's `n` samples copy its KV rows n times;
- every decoding step writes one cache slot, the same for all rows, through a cache object of our own handed to the
  model's forward (with a 4D mask, so transformers builds no mask of its own), so any causal LM that takes a cache
  and a 4D mask works, LoRA (peft) included;
- sampling (temperature, top_p, greedy) stays on the device; rows end at their end-of-turn token;
- finished rows leave the batch: the live rows are gathered to the front at power-of-two sizes, so there are few shapes;
- on CUDA each (rows, slots attended) shape is captured once as a CUDA graph (one memory pool for all) and replayed;
  the buffers and graphs are kept between calls (a GRPO run samples the same shapes every step). A graph that cannot
  be captured makes the decoder run eagerly from then on, said in one line;
- each step's attention reads every key/value head once, however many query heads share it (decode_attention);
- a `RowHook` hears each row's new tokens at every host sync and may stop rows (a server streams replies through it
  and ends them at stop sequences or when their client leaves); it runs on the host between steps, graphs untouched.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .decode_attention import switched_to
from .model import unwrap

# Generation-config settings that transformers' generate would apply and this loop does not: where a model sets one,
# Generator keeps the old path so that replies do not change with the path.
UNSUPPORTED_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                          "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
                          "forced_eos_token_id": None, "sequence_bias": None, "min_p": None, "typical_p": 1.0,
                          "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0}
# Implementations that take a ready 4D mask: bool for sdpa and for sft's fast path (mathtune_varlen hands any masked
# call to sdpa, so a model fresh from training decodes here too), additive for eager.
ATTENTION = ("sdpa", "eager", "mathtune_varlen")
PREFILL_TOKENS = 16384  # prompt tokens per prefill forward: bounds its activations (the 6B shape: ~1.5 GiB)
# A captured step attends over the cache slots up to the next multiple of this: the KV read per step follows the
# replies' length (a 135M model's KV cache outweighs its weights from ~40 rows of 300 tokens) for a few more graphs.
GRAPH_SLOTS = 128

# Called at each host sync (every `check_every` steps, and once at the end) with, for every row still open, its new
# token ids since the last call (end-of-turn and padding left out), and the set of those rows that have now ended
# (end-of-turn or their limit); returns the rows to stop now, which then count as ended (their replies are cut
# there). Rows are named by their index in the result (prompt k's samples at k*n .. k*n+n-1), however the batch
# is reordered; a row is reported up to the call that says it ended, or until the hook stops it.
RowHook = Callable[[dict[int, list[int]], set[int]], Iterable[int]]


def unsupported(model: Any) -> str | None:
    """Why this loop cannot decode for `model` (None when it can)."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    if config is None or not isinstance(model, torch.nn.Module):
        return "not a transformers model"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ATTENTION:
        return f"attention '{attention}' does not take a ready 4D mask"
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    window = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    if layer_types != {"full_attention"} or window:
        return "sliding-window or non-attention layers (the loop's mask is plain causal)"
    params = inspect.signature(type(base).forward).parameters
    if "cache" not in params and "past_key_values" not in params:
        return "its forward takes no KV cache"
    generation = getattr(base, "generation_config", None)
    for name, default in UNSUPPORTED_GENERATION.items():
        value = getattr(generation, name, default)
        if value is not None and value != default:
            return f"its generation config sets {name}={value!r}"
    return None


@functools.cache
def _cache_class() -> type:
    from transformers.cache_utils import Cache

    class SlotCache(Cache):
        """Per-layer key/value tensors [rows, heads, length, head_dim]; `update` writes the new states at the slots
        in `slot` (a device tensor, changed in place between steps so that a captured graph sees the new value) and
        returns the whole tensors. With `slot` None it only keeps what it is given (the prefill)."""

        def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], slot: torch.Tensor | None) -> None:
            super().__init__(layers=[])
            self.keys, self.values, self.slot = keys, values, slot

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if self.slot is None:
                self.keys.append(key_states)
                self.values.append(value_states)
                return key_states, value_states
            keys, values = self.keys[layer_idx], self.values[layer_idx]
            keys.index_copy_(2, self.slot, key_states.to(keys.dtype))
            values.index_copy_(2, self.slot, value_states.to(values.dtype))
            return keys, values

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return 0  # positions are always passed; nothing reads this

        def __len__(self) -> int:
            return len(self.keys)

    return SlotCache


def bucket(rows: int, limit: int) -> int:
    """The batch size that `rows` live rows run at: the next power of two, at most `limit`."""
    return min(limit, 1 << max(0, rows - 1).bit_length())


def choose(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Next token per row: argmax when temperature is 0, else a draw from softmax(logits / temperature) cut to the
    smallest set of tokens holding top_p of the mass. Drawn as argmax(p / E), E ~ Exp(1): one kernel per row, no
    host sync, and the same draw as a categorical sample."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_p < 1:
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the better tokens: the one that crosses top_p is kept
        ordered = ordered.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = logits.softmax(-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


@dataclass
class _Buffers:
    """Everything a decoding step reads or writes, preallocated for `rows` rows and `length` cache slots; a batch of
    b rows uses the first b of each (views), so that gathering live rows to the front keeps every address."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor  # [rows, 1, 1, length]: bool (sdpa) or additive (eager)
    ids: torch.Tensor  # [rows, 1] the last token of each row
    positions: torch.Tensor  # [rows, 1]
    slot: torch.Tensor  # [1] the cache slot the step writes
    rows: int
    length: int


class Decoder:
    """Samples replies of `model` to tokenized prompts; see the module docstring. One per model (Generator keeps it)."""

    def __init__(self, model: Any, eos: Sequence[int], pad_id: int, graphs: bool | None = None,
                 grouped_attention: bool = True) -> None:
        self.model, self.eos_list, self.pad_id = model, sorted(set(eos)), pad_id
        # Steps attend through decode_attention (each key/value head read once); False: the model's own attention.
        self.grouped_attention = grouped_attention
        base = unwrap(model)
        params = inspect.signature(type(base).forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed within transformers 5
        self.keep_last = "logits_to_keep" in params
        self.device = next(model.parameters()).device
        self.graphs_on = self.device.type == "cuda" if graphs is None else graphs
        # Steps between host syncs (live rows, progress): each sync stalls the queue of launched steps on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else 8
        self.buffers: _Buffers | None = None
        self.graphs: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        self.pool: Any = None  # the graphs' one memory pool: each output is read right after its own replay
        self.fingerprint: tuple | None = None
        self.additive = getattr(base.config, "_attn_implementation", "sdpa") == "eager"

    def generate(self, prompts: Sequence[Sequence[int]], n: int, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, min_new_tokens: int = 0,
                 on_step: Callable[[int], None] | None = None,
                 limits: Sequence[int] | None = None, on_rows: RowHook | None = None) -> list[list[int]]:
        """`n` replies per prompt (prompt k's at rows k*n .. k*n+n-1), each cut before its end-of-turn token.
        `on_step(count)` hears, per decoding step, how many rows made a token that is not end-of-turn.
        `min_new_tokens`: end-of-turn is not drawn before (benchmarks force lengths with it).
        `limits`: each prompt's own most new tokens (at most `max_new_tokens`): a row past its limit stops there,
        its position no longer advancing, so a long prompt with little room never steps past the model's context
        (learned position embeddings would index out of range) however far its neighbours go.
        `on_rows`: see `RowHook`; the rows it stops are cut where it stopped them.

        A KeyboardInterrupt (Ctrl-C) may land anywhere in here: nothing kept between calls depends on a call having
        finished (the next one prefills its own rows and overwrites every slot it reads)."""
        if limits is not None and (len(limits) != len(prompts) or not all(0 < m <= max_new_tokens for m in limits)):
            raise ValueError(f"limits must give each of the {len(prompts)} prompts 1..{max_new_tokens} tokens")
        with torch.inference_mode():
            return self._generate(prompts, n, max_new_tokens, temperature, top_p, min_new_tokens, on_step, limits,
                                  on_rows)

    def release(self) -> None:
        """Give back the KV buffers and the CUDA graphs with their memory pool; the next call allocates and captures
        anew (as the first did)."""
        self.buffers, self.graphs, self.pool = None, {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        """What the decoder holds between calls: KV buffer rows and slots, their GiB, and its CUDA graphs (None when
        it decodes eagerly: on a CPU, or after a capture failed)."""
        buf = self.buffers
        held = sum(t.numel() * t.element_size() for t in (*buf.keys, *buf.values)) if buf is not None else 0
        return {"rows": buf.rows if buf is not None else 0, "slots": buf.length if buf is not None else 0,
                "kv_gib": held / 2**30, "cuda_graphs": len(self.graphs) if self.graphs_on else None}

    def _generate(self, prompts, n, max_new_tokens, temperature, top_p, min_new_tokens, on_step,
                  limits=None, on_rows=None) -> list[list[int]]:
        rows, width = len(prompts) * n, max(len(p) for p in prompts)
        eos = torch.tensor(self.eos_list, device=self.device)
        limit = None if limits is None else torch.tensor(list(limits), device=self.device).repeat_interleave(n)
        cut = [max_new_tokens] * rows if limits is None else [m for m in limits for _ in range(n)]
        tracker = RowTracker(cut, self.eos_list) if on_rows is not None else None
        first = self._prefill(prompts, n, width, max_new_tokens)
        buf = self.buffers
        assert buf is not None
        # Output rows: one per reply plus a last one that filler rows (past the live ones in a bucket) write to.
        out = torch.full((rows + 1, max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        row_ids = torch.arange(rows, device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        counts = torch.zeros(max_new_tokens, dtype=torch.long, device=self.device)
        every = self.check_every
        b, heard, logits = rows, 0, first
        for k in range(max_new_tokens):
            if k > 0:
                logits = self._step(b, width + k - 1, done)
            if k < min_new_tokens:
                logits = logits.index_fill(-1, eos, float("-inf"))
            token = choose(logits, temperature, top_p)
            ended = torch.isin(token, eos)
            counts[k] = (~done[:b] & ~ended).sum()
            token = token.masked_fill(done[:b], self.pad_id)
            out[row_ids[:b], k] = token
            done[:b] |= ended
            if limit is not None:
                done[:b] |= limit[:b] <= k + 1
            buf.ids[:b, 0] = token
            if k + 1 == max_new_tokens or (k + 1) % every:
                continue
            if on_step is not None:
                for count in counts[heard : k + 1].tolist():
                    on_step(count)
            if tracker is not None:
                stopped = tracker.report(on_rows, out[:, heard : k + 1], last=False)
                if stopped:
                    done[:b] |= torch.isin(row_ids[:b], torch.tensor(stopped, device=self.device))
            heard = k + 1
            live = int((~done[:b]).sum())
            if live == 0:
                break
            if bucket(live, b) < b:
                b = self._compact(b, live, done, row_ids, rows, limit)
        if on_step is not None:
            for count in counts[heard : k + 1].tolist():
                on_step(count)
        if tracker is not None:
            tracker.report(on_rows, out[:, heard : k + 1], last=True)
            cut = tracker.limits
        eos_set = set(self.eos_list)
        return [_until(ids[:m], eos_set) for ids, m in zip(out[:rows].tolist(), cut, strict=True)]

    def _prefill(self, prompts, n: int, width: int, max_new_tokens: int) -> torch.Tensor:
        """Prefill every prompt once (chunks of PREFILL_TOKENS), copy each prompt's KV to its n rows of the cache,
        set up the step buffers; returns the logits of each row's first reply token [rows, vocab]."""
        rows, chunk = len(prompts) * n, max(1, PREFILL_TOKENS // width)
        firsts = []
        for start in range(0, len(prompts), chunk):
            part = prompts[start : start + chunk]
            ids = torch.full((len(part), width), self.pad_id, dtype=torch.long)
            valid = torch.zeros((len(part), width), dtype=torch.bool)
            for r, p in enumerate(part):
                ids[r, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
                valid[r, width - len(p) :] = True
            ids, valid = ids.to(self.device), valid.to(self.device)
            causal = torch.ones((width, width), dtype=torch.bool, device=self.device).tril()
            # A padding query attends to itself too: a query with no key at all gives NaN, which the next layer's
            # keys and values at that slot would carry into every later step (0 x NaN is NaN).
            mask = (causal & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=self.device)
            positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
            cache = _cache_class()([], [], None)
            logits = self._forward(ids, self._mask(mask[:, None]), positions, cache, keep_last=True)
            if start == 0:
                self._ensure_buffers(cache, rows, width + max_new_tokens)
            buf = self.buffers
            assert buf is not None
            lo, hi = start * n, (start + len(part)) * n
            for layer, (key, value) in enumerate(zip(cache.keys, cache.values, strict=True)):
                buf.keys[layer][lo:hi, :, :width] = key.repeat_interleave(n, 0)
                buf.values[layer][lo:hi, :, :width] = value.repeat_interleave(n, 0)
            buf.mask[lo:hi] = self._mask(valid.repeat_interleave(n, 0)[:, None, None, :], width=buf.length)
            buf.positions[lo:hi, 0] = valid.sum(-1).repeat_interleave(n, 0) - 1
            firsts.append(logits.repeat_interleave(n, 0))
        return torch.cat(firsts)

    def _mask(self, allowed: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """`allowed` [.., keys] as the attention implementation takes it, padded with disallowed keys to `width`."""
        if width is not None and width > allowed.shape[-1]:
            allowed = torch.nn.functional.pad(allowed, (0, width - allowed.shape[-1]), value=False)
        if not self.additive:
            return allowed
        dtype = next(self.model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)

    def _forward(self, ids, mask, positions, cache, keep_last: bool = False) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if keep_last and self.keep_last else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.cache_arg: cache}, **extra)
        return out.logits[:, -1]

    def _ensure_buffers(self, prefill_cache, rows: int, length: int) -> None:
        """Reuse the kept buffers when this call fits them (CUDA only: on the CPU a call's numbers must not depend on
        earlier calls, which a longer cache could change through summation order); else allocate anew."""
        fingerprint = _fingerprint(self.model)
        if fingerprint != self.fingerprint:
            self.graphs, self.pool = {}, None  # another adapter state or other weights: graphs would run the old
            self.fingerprint = fingerprint
        if self.graphs_on:
            length = -(-length // 64) * 64  # similar calls share one cache length, hence one set of graphs
        buf = self.buffers
        if buf is not None and self.graphs_on and buf.rows >= rows and buf.length >= length:
            return  # a longer cache costs a little bandwidth; reallocating costs new graphs
        if self.graphs_on and buf is not None:  # grow to fit every call so far
            rows, length = max(rows, buf.rows), max(length, buf.length)
        self.buffers, self.graphs, self.pool, buf = None, {}, None, None
        if self.graphs_on:
            torch.cuda.empty_cache()  # the old buffers and graph pools go before the new ones come
        keys = [torch.zeros((rows, k.shape[1], length, k.shape[3]), dtype=k.dtype, device=k.device)
                for k in prefill_cache.keys]
        values = [torch.zeros((rows, v.shape[1], length, v.shape[3]), dtype=v.dtype, device=v.device)
                  for v in prefill_cache.values]
        mask = self._mask(torch.zeros((rows, 1, 1, length), dtype=torch.bool, device=self.device))
        zeros = torch.zeros((rows, 1), dtype=torch.long, device=self.device)
        self.buffers = _Buffers(keys, values, mask, zeros, zeros.clone(), torch.zeros(1, dtype=torch.long,
                                                                                     device=self.device), rows, length)

    def _step(self, b: int, slot: int, done: torch.Tensor) -> torch.Tensor:
        """One decoding step of the first `b` rows, writing cache slot `slot`: logits [b, vocab]. A finished row
        keeps its position (its output is discarded): it never steps past its own room in the context."""
        buf = self.buffers
        assert buf is not None
        buf.slot.fill_(slot)
        buf.positions[:b] += (~done[:b]).unsqueeze(1)
        buf.mask[:b, :, :, slot] = 0.0 if self.additive else True
        if not self.graphs_on:
            return self._run(b, slot + 1)
        used = min(buf.length, -(-(slot + 1) // GRAPH_SLOTS) * GRAPH_SLOTS)
        key = (b, used)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(b, used)
            except Exception as exc:  # noqa: BLE001 - any failure: decode eagerly, still correct
                print(f"mathtune.decode: CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:200]}); "
                      "decoding without graphs", file=sys.stderr, flush=True)
                self.graphs_on, self.graphs, self.pool = False, {}, None
                torch.cuda.synchronize()
                return self._run(b, slot + 1)
        graph, logits = self.graphs[key]
        graph.replay()
        return logits

    def _run(self, b: int, used: int | None = None) -> torch.Tensor:
        """The step's forward over the first `b` rows and the first `used` cache slots (None: all of them, one shape
        for a graph; eagerly, attention need not read the slots not written yet)."""
        buf = self.buffers
        assert buf is not None
        used = used or buf.length
        cache = _cache_class()([k[:b, :, :used] for k in buf.keys], [v[:b, :, :used] for v in buf.values], buf.slot)
        step = switched_to(unwrap(self.model)) if self.grouped_attention else contextlib.nullcontext()
        with step:
            return self._forward(buf.ids[:b], buf.mask[:b, :, :, :used], buf.positions[:b], cache)

    def _capture(self, b: int, used: int) -> tuple[Any, torch.Tensor]:
        """A CUDA graph of `_run(b, used)`. The warm-up runs write the same keys and values at the same slot as the
        replay will (same inputs), so running them changes nothing."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(b, used)
        torch.cuda.current_stream().wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._run(b, used)
        return graph, logits

    def _compact(self, b: int, live: int, done: torch.Tensor, row_ids: torch.Tensor, rows: int,
                 limit: torch.Tensor | None = None) -> int:
        """Gather the live rows of the first `b` to the front; returns the new batch size (a power of two). Rows
        past the live ones keep stale (finite) states, count as done and write to the spare output row."""
        buf = self.buffers
        assert buf is not None
        keep = (~done[:b]).nonzero().squeeze(1)
        extra = (limit,) if limit is not None else ()
        for tensor in (*buf.keys, *buf.values, buf.mask, buf.ids, buf.positions, row_ids, done, *extra):
            tensor[:live] = tensor[keep]
        new = bucket(live, b)
        done[live:new] = True
        row_ids[live:new] = rows
        return new


class RowTracker:
    """What a `RowHook` hears, from the raw tokens each row wrote in a stretch of steps: the host-side view of which
    rows are open, how many tokens each has, and where each must be cut (its limit, or where the hook stopped it)."""

    def __init__(self, limits: Sequence[int], eos: Iterable[int]) -> None:
        self.limits, self.eos = list(limits), set(eos)
        self.sizes = [0] * len(self.limits)
        self.open = dict.fromkeys(range(len(self.limits)))  # ordered: rows are reported in result order

    def take(self, raw: dict[int, list[int]], last: bool) -> tuple[dict[int, list[int]], set[int]]:
        """The new tokens of each open row in `raw` (each cut at end-of-turn and at its limit) and the rows that
        ended; with `last`, every open row ends (the call is over)."""
        new: dict[int, list[int]] = {}
        ended: set[int] = set()
        for row, tokens in raw.items():
            if row not in self.open:
                continue
            ids = tokens[: self.limits[row] - self.sizes[row]]
            end = next((k for k, t in enumerate(ids) if t in self.eos), None)
            if end is not None:
                ids = ids[:end]
            self.sizes[row] += len(ids)
            new[row] = ids
            if last or end is not None or self.sizes[row] >= self.limits[row]:
                ended.add(row)
        for row in ended:
            del self.open[row]
        return new, ended

    def stop(self, rows: Iterable[int]) -> list[int]:
        """Close the open rows among `rows` where they are now; returns them."""
        stopped = [row for row in dict.fromkeys(rows) if row in self.open]
        for row in stopped:
            del self.open[row]
            self.limits[row] = self.sizes[row]
        return stopped

    def report(self, hook: RowHook, written: torch.Tensor, last: bool) -> list[int]:
        """Pass the open rows' tokens in `written` [rows (+ spare), steps] to `hook`; returns the rows it stopped."""
        if not self.open or written.shape[1] == 0 and not last:
            return []
        rows = list(self.open)
        raw = written[torch.tensor(rows, device=written.device)].tolist() if written.shape[1] else [[]] * len(rows)
        new, ended = self.take(dict(zip(rows, raw, strict=True)), last)
        return self.stop(hook(new, ended) or ())


def _until(ids: list[int], eos: set[int]) -> list[int]:
    for k, token in enumerate(ids):
        if token in eos:
            return ids[:k]
    return ids


def _fingerprint(model: Any) -> tuple:
    """What a captured graph depends on beyond its buffers: the weights' addresses, train/eval mode and which LoRA
    adapters are on (peft's disable_adapter switches them off in place)."""
    adapters = tuple((bool(getattr(m, "disable_adapters", False)), tuple(getattr(m, "active_adapters", ())))
                     for m in model.modules() if hasattr(m, "lora_A"))
    return (model.training, adapters, tuple(p.data_ptr() for p in model.parameters()))
