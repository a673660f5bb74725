"""The training loop, nothing else: token-weighted loss over accumulation, clipping, schedule, and a policy for
non-finite losses. It reads and writes no file: where training stands comes in and goes out as a `TrainState`, log
records go to `on_log` and save points to `on_save` (run_dir.py writes both), and `should_stop` ends it early."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import OptimArgs
from .data.packing import Batch, collate, pack_rows, plan_steps
from .data.tokenize import Encoded
from .errors import UserError, first_line

if TYPE_CHECKING:
    from .distributed import Parallel

LossFn = Callable[[Any, Batch], Any]
"""loss_fn(model, batch) -> the sum of token losses over the batch's trained tokens (a 0-dim float tensor)."""


class NonFiniteLoss(UserError):
    """The loss or the gradients went non-finite under --nan_policy stop."""


def _empty_window() -> dict:
    return {"loss": 0.0, "trained": 0, "tokens": 0}


@dataclass
class TrainState:
    """Where training stands, enough to continue bit-identically: position in the plan, the sums since the last log
    line, and the optimizer, scheduler and RNG states (None in a state that starts from scratch)."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    """Optimizer steps already taken in `epoch`."""
    window: dict = field(default_factory=_empty_window)
    """Loss, trained tokens and tokens summed since the last log line."""
    total_steps: int = 0
    steps_per_epoch: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    rng: dict | None = None
    source: str = ""
    """Where the state was read from, for messages."""


@dataclass
class TrainResult:
    global_step: int
    last_checkpoint: Path | None
    """What `on_save` returned last (the checkpoint folder), or the resumed state's source."""
    interrupted: bool
    final_loss: float | None
    final_eval_loss: float | None


def rng_state() -> dict:
    """Every RNG as tensors, lists and numbers only, so that it loads back with torch.load(weights_only=True)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _peak_gib(device) -> float:
    """Peak memory so far: the GPU's allocated tensors on CUDA, else the process's peak resident set (on a CPU the
    model, activations and optimizer all live in it, so it is the figure that decides whether a run fits)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_gib()


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (ru_maxrss counts KiB on Linux, bytes on macOS); 0.0 where the
    platform has no getrusage."""
    import sys

    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def evaluate_loss(model, examples: Sequence[Encoded], optim: OptimArgs, capacity: int, pad_id: int,
                  loss_fn: LossFn, parallel: Parallel | None = None) -> float | None:
    """Token-weighted mean loss over `examples` (shared out across ranks under `parallel`)."""
    import torch

    if not examples:
        return None
    if parallel is not None:
        return _evaluate_loss_parallel(parallel, examples, optim, capacity, pad_id)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    rows = list(range(len(examples)))
    if optim.packing:
        plan = pack_rows(rows, [len(e) for e in examples], capacity)
    else:
        plan = [rows[i : i + optim.batch_size] for i in range(0, len(rows), optim.batch_size)]
    with torch.no_grad():
        for rows in plan:
            batch = collate(examples, rows, packing=optim.packing, pad_id=pad_id)
            total += float(loss_fn(model, batch))
            count += batch.num_trained
    model.train(was_training)
    return total / max(count, 1)


def _optimizer_and_schedule(params: list, optim: OptimArgs, total_steps: int, device, state: TrainState | None,
                            parallel: Parallel | None = None):
    """AdamW and the LR schedule, seeded; with `state`, continued from it (optimizer, scheduler and RNG)."""
    import torch
    from transformers import get_scheduler

    # FSDP's parameters are DTensors, which the foreach kernels take (the fused one is not promised to).
    fused = device.type == "cuda" and (parallel is None or not parallel.fsdp)
    optimizer = torch.optim.AdamW(params, lr=optim.learning_rate, weight_decay=optim.weight_decay, fused=fused)
    scheduler = get_scheduler(optim.lr_scheduler_type, optimizer,
                              num_warmup_steps=int(optim.warmup_ratio * total_steps), num_training_steps=total_steps)
    torch.manual_seed(optim.seed)
    random.seed(optim.seed)
    if state is not None:
        try:
            if parallel is None:
                optimizer.load_state_dict(state.optimizer)
            else:
                parallel.load_optimizer_state(optimizer, state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            set_rng_state(state.rng)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise UserError(f"'{state.source}' does not fit this run (optimizer, scheduler or RNG state: "
                            f"{first_line(exc, 160)})") from None
    return optimizer, scheduler


def _take_step(model, batches: list[Batch], params: list, optimizer, optim: OptimArgs, loss_fn: LossFn, step: int,
               origins: Sequence[str] | None, window: dict):
    """Forward and backward over one step's micro-batches, loss weighted by tokens over the whole step, then clip and
    (unless non-finite under skip) update. Returns the gradient norm, None when the loss was non-finite."""
    import torch

    step_tokens = sum(b.num_trained for b in batches)
    step_loss = 0.0
    for batch in batches:
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss) and _non_finite(optim, step, batch.rows, origins, "loss"):
            return None  # nothing was measured for this step
        (loss / max(step_tokens, 1)).backward()
        step_loss += loss.item()
    return _finish_step(params, optimizer, optim, step, group_rows(batches), origins, window,
                        (step_loss, step_tokens, sum(b.num_tokens for b in batches)))


def _finish_step(params: list, optimizer, optim: OptimArgs, step: int, rows: Sequence[int],
                 origins: Sequence[str] | None, window: dict, counts: tuple[float, int, int]):
    """The end of a step whose gradients are in place, on one process or on every rank alike: clip, then (unless the
    gradient is non-finite under skip) update and add the step's (loss sum, trained tokens, tokens) to `window`.
    Returns the gradient norm (FSDP's, a DTensor, as a plain tensor; no host sync beyond the finiteness check)."""
    import torch

    from .distributed import local_value

    grad_norm = local_value(torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm))
    if bool(torch.isfinite(grad_norm)) or not _non_finite(optim, step, rows, origins, "gradient"):
        optimizer.step()
        loss_sum, trained, tokens = counts
        window["loss"] += loss_sum
        window["trained"] += trained
        window["tokens"] += tokens
    return grad_norm


