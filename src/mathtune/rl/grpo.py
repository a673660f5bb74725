"""`mathtune rlhf --rlhf_type grpo`: questions -> model -> run folder -> (generate -> reward -> advantages ->
policy loss) x steps -> curves (-> accuracy before and after).

The run folder is sft's (args.json, logging.jsonl, checkpoint-N with optimizer, scheduler and RNG state, images/),
under output_dir/<model>-grpo so that `--resume_from_checkpoint auto` never takes an sft run for a GRPO one. A
checkpoint also keeps the generation batch a step was taken on when num_iterations > 1 (inside the RNG state:
sampled completions are the sampling RNG's output), so a resumed run continues it rather than sampling anew.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..run_dir import RunDir, RunLog, check_output_dir, load_state
from ..seeding import seed_everything
from ..signals import StopOnSignal
from ..train import NonFiniteLoss, TrainState, optimizer_and_schedule, rng_state
from .config import GrpoConfig
from .rewards import Prompt, RewardFn, load_plugins, resolve_rewards
from .step import GenerationBatch, make_generation_batch, take_step

ROLLOUT_KEY = "grpo_rollout"


@dataclass
class GrpoResult:
    run_dir: Path
    last_checkpoint: Path | None
    interrupted: bool
    last_record: dict | None
    eval_summary: dict | None


def run_grpo(cfg: GrpoConfig, progress: bool = True) -> GrpoResult:
    """Train with GRPO as `cfg` says; see the module docstring."""
    from ..model import load_tokenizer, resolve_model_path
    from .prompts import load_prompts
    from .start import run_name

    started = time.perf_counter()
    check_output_dir(cfg.run.output_dir)
    rewards = resolve_rewards(cfg.grpo.reward_funcs, cfg.grpo.external_plugins)  # a bad name fails before loading
    seed_everything(cfg.optim.seed)
    model_path = resolve_model_path(cfg.model.model_id_or_path)  # an sft LoRA checkpoint is merged in (rl.start)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    prompts = load_prompts(cfg.data.dataset, cfg.data.data_seed, cfg.data.system)
    if len(prompts) < cfg.prompts_per_step:
        raise UserError(f"{len(prompts)} questions, fewer than one step's {cfg.prompts_per_step} (batch_size x "
                        "gradient_accumulation_steps / num_generations)")
    with RunDir.open(cfg, run_name(model_path, cfg.model.model_id_or_path) + "-grpo") as run:
        model, ref_model, before = _prepare(cfg, run, model_path, tokenizer, len(prompts), progress)
        with StopOnSignal() as stop:
            last, interrupted, checkpoint = grpo_loop(run, model, ref_model, tokenizer, prompts, rewards, stop,
                                                      progress)
        run.finish()
        from .curves import draw_curves

        images = draw_curves(run.path)
        summary = None
        if cfg.eval_benchmarks and not interrupted:
            from ..sft import evaluate_after

            summary = evaluate_after(model, tokenizer, cfg, run.path, before, progress)
    if interrupted:
        print(f"Stopped at step {last['step'] if last else 0}; resume with --resume_from_checkpoint {checkpoint}")
    print(f"run dir: {run.path}\nlast checkpoint: {checkpoint}\ncurves: {images}\n"
          f"time: {time.perf_counter() - started:.0f} s", flush=True)
    return GrpoResult(run.path, checkpoint, interrupted, last, summary)


def _prepare(cfg: GrpoConfig, run: RunDir, model_path, tokenizer, n_prompts: int, progress: bool):
    """(policy, reference model or None, benchmark results before training); the run folder exists afterwards.
    For LoRA the reference is the policy with its adapter switched off (no copy); for full fine-tuning with beta >
    0, a frozen copy of the starting weights. An sft LoRA checkpoint is merged in first (rl.start)."""
    from ..fastpath import apply as apply_fast_path
    from ..model import attach_lora, check_target_modules
    from ..sft import evaluate_model, load_weights
    from .start import load_start_model, save_base_merged

    start = load_start_model(cfg, model_path, run.path)
    model = start.model
    lora = cfg.lora.sft_type == "lora"
    if lora:
        check_target_modules(model, cfg.lora.target_modules)
    before = None
    mix = {"questions": n_prompts, "datasets": list(cfg.data.dataset)}
    with run.setting_up():
        if lora and start.sft_adapter is not None and start.merged_dir is None:
            run.start(mix)  # the GRPO adapter's base is the merged model: written before the adapter is attached
            save_base_merged(model, tokenizer, run.path, start.sft_adapter)
        if cfg.eval_benchmarks and run.resume is None:
            run.start(mix)
            before = evaluate_model(model, tokenizer, cfg, run.path / "eval" / "before", progress)
        ref_model = None
        if lora:
            model = attach_lora(model, cfg.lora.lora_rank, cfg.lora.lora_alpha, cfg.lora.lora_dropout,
                                list(cfg.lora.target_modules))
        elif cfg.grpo.beta != 0.0:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if run.resume is not None:
            load_weights(model, run.resume, lora)
        # sft's speed features for the policy's forward and backward (and the sampler's steps): fused LoRA,
        # liger's kernels, checkpointing; as in sft, on the CPU only checkpointing changes anything.
        apply_fast_path(model, cfg.fast, next(model.parameters()).device)
        run.start(mix)
    return model, ref_model, before


def _plan(n_prompts: int, per_step: int, seed: int, epoch: int) -> list[list[int]]:
    """The questions of each generation batch of `epoch`: a seeded shuffle cut into steps (a short tail is left
    for the next epoch's shuffle, as a drop_last sampler does)."""
    order = list(range(n_prompts))
    random.Random(f"grpo:{seed}:{epoch}").shuffle(order)
    return [order[k : k + per_step] for k in range(0, n_prompts - per_step + 1, per_step)]


def grpo_loop(run: RunDir, model, ref_model, tokenizer, prompts: list[Prompt], rewards: list[tuple[str, RewardFn]],
              should_stop: Callable[[], bool] | None = None, progress: bool = True):
    """The GRPO steps in `run`'s folder, continuing from `run.resume` (weights already loaded). Returns (last log
    record, interrupted, last checkpoint)."""
    import torch
    from tqdm.auto import tqdm

    from ..generate import Generator

    cfg = run.cfg
    g, optim = cfg.grpo, cfg.optim
    gens_per_epoch = len(_plan(len(prompts), cfg.prompts_per_step, optim.seed, 0))
    steps_per_epoch = gens_per_epoch * g.num_iterations
    total = optim.max_steps if optim.max_steps > 0 else math.ceil(steps_per_epoch * optim.num_train_epochs)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    state = load_state(run.resume) if run.resume is not None else None
    optimizer, scheduler = optimizer_and_schedule(params, optim, total, device, state)
    step = state.step if state is not None else 0
    run.begin(TrainState(step, total_steps=total, steps_per_epoch=steps_per_epoch))
    completions_log = RunLog(run.path / "completions.jsonl", resume_step=step if state is not None else None)
    saved_batch = (state.rng or {}).get(ROLLOUT_KEY) if state is not None else None
    batch = GenerationBatch.from_saved(saved_batch) if saved_batch is not None else None
    generator = Generator(model, tokenizer)
    window: list[dict] = []
    last, checkpoint, interrupted = None, (Path(state.source) if state is not None else None), False
    model.train()
    with tqdm(total=total, initial=step, desc="grpo", unit="step", disable=not progress) as bar:
        while step < total:
            step_started, generation_s = time.perf_counter(), None
            generation, iteration = divmod(step, g.num_iterations)
            if iteration == 0 or batch is None:
                epoch, position = divmod(generation, gens_per_epoch)
                chosen = [prompts[i] for i in _plan(len(prompts), cfg.prompts_per_step, optim.seed, epoch)[position]]
                batch = make_generation_batch(generator, chosen, rewards, cfg, ref_model, step + 1,
                                              pool=prompts)
                generation_s = time.perf_counter() - step_started
                if (step + 1) % g.log_completions_steps == 0 or step == 0:
                    for line in batch.completion_lines(step + 1, [name for name, _ in rewards]):
                        completions_log.write(line)
            record = take_step(model, batch, params, optimizer, cfg, tokenizer, step + 1)
            scheduler.step()
            step += 1
            # Wall-clock seconds, so that a run's speed is read from its log (sampling dominates GRPO's steps).
            record.update(step=step, epoch=round(step / steps_per_epoch, 4), learning_rate=scheduler.get_last_lr()[0],
                          step_s=time.perf_counter() - step_started, generation_s=generation_s)
            window.append(record)
            if step % cfg.run.logging_steps == 0 or step == total:
                last = _mean_record(window)
                run.log.write(last)
                bar.set_postfix(reward=f"{last['reward']:.3f}", acc=f"{last.get('accuracy', float('nan')):.2f}")
                window = []
            if cfg.eval_benchmarks and step % cfg.run.eval_steps == 0 and step < total:
                run.log.write(held_out_record(model, tokenizer, cfg, run.path, step))
            bar.update(1)
            interrupted = should_stop is not None and should_stop()
            if step % cfg.run.save_steps == 0 or step == total or interrupted:
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise NonFiniteLoss(f"non-finite weights at step {step}; no checkpoint written")
                rng = rng_state()
                if step % g.num_iterations:  # mid-batch: the next steps reuse this generation batch
                    rng[ROLLOUT_KEY] = batch.to_saved()
                epoch, position = divmod(step // g.num_iterations, gens_per_epoch)
                checkpoint = run.save(model, tokenizer, TrainState(
                    step, epoch, position, {}, total, steps_per_epoch, optimizer.state_dict(),
                    scheduler.state_dict(), rng))
            if interrupted:
                break
    return last, interrupted, checkpoint


def held_out_record(model, tokenizer, cfg: GrpoConfig, run_path: Path, step: int) -> dict:
    """--eval_benchmarks answered greedily at `step` (--eval_limit questions each) into eval/step-N, as one log
    record {"step", "eval_accuracy/BENCH", ...}. The rewards a run logs are on its own training questions, and
    sampled: they can rise while greedy accuracy on questions it never practised falls (docs/results.md, GRPO runs 3
    and 6), and this is the curve that shows it."""
    from ..sft import evaluate_model

    model.eval()  # no dropout: the answers are the model's own, as in eval/before and eval/after
    try:
        summary = evaluate_model(model, tokenizer, cfg, run_path / "eval" / f"step-{step}", progress=False)
    finally:
        model.train()
    accuracies = {f"eval_accuracy/{name}": b["accuracy"] for name, b in summary["benchmarks"].items()}
    print(f"step {step}: held-out accuracy " + ", ".join(f"{k.split('/', 1)[1]} {v:.1%}"
                                                          for k, v in accuracies.items()), flush=True)
    return {"step": step, **accuracies}


def _mean_record(records: list[dict]) -> dict:
    """The window's records as one: the last step's position, every measure averaged over the steps that have it."""
    out: dict[str, Any] = {k: records[-1][k] for k in ("step", "epoch", "learning_rate")}
    for key in dict.fromkeys(k for r in records for k in r):
        if key in out:
            continue
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        out[key] = sum(values) / len(values) if values else None
    return out


__all__ = ["GrpoResult", "grpo_loop", "load_plugins", "run_grpo"]
