"""The training loop, nothing else: token-weighted loss over accumulation, clipping, schedule, logging, checkpoints,
resume at the exact position inside the epoch, Ctrl-C that saves, and a policy for non-finite losses."""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import STATE_FILE, RunLog, discard_checkpoints_after, save_checkpoint
from .config import TrainArgs
from .data.packing import collate, pack_rows, plan_steps
from .data.tokenize import Encoded
from .errors import UserError, first_line
from .losses import loss_sum


class NonFiniteLoss(UserError):
    """The loss or the gradients went non-finite under --nan_policy stop."""


@dataclass
class TrainResult:
    global_step: int
    last_checkpoint: Path | None
    interrupted: bool
    final_loss: float | None
    final_eval_loss: float | None


class _Interrupt:
    """First Ctrl-C asks the loop to save and stop at the next step; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once).", flush=True)

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _rng_state() -> dict:
    """Every RNG as tensors, lists and numbers only, so that it loads back with torch.load(weights_only=True)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
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
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return 0.0


def evaluate_loss(model, examples: Sequence[Encoded], args: TrainArgs, max_length: int, pad_id: int, device,
                  fused_linear_ce=None) -> float | None:
    """Token-weighted mean loss over `examples`."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    rows = list(range(len(examples)))
    if args.packing:
        plan = pack_rows(rows, [len(e) for e in examples], packing_capacity(args, max_length))
    else:
        plan = [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    with torch.no_grad():
        for rows in plan:
            batch = collate(examples, rows, packing=args.packing, pad_id=pad_id)
            total += float(loss_sum(model, batch, device, fused_linear_ce))
            count += batch.num_trained
    model.train(was_training)
    return total / max(count, 1)


def train(model, tokenizer, train_set: Sequence[Encoded], val_set: Sequence[Encoded], args: TrainArgs, *,
          max_length: int, run_dir: Path, origins: Sequence[str] | None = None, resume: Path | None = None,
          save_extra: Callable[[Path], None] | None = None, fused_linear_ce=None, progress: bool = True) -> TrainResult:
    """Train the trainable parameters of `model` on `train_set`, writing logs and checkpoints into `run_dir`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    lengths = [len(e) for e in train_set]
    capacity = packing_capacity(args, max_length)

    def epoch_plan(epoch: int) -> list[list[list[int]]]:
        return plan_steps(lengths, seed=args.seed, epoch=epoch, packing=args.packing, capacity=capacity,
                          rows_per_step=args.batch_size * args.gradient_accumulation_steps, batch_size=args.batch_size)

    steps_per_epoch = len(epoch_plan(0))
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(steps_per_epoch * args.num_train_epochs)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    step, epoch, position = 0, 0, 0
    window = {"loss": 0.0, "trained": 0, "tokens": 0}  # sums since the last log line
    if resume is not None:
        state = _load_state(resume, optimizer, scheduler)
        step, epoch, position = state["global_step"], state["epoch"], state["position"]
        window.update(state.get("window", {}))
        window["tokens"] = 0  # the clock restarts now: tokens seen before the crash would inflate tokens/s
        for dropped in discard_checkpoints_after(run_dir, step):
            print(f"removed {dropped.name}: newer than the resumed {resume.name}, so no longer part of this run")
    log = RunLog(run_dir / "logging.jsonl", resume_step=step if resume is not None else None)

    def write_checkpoint(folder: Path) -> None:
        # Non-finite losses and gradients never reach the optimizer; this makes a NaN in a checkpoint impossible anyway.
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise NonFiniteLoss(f"non-finite weights at step {step}; no checkpoint written (earlier ones are intact)")
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        _save_torch(optimizer.state_dict(), folder / "optimizer.pt")
        _save_torch(scheduler.state_dict(), folder / "scheduler.pt")
        _save_torch(_rng_state(), folder / "rng_state.pt")
        if save_extra is not None:
            save_extra(folder)
        import json

        (folder / STATE_FILE).write_text(json.dumps(
            {"global_step": step, "epoch": epoch, "position": position, "total_steps": total_steps,
             "steps_per_epoch": steps_per_epoch, "window": window}, indent=2))

    last_checkpoint = resume
    model.train()
    plan = epoch_plan(epoch)
    window_start = time.perf_counter()
    last_loss = last_eval = grad_norm = None
    interrupted = False
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress)
    with _Interrupt() as stop, bar:  # the bar ends its line even on an error, so the error stays one clean line
        while step < total_steps:
            if position >= len(plan):
                epoch, position = epoch + 1, 0
                plan = epoch_plan(epoch)
            batches = [collate(train_set, rows, packing=args.packing, pad_id=pad_id) for rows in plan[position]]
            step_tokens = sum(b.num_trained for b in batches)
            step_loss = 0.0
            for batch in batches:
                loss = loss_sum(model, batch, device, fused_linear_ce)
                if not torch.isfinite(loss):
                    if _non_finite(args, step + 1, batch.rows, origins, "loss"):
                        grad_norm = None  # nothing was measured for this step
                        break
                (loss / max(step_tokens, 1)).backward()
                step_loss += loss.item()
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                finite = bool(torch.isfinite(grad_norm))
                if finite or not _non_finite(args, step + 1, group_rows(batches), origins, "gradient"):
                    optimizer.step()
                    window["loss"] += step_loss
                    window["trained"] += step_tokens
                    window["tokens"] += sum(b.num_tokens for b in batches)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            position += 1
            if step % args.logging_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                last_loss = window["loss"] / window["trained"] if window["trained"] else float("nan")
                record = {"step": step, "epoch": round(epoch + position / steps_per_epoch, 4), "loss": last_loss,
                          "grad_norm": None if grad_norm is None else float(grad_norm),
                          "learning_rate": scheduler.get_last_lr()[0], "tokens_per_s": window["tokens"] / elapsed,
                          "memory_gib": round(_peak_gib(device), 3)}
                log.write(record)
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                window = {"loss": 0.0, "trained": 0, "tokens": 0}
                window_start = time.perf_counter()
            if step % args.eval_steps == 0 or step == total_steps:
                last_eval = evaluate_loss(model, val_set, args, max_length, pad_id, device, fused_linear_ce)
                if last_eval is not None:
                    log.write({"step": step, "epoch": round(epoch + position / steps_per_epoch, 4),
                               "eval_loss": last_eval})
                model.train()
            bar.update(1)
            if step % args.save_steps == 0 or step == total_steps or stop.requested:
                last_checkpoint = save_checkpoint(run_dir, step, write_checkpoint, args.save_total_limit)
            if stop.requested:
                interrupted = True
                break
    return TrainResult(step, last_checkpoint, interrupted, last_loss, last_eval)