def train(model, train_set: Sequence[Encoded], val_set: Sequence[Encoded], optim: OptimArgs, *, loss_fn: LossFn,
          capacity: int, pad_id: int, logging_steps: int, save_steps: int, eval_steps: int,
          state: TrainState | None = None, origins: Sequence[str] | None = None,
          on_start: Callable[[TrainState], None] | None = None, on_log: Callable[[dict], None] | None = None,
          on_save: Callable[[TrainState], Path | None] | None = None, should_stop: Callable[[], bool] | None = None,
          progress: bool = True, parallel: Parallel | None = None) -> TrainResult:
    """Train the trainable parameters of `model` on `train_set`, continuing from `state` when given.

    `on_start(state)` runs once the state has been taken up (a resumed run may then drop what came after it);
    `on_log(record)` gets each log and eval line; `on_save(state)` runs every `save_steps`, at the end and when
    `should_stop()` turns true (the loop then ends after that step). With `parallel` (distributed.Parallel), every
    rank runs this on its share of each step, with the one-process result for the same global batch."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    lengths = [len(e) for e in train_set]

    def epoch_plan(epoch: int) -> list[list[list[int]]]:
        return plan_steps(lengths, seed=optim.seed, epoch=epoch, packing=optim.packing, capacity=capacity,
                          rows_per_step=optim.batch_size * optim.gradient_accumulation_steps,
                          batch_size=optim.batch_size)

    steps_per_epoch = len(epoch_plan(0))
    total_steps = optim.max_steps if optim.max_steps > 0 else math.ceil(steps_per_epoch * optim.num_train_epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer_and_schedule(params, optim, total_steps, device, state, parallel)
    share = None if parallel is None else _StepShare(parallel, train_set, optim, capacity, pad_id)
    now = TrainState(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    if state is not None:
        now.step, now.epoch, now.position = state.step, state.epoch, state.position
        now.window.update(state.window)
        now.window["tokens"] = 0  # the clock restarts now: tokens seen before the crash would inflate tokens/s
    if on_start is not None:
        on_start(now)
    step, epoch, position, window = now.step, now.epoch, now.position, now.window
    last_checkpoint = Path(state.source) if state is not None and state.source else None
    model.train()
    plan = epoch_plan(epoch)
    window_start = time.perf_counter()
    last_loss = last_eval = grad_norm = None
    interrupted = False
    with tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress) as bar:
        while step < total_steps:  # the bar ends its line even on an error, so the error stays one clean line
            if position >= len(plan):
                epoch, position = epoch + 1, 0
                plan = epoch_plan(epoch)
            grad_norm = _step(share, model, train_set, plan[position], params, optimizer, optim, loss_fn, pad_id,
                              step + 1, origins, window)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            position += 1
            at = {"step": step, "epoch": round(epoch + position / steps_per_epoch, 4)}
            if step % logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                last_loss = window["loss"] / window["trained"] if window["trained"] else float("nan")
                record = {**at, "loss": last_loss, "grad_norm": None if grad_norm is None else float(grad_norm),
                          "learning_rate": scheduler.get_last_lr()[0], "tokens_per_s": window["tokens"] / elapsed,
                          "memory_gib": round(_peak_gib(device), 3)}
                if on_log is not None:
                    on_log(record)
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                window = _empty_window()
                window_start = time.perf_counter()
            if step % eval_steps == 0 or step == total_steps:
                last_eval = evaluate_loss(model, val_set, optim, capacity, pad_id, loss_fn, parallel)
                if last_eval is not None and on_log is not None:
                    on_log({**at, "eval_loss": last_eval})
                model.train()
            bar.update(1)
            interrupted = _stop_now(should_stop, share)
            if on_save is not None and (step % save_steps == 0 or step == total_steps or interrupted):
                _check_weights(params, step)
                saved = optimizer.state_dict() if parallel is None else parallel.optimizer_state(optimizer)
                last_checkpoint = on_save(TrainState(step, epoch, position, window, total_steps, steps_per_epoch,
                                                     saved, scheduler.state_dict(), rng_state()))
            if interrupted:
                break
    return TrainResult(step, last_checkpoint, interrupted, last_loss, last_eval)


def _step(share: _StepShare | None, model, train_set: Sequence[Encoded], step_plan: list[list[int]], params: list,
          optimizer, optim: OptimArgs, loss_fn: LossFn, pad_id: int, step: int, origins: Sequence[str] | None,
          window: dict):
    """One optimizer step: all of it here, or this rank's share of it."""
    if share is not None:
        return share.take_step(step_plan, params, optimizer, step, origins, window)
    batches = [collate(train_set, rows, packing=optim.packing, pad_id=pad_id) for rows in step_plan]
    return _take_step(model, batches, params, optimizer, optim, loss_fn, step, origins, window)


