#!/usr/bin/env python
"""GRPO speed: wall-clock per optimizer step, mathtune against TRL's GRPOTrainer, in one process.

Both train the same random-weight Llama (SmolLM2-135M shape, Yi-1.5-6B shape, or a tiny one for CPU checks; built as
benchmarks/train_speed.py builds them, bf16 on a GPU) with the same LoRA (r8, alpha 32, no dropout, all linear layers),
on the same GSM-like prompts and ChatML tokenizer (benchmarks/generate_speed.py's), with the same settings: --prompts
prompts x --generations completions per optimizer step, micro-batches of --micro_batch completions, temperature 1,
top_p 1, beta 0, loss dapo, learning rate 1e-5, and the same reward (the share of digits in a completion: random
weights write noise, and grading noise would only time the grader). Every completion is forced to
--completion_length tokens (TRL: generation_kwargs min_new_tokens; mathtune: the model's generation_config
min_new_tokens, which its sampler honours as transformers' generate does), so both do the same work.

mathtune: rl.step.make_generation_batch (sampling through Generator's decoding loop, rewards, advantages) and
rl.step.take_step (policy loss, backward, optimizer) on a model with sft's fast path applied, as `mathtune rlhf` runs
them (here with gradient checkpointing off). TRL 1.16: GRPOTrainer.train with its built-in transformers generation (no
vLLM), gradient checkpointing off. Every TRL run comes before the first mathtune run: liger-kernel's RoPE patch (part
of mathtune's fast path where liger is installed) replaces a function of transformers' Llama module for the whole
process. The first --warmup steps of each are not timed. Also reported: each one's sampling tokens/s (TRL's timed
around its model.generate calls) and mathtune's against the memory-bandwidth bound (generate_speed.bandwidth_bound).
JSON lines to --out.

    python benchmarks/rl_speed.py --out results/rl_speed.jsonl            # H200: both shapes, about 4 minutes
    python benchmarks/rl_speed.py --model tiny --device cpu --prompts 2 --generations 4 --completion_length 8 \
        --micro_batch 4
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from generate_speed import bandwidth_bound, build_tokenizer, gsm_prompts  # noqa: E402 - benchmark siblings
from train_speed import SHAPES, build_model, sync  # noqa: E402

LORA = {"rank": 8, "alpha": 32}
LEARNING_RATE = 1e-5


def digit_share(text: str) -> float:
    return sum(c.isdigit() for c in text) / max(1, len(text))


def fresh_model(shape: str, tokenizer, opts):
    import torch

    model = build_model(shape, opts.device, torch.bfloat16 if opts.cuda else torch.float32)
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def run_mathtune(shape: str, tokenizer, conversations, opts, deadline: float) -> dict:
    import torch

    from mathtune.config import FastArgs
    from mathtune.fastpath import apply
    from mathtune.generate import Generator
    from mathtune.model import attach_lora
    from mathtune.rl.config import build
    from mathtune.rl.rewards import Prompt
    from mathtune.rl.step import make_generation_batch, take_step
    from mathtune.train import optimizer_and_schedule

    model = fresh_model(shape, tokenizer, opts)
    model.generation_config.min_new_tokens = opts.completion_length  # forced lengths (see the module docstring)
    model = attach_lora(model, LORA["rank"], LORA["alpha"], 0.0, "all-linear")
    fast = apply(model, FastArgs(gradient_checkpointing=False), torch.device(opts.device)).report
    cfg = build({"optim": {"batch_size": opts.micro_batch, "learning_rate": LEARNING_RATE,
                           "gradient_accumulation_steps": opts.prompts * opts.generations // opts.micro_batch},
                 "grpo": {"num_generations": opts.generations, "max_completion_length": opts.completion_length,
                          "reward_funcs": ("accuracy",)}})
    prompts = [Prompt(tuple(c), None, "math", f"bench[{i}]") for i, c in enumerate(conversations)]
    # Named "accuracy" so that the batch's accuracy statistic reads it instead of grading random text.
    rewards = [("accuracy", lambda texts, _prompts: [digit_share(t) for t in texts])]
    generator = Generator(model, tokenizer)
    assert generator.fast_path_reason() is None, generator.fast_path_reason()
    params = [p for p in model.parameters() if p.requires_grad]
    total = opts.warmup + opts.steps
    optimizer, scheduler = optimizer_and_schedule(params, cfg.optim, total, torch.device(opts.device))
    model.train()
    steps = []
    for step in range(total):
        chosen = prompts[step * opts.prompts : (step + 1) * opts.prompts]
        sync(opts.device)
        start = time.perf_counter()
        batch = make_generation_batch(generator, chosen, rewards, cfg, None, step + 1)
        sync(opts.device)
        sampled = time.perf_counter()
        take_step(model, batch, params, optimizer, cfg, tokenizer, step + 1)
        scheduler.step()
        sync(opts.device)
        done = time.perf_counter()
        tokens = sum(len(c) for c in batch.rollout.completion_ids)
        assert tokens == opts.prompts * opts.generations * opts.completion_length, tokens  # forced lengths held
        steps.append({"step_s": done - start, "sample_s": sampled - start, "tokens": tokens})
        if step + 1 > opts.warmup and time.perf_counter() > deadline:
            break
    timed = steps[opts.warmup :] or steps[-1:]
    context = sum(len(p) for p in generator.render(conversations)) / len(conversations) + opts.completion_length / 2
    sample_s = sum(s["sample_s"] for s in timed) / len(timed)
    bound = bandwidth_bound(model.get_base_model(), opts.prompts * opts.generations, context, opts.bandwidth_tbs)
    sampling_tps = timed[0]["tokens"] / sample_s
    return {"step_s": sum(s["step_s"] for s in timed) / len(timed), "sample_s": sample_s,
            "sampling_tokens_per_s": sampling_tps, **bound,
            "share_of_bound": sampling_tps / bound["bound_tokens_per_s"], "timed_steps": len(timed),
            "first_step_s": steps[0]["step_s"], "fast_path": fast, "cuda_graphs": graphs_used(generator)}


def graphs_used(generator) -> int | None:
    """How many CUDA graphs the sampler holds (None: it decoded eagerly, as on a CPU or after a failed capture)."""
    return generator.decoder_stats()["cuda_graphs"]


def run_trl(shape: str, tokenizer, conversations, opts, deadline: float) -> dict:
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model = fresh_model(shape, tokenizer, opts)
    dataset = Dataset.from_list([{"prompt": list(c)} for c in conversations])

    def reward(completions, **kwargs) -> list[float]:
        return [digit_share(c[-1]["content"] if isinstance(c, list) else c) for c in completions]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            sync(opts.device)
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            sync(opts.device)
            self.marks.append(time.perf_counter())
            if len(self.marks) - 1 > opts.warmup and time.perf_counter() > deadline:
                control.should_training_stop = True

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        wanted = dict(
            output_dir=out, per_device_train_batch_size=opts.micro_batch,
            gradient_accumulation_steps=opts.prompts * opts.generations // opts.micro_batch,
            num_generations=opts.generations, max_completion_length=opts.completion_length, temperature=1.0,
            top_p=1.0, top_k=0, beta=0.0, loss_type="dapo", learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
            warmup_steps=0, max_steps=opts.warmup + opts.steps, logging_steps=10_000, save_strategy="no",
            report_to="none", bf16=opts.cuda, use_cpu=not opts.cuda, gradient_checkpointing=False,
            generation_kwargs={"min_new_tokens": opts.completion_length}, seed=opts.seed, disable_tqdm=True,
            dataloader_num_workers=0)
        # Another TRL version may lack an option; what it lacks is reported rather than failing the whole call.
        known = {f.name for f in dataclasses.fields(GRPOConfig)}
        dropped = sorted(set(wanted) - known)
        args = GRPOConfig(**{k: v for k, v in wanted.items() if k in known})
        lora = LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora, callbacks=[clock])
        generation = time_generate(trainer.model, opts.device)
        trainer.train()
    step_s = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    timed = step_s[opts.warmup :] or step_s[-1:]
    gen = generation[len(generation) - len(timed) :] if len(generation) >= len(timed) else []
    tokens = opts.prompts * opts.generations * opts.completion_length
    del trainer
    return {"step_s": sum(timed) / len(timed), "timed_steps": len(timed), "first_step_s": step_s[0],
            "trl": trl.__version__, "trl_options_dropped": dropped,
            "sample_s": sum(gen) / len(gen) if gen else None,
            "sampling_tokens_per_s": tokens / (sum(gen) / len(gen)) if gen else None}


def time_generate(model, device: str) -> list[float]:
    """Seconds of each `generate` call on `model` (TRL samples a generation batch per call); the list fills as
    training runs."""
    seconds: list[float] = []
    inner = model.generate

    def timed(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        sync(device)
        seconds.append(time.perf_counter() - start)
        return out

    model.generate = timed
    return seconds


def run_one(name: str, shape: str, opts, started: float, runs_left: int) -> dict | None:
    import torch

    left = opts.max_seconds - (time.perf_counter() - started)
    if left <= 0:
        print(f"{shape} {name}: skipped, --max_seconds {opts.max_seconds} spent", flush=True)
        return None
    conversations = gsm_prompts(opts.prompts * (opts.warmup + opts.steps), opts.seed)
    tokenizer = build_tokenizer(conversations, min(2000, SHAPES[shape]["vocab_size"]))
    if opts.cuda:
        torch.cuda.reset_peak_memory_stats()
    deadline = time.perf_counter() + left / runs_left  # an equal share of what is left
    runner = run_mathtune if name == "mathtune" else run_trl
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]  # TRL's trainer needs both
    if name == "trl" and missing:
        print(f"{shape} trl: skipped, {' and '.join(missing)} not installed (pip install 'trl>=1.16,<2' datasets)",
              flush=True)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = runner(shape, tokenizer, conversations, opts, deadline)
    record = {"model": shape, "framework": name, **measured, "prompts": opts.prompts,
              "generations": opts.generations, "completion_length": opts.completion_length,
              "micro_batch": opts.micro_batch, "peak_gib": torch.cuda.max_memory_allocated() / 2**30
              if opts.cuda else None, "device": torch.cuda.get_device_name() if opts.cuda else "cpu",
              "torch": torch.__version__, "date": datetime.date.today().isoformat()}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()
                      if k not in ("device", "torch", "date")}), flush=True)
    gc.collect()
    if opts.cuda:
        torch.cuda.empty_cache()
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=sorted(SHAPES), default=["smol135m", "yi6b"])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per optimizer step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt")
    parser.add_argument("--completion_length", type=int, default=256, help="tokens per completion, forced")
    parser.add_argument("--micro_batch", type=int, default=8, help="completions per policy-loss micro-batch")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bandwidth_tbs", type=float, default=4.8, help="memory bandwidth for the bound (H200: 4.8)")
    parser.add_argument("--max_seconds", type=float, default=420,
                        help="time budget of the whole call; each run stops stepping (after one timed step) at its "
                             "share")
    parser.add_argument("--out", default=None, help="append one JSON line per run to this file")
    opts = parser.parse_args(argv)
    if (opts.prompts * opts.generations) % opts.micro_batch:
        parser.error("--prompts x --generations must be a multiple of --micro_batch")

    import torch

    started = time.perf_counter()
    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts.cuda = opts.device.startswith("cuda")
    if not opts.cuda:
        torch.set_num_threads(min(4, os.cpu_count() or 1))
    results = []
    runs = [(name, shape) for name in ("trl", "mathtune") for shape in opts.model]  # TRL first: see the docstring
    for k, (name, shape) in enumerate(runs):
        record = run_one(name, shape, opts, started, len(runs) - k)
        if record is None:
            continue
        results.append(record)
        if opts.out:
            Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
            with open(opts.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    print("\n| model | framework | s / optimizer step | x TRL | sampling tok/s | bound tok/s | share of bound |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        trl = next((x for x in results if x["model"] == r["model"] and x["framework"] == "trl"), None)
        ratio = f"{trl['step_s'] / r['step_s']:.1f}x" if trl else "-"
        tps = f"{r['sampling_tokens_per_s']:,.0f}" if r.get("sampling_tokens_per_s") else "-"
        bound = f"{r['bound_tokens_per_s']:,.0f}" if "bound_tokens_per_s" in r else "-"
        share = f"{r['share_of_bound']:.1%}" if "share_of_bound" in r else "-"
        print(f"| {r['model']} | {r['framework']} | {r['step_s']:.2f} | {ratio} | {tps} | {bound} | {share} |")
    print(f"\n{opts.prompts} prompts x {opts.generations} completions x {opts.completion_length} tokens (forced) per "
          f"step; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