DEFAULT_PACKING_LENGTH = 8192


def packing_capacity(args: TrainArgs, max_length: int) -> int:
    """Tokens per packed micro-batch: --packing_length, else max(batch_size * max_length, 8192).

    With SWIFT's batch 1 x accumulation 16, batch_size * max_length alone would split each step's 16 rows into about
    five 1024-token forwards; on an H200 that ran at 2,228 tokens/s against 17,299 with 8k-token micro-batches at
    the same 16 rows per step (docs/benchmarks.md; without checkpointing in the second).
    """
    return args.packing_length or max(args.batch_size * max_length, DEFAULT_PACKING_LENGTH)


def group_rows(batches) -> tuple[int, ...]:
    return tuple(r for b in batches for r in b.rows)


def _non_finite(args: TrainArgs, step: int, rows: Sequence[int], origins: Sequence[str] | None, what: str) -> bool:
    """Under `stop`, raise naming the step and rows; under `skip`, report and return True (skip this step)."""
    named = [origins[r] for r in rows][:5] if origins else [f"row {r}" for r in rows][:5]
    message = f"non-finite {what} at step {step}; rows: {', '.join(named)}"
    if args.nan_policy == "stop":
        raise NonFiniteLoss(message + " (nothing of this step was saved; use --nan_policy skip to skip such steps)")
    print(f"warning: {message}; step skipped", flush=True)
    return True


def _save_torch(obj, path: Path) -> None:
    # Through a Python file so that a failed write (disk full) keeps its OSError as the context of torch's error.
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def _load_torch(path: Path):
    """torch.load of a state file written by _save_torch, refusing anything but tensors and plain containers."""
    import pickle

    import torch

    if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 6):
        # Before 2.6, weights_only=True could still be made to run code (CVE-2025-32434).
        raise UserError(f"resuming needs torch>=2.6 to read '{path}' safely; found torch {torch.__version__}")
    if not path.is_file():
        raise UserError(f"checkpoint file '{path}' is missing")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise UserError(f"refusing '{path}': it holds Python objects beyond tensors and plain data, which could run "
                        "code when loaded; mathtune writes no such file") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"cannot read '{path}': {first_line(exc, 160)}") from None


def _load_state(checkpoint: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG from `checkpoint`; its position in training is returned."""
    import json

    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        position = (state["global_step"], state["epoch"], state["position"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"'{checkpoint / STATE_FILE}' is unreadable or incomplete ({type(exc).__name__})") from None
    if not all(isinstance(v, int) and v >= 0 for v in position):
        raise UserError(f"'{checkpoint / STATE_FILE}': global_step, epoch and position must be whole numbers")
    optimizer_state = _load_torch(checkpoint / "optimizer.pt")
    scheduler_state = _load_torch(checkpoint / "scheduler.pt")
    rng = _load_torch(checkpoint / "rng_state.pt")
    try:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        _set_rng_state(rng)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise UserError(f"'{checkpoint}' does not fit this run (optimizer, scheduler or RNG state: "
                        f"{first_line(exc, 160)})") from None
    return state