def _stop_now(should_stop: Callable[[], bool] | None, share: _StepShare | None) -> bool:
    """should_stop(), agreed by every rank under `share` (a rank that stopped alone would leave the others waiting)."""
    stop = should_stop is not None and should_stop()
    return share.any(stop) if share is not None and should_stop is not None else stop


class _StepShare:
    """One rank's part of each step under `parallel` (see distributed.py for why this reproduces one process)."""

    def __init__(self, parallel: Parallel, train_set: Sequence[Encoded], optim: OptimArgs, capacity: int,
                 pad_id: int) -> None:
        from .data.packing import shifted_labels
        from .data.tokenize import IGNORE_INDEX

        self.parallel, self.train_set, self.optim, self.capacity, self.pad_id = (parallel, train_set, optim,
                                                                                 capacity, pad_id)
        self.lengths = [len(e) for e in train_set]
        # Every rank knows every row's trained tokens, so the step's total needs no collective before the backward.
        self.trained = [sum(t != IGNORE_INDEX for t in shifted_labels(e)) for e in train_set]

    def any(self, flag: bool) -> bool:
        from .distributed import all_reduce_sum

        return all_reduce_sum([float(flag)], self.parallel.device)[0] > 0

    def take_step(self, step_plan: list[list[int]], params: list, optimizer, step: int,
                  origins: Sequence[str] | None, window: dict):
        """_take_step on several ranks: the gradient of sum(loss) / step tokens, summed over ranks; the loss sum and a
        non-finite flag are summed over ranks too, so that every rank takes the same decision."""
        from .distributed import all_reduce_sum, share_of_step

        parallel, optim = self.parallel, self.optim
        rows = [r for micro in step_plan for r in micro]
        step_tokens = sum(self.trained[r] for r in rows)
        mine = share_of_step(step_plan, self.lengths, parallel.dist, packing=optim.packing, capacity=self.capacity,
                             batch_size=optim.batch_size)
        scale = parallel.world / max(step_tokens, 1)  # DDP and FSDP average over ranks; this makes it a sum
        loss_sum, bad = 0.0, 0.0
        for i, (micro, weight) in enumerate(mine):
            batch = collate(self.train_set, micro, packing=optim.packing, pad_id=self.pad_id)
            with parallel.accumulating(last=i == len(mine) - 1):
                loss = parallel.loss(batch)
                (loss * (scale * weight)).backward()
            value = loss.item() * weight
            if math.isfinite(value):
                loss_sum += value
            else:
                bad += 1.0
        total_loss, total_bad = all_reduce_sum([loss_sum, bad], parallel.device)
        if total_bad and _non_finite(optim, step, rows, origins, "loss"):
            return None
        return _finish_step(params, optimizer, optim, step, rows, origins, window,
                            (total_loss, step_tokens, sum(self.lengths[r] for r in rows)))


def _evaluate_loss_parallel(parallel: Parallel, examples: Sequence[Encoded], optim: OptimArgs, capacity: int,
                            pad_id: int) -> float:
    """evaluate_loss's micro-batches shared round-robin across ranks, padded to equal counts (FSDP gathers weights in
    every forward, so each rank must run as many)."""
    import torch

    from .distributed import all_reduce_sum

    rows = list(range(len(examples)))
    if optim.packing:
        plan = pack_rows(rows, [len(e) for e in examples], capacity)
    else:
        plan = [rows[i : i + optim.batch_size] for i in range(0, len(rows), optim.batch_size)]
    d = parallel.dist
    mine = [(m, 1.0) for m in plan[d.rank :: d.world]]
    mine += [([0], 0.0)] * (math.ceil(len(plan) / d.world) - len(mine))
    total, count = 0.0, 0.0
    parallel.wrapped.eval()
    with torch.no_grad():
        for micro, weight in mine:
            batch = collate(examples, micro, packing=optim.packing, pad_id=pad_id)
            total += float(parallel.loss(batch)) * weight
            count += batch.num_trained * weight
    parallel.wrapped.train()
    parallel.reshard()
    total, count = all_reduce_sum([total, count], parallel.device)
    return total / max(count, 1)


def _check_weights(params: list, step: int) -> None:
    # Non-finite losses and gradients never reach the optimizer; this makes a NaN in a checkpoint impossible anyway.
    import torch

    # A sharded (FSDP) parameter is checked by its own shard: every rank checks its part.
    if not all(bool(torch.isfinite(getattr(p, "_local_tensor", p)).all()) for p in params):
        raise NonFiniteLoss(f"non-finite weights at step {step}; no checkpoint written (earlier ones are intact)")


DEFAULT_PACKING_LENGTH = 8192
# Off CUDA, a packed micro-batch holds at most this many tokens (or one row of --max_length): activations grow with
# the tokens of a forward, and a CPU gains nothing from longer ones. The embedded model with the default recipe's LoRA
# on a 2-core, 24 GiB CPU (benchmarks/cpu_packed_attention.py --lora --per_row_only): 4,080 tokens 34.2 s and 12.9 GiB
# peak, 2,048 tokens 15.7 s and 7.1 GiB, 1,024 tokens 8.0 s and 4.0 GiB; a 19,200-token pack was killed for memory
# (the recipe's 128-row packs hold about 30,000). A step holds the same rows whatever the packing.
CPU_PACKING_LENGTH = 2048


def packing_capacity(optim: OptimArgs, max_length: int, device=None) -> int:
    """Tokens per packed micro-batch: --packing_length, else max(batch_size * max_length, 8192); on a device other
    than CUDA (None counts as CUDA) at most max(max_length, CPU_PACKING_LENGTH).

    With SWIFT's batch 1 x accumulation 16, batch_size * max_length alone would split each step's 16 rows into about
    five 1024-token forwards; on an H200 that ran at 2,228 tokens/s against 17,299 with 8k-token micro-batches at
    the same 16 rows per step (docs/benchmarks.md; without checkpointing in the second). The cap changes only how a
    step's rows are laid into forwards: the loss of a step is its summed token loss over its trained tokens either way.
    """
    capacity = optim.packing_length or max(optim.batch_size * max_length, DEFAULT_PACKING_LENGTH)
    if device is not None and not str(device).startswith("cuda"):
        capacity = min(capacity, max(max_length, CPU_PACKING_LENGTH))
    return capacity


def group_rows(batches) -> tuple[int, ...]:
    return tuple(r for b in batches for r in b.rows)


def _non_finite(optim: OptimArgs, step: int, rows: Sequence[int], origins: Sequence[str] | None, what: str) -> bool:
    """Under `stop`, raise naming the step and rows; under `skip`, report and return True (skip this step)."""
    named = [origins[r] for r in rows][:5] if origins else [f"row {r}" for r in rows][:5]
    message = f"non-finite {what} at step {step}; rows: {', '.join(named)}"
    if optim.nan_policy == "stop":
        raise NonFiniteLoss(message + " (nothing of this step was saved; use --nan_policy skip to skip such steps)")
    print(f"warning: {message}; step skipped", flush=True)
    return True


def optimizer_and_schedule(params: list, optim: OptimArgs, total_steps: int, device,
                           state: TrainState | None = None):
    """(AdamW, LR scheduler) as sft's training makes them, seeded; with `state`, continued from it (optimizer,
    scheduler and RNG). For loops of their own (GRPO) that must resume exactly as sft does."""
    return _optimizer_and_schedule(params, optim, total_steps, device, state)


def handle_non_finite(optim: OptimArgs, step: int, rows: Sequence[int], origins: Sequence[str] | None,
                      what: str) -> bool:
    """--nan_policy for a non-finite `what` ("loss", "gradient") at `step`: under stop, raise NonFiniteLoss naming
    the step and rows; under skip, warn and return True (the caller skips the step)."""
    return _non_finite(optim, step, rows, origins, what)
