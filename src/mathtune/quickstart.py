"""`mathtune quickstart`: the tutorial's whole workflow on the embedded model and built-in data, offline.

Answers held-out questions, fine-tunes with LoRA, merges, answers them again with the merged model, draws the loss
curve, and prints where everything is and how long each stage took.

Two sizes, picked by the device unless --task says otherwise:

- a CPU learns rg:number_sequence's short answers (400 rows, 100 questions, 64 new tokens: minutes on 2 cores);
- CUDA runs one epoch (GSM_QUICK_EPOCHS) of the default GSM recipe (configs/smollm2-135m-math.yaml, kept equal to
  GSM_RECIPE by tests/test_recipes.py), all its rows (GSM_QUICK_ROWS), and answers 200 questions each of rg:gsm-symbolic
  (seen templates), rg:gsm-symbolic-unseen (held-out templates) and the untrained rg:equations with up to 512 new
  tokens: step-by-step answers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FastArgs, LoraArgs, OptimArgs, RunArgs, RunConfig
from .data.config import DataArgs
from .errors import UserError

DEFAULT_TASK = "number_sequence"
GSM_TASK = "gsm-symbolic"
# A task the run does not train on, answered before and after: a drop would show the fine-tune costing general skill.
CHECK_TASK = "chain_sum"
# 100 questions: a gain of 20 points has 95% intervals that do not overlap (40 gave +-15 points each).
EVAL_QUESTIONS = 100
SHOWN = 3
# 400 rows: on an H200 sweep (docs/results.md, "Quickstart task") 400 rows of rg:number_sequence gave 10% -> 44% and
# 800 rows 9% -> 48%; 400 rows (33k tokens) train in about 4 minutes on a 2-core CPU, 800 took 8.
DEFAULT_TRAIN_ROWS = 400
# The default recipe (configs/smollm2-135m-math.yaml; tests/test_recipes.py keeps the two equal), as sft options.
GSM_RECIPE: dict[str, Any] = {
    "dataset": ("rg:gsm-symbolic#48000", "rg:arithmetic#500", "rg:leg_counting#500", "rg:products#500", "rg:gcd#500",
                "rg:lcm#500", "rg:prime_factorization#500", "rg:count_bits#500"),
    "max_length": 1024, "sft_type": "lora", "lora_rank": 16, "lora_alpha": 32, "target_modules": ("all-linear",),
    "learning_rate": 1e-3, "num_train_epochs": 2.0, "batch_size": 128, "gradient_accumulation_steps": 1,
    "packing_length": 65536, "gradient_checkpointing": False, "use_liger_kernel": False, "logging_steps": 10,
    "eval_steps": 100, "save_steps": 1000,
}
# The base model's replies to everyday prompts (29 finish within 96 tokens), repeated to this many rows: about 3% of
# the training tokens (their ~92 tokens against the recipe's ~2M); once each they would be 0.1%, where the CPU run's
# 7% kept the model answering ordinary questions. Repeating them is safe: they are the model's own replies.
GSM_REPLAY_ROWS = 600
# The CUDA quickstart trains this many gsm-symbolic rows (other sources scaled alike, as --train_rows does): all of the
# recipe's, for GSM_QUICK_EPOCHS epochs. On one H200 (docs/results.md, "Quickstart (CUDA)", 2026-12-04) one epoch
# trained in 178 s and the whole quickstart, both evaluations included, took 4 min 36 s of its 5 minutes; the recipe's
# second epoch (+132 s of training, +14 points on seen templates) does not fit. `--train_rows 16000` runs a third.
GSM_QUICK_ROWS = 48000
GSM_QUICK_EPOCHS = 1.0
# 200 questions per split: a 10-point gain on the unseen split then has intervals that can separate (at 1% -> 11%,
# Wilson [0.3, 3.6] and [7.4, 16]). Batches of 256: a 135M model's decoding step is launch-bound, so it costs about
# the same for 1 row or 256 (docs/benchmarks.md); Generator's loop (mathtune.decode) brings its own static cache.
GSM_EVAL_QUESTIONS = 200
GSM_MAX_NEW_TOKENS = 512
GSM_BATCH = 256
GSM_CHECK_TASK = "equations"  # in no recipe's mix
# Ordinary prompts, each with words a relevant reply contains: a check that the tuned model still chats.
CHAT_PROMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What do bees make?", ("honey",)),
    ("Name one colour of the rainbow.", ("red", "orange", "yellow", "green", "blue", "indigo", "violet")),
    ("Write one sentence about the sea.", ("sea", "ocean", "water", "wave")),
    ("How many days are there in a week?", ("7", "seven")),
)


@dataclass(frozen=True)
class QuickstartArgs:
    """`mathtune quickstart`'s options."""

    output_dir: str = "output"
    train_rows: int | None = None  # None: the plan's own size (400 short rows; all the GSM recipe's rows)
    task: str | None = None  # None: by device, the GSM recipe on CUDA and number_sequence elsewhere

    def __post_init__(self) -> None:
        # Checked first because a bad value would otherwise surface only after minutes of answering and training.
        if self.train_rows is not None and self.train_rows < 1:
            raise UserError(f"--train_rows must be a positive whole number, got {self.train_rows}")
        from .data.generators import canonical_task

        if self.task is not None:  # a typo or an eval-only split: one line now
            object.__setattr__(self, "task", canonical_task(self.task))


@dataclass(frozen=True)
class Plan:
    """What one quickstart answers and trains, on which device."""

    device: str
    task: str  # the trained task, without "rg:"
    gsm: bool  # the default GSM recipe (GSM_RECIPE); else the short-answer recipe of _short_config
    benchmarks: tuple[str, ...]  # the trained task's benchmark first
    questions: int
    max_new_tokens: int
    batch_size: int


def make_plan(task: str | None, device: str) -> Plan:
    """The GSM recipe when asked for (--task gsm-symbolic) or on CUDA by default; else the short-answer recipe."""
    if task is None:
        task = GSM_TASK if device.startswith("cuda") else DEFAULT_TASK
    if task == GSM_TASK:
        return Plan(device, task, True, (f"rg:{task}", f"rg:{task}-unseen", f"rg:{GSM_CHECK_TASK}"),
                    GSM_EVAL_QUESTIONS, GSM_MAX_NEW_TOKENS, GSM_BATCH)
    # 64 new tokens: the answers are one line. Batches of 50: a CPU step reads every weight once whatever the batch,
    # so larger batches generate more tokens per second (16 rows gave about 95 tokens/s on 2 cores).
    check = () if task == CHECK_TASK else (f"rg:{CHECK_TASK}",)
    return Plan(device, task, False, (f"rg:{task}", *check), EVAL_QUESTIONS, 64, 50)


def quickstart(args: QuickstartArgs) -> int:
    """The entry point of `mathtune quickstart`: checks the output folder before the minutes of work, then runs."""
    from .model import default_device
    from .run_dir import check_output_dir

    check_output_dir(args.output_dir)
    if args.task == GSM_TASK and not default_device().startswith("cuda"):
        # Seen on the 2-core, 24 GiB machine: the first step of 32 packed GSM rows (~6k tokens) grew the process to
        # 24 GiB and the kernel killed it (CPU attention over a masked pack keeps its full score matrices for the
        # backward, about 1.5 GB a layer here), and the whole run would have taken hours anyway.
        raise UserError("--task gsm-symbolic runs the GSM recipe, which needs a CUDA GPU; on a CPU leave --task out "
                        "(number_sequence) or train it with `mathtune sft --config configs/smollm2-135m-math.yaml`")
    return run_quickstart(args.output_dir, args.train_rows, args.task)


def _answer(model, tokenizer, description: str, plan: Plan, data_seed: int, out_dir: Path) -> dict:
    """Answer and grade the plan's held-out questions through `mathtune eval`'s entry point; predictions.jsonl
    and summary.json go to `out_dir`. Returns {benchmark: (accuracy, prediction rows)}."""
    from .evaluate.runner import EvalSettings, bench_dir_name, evaluate
    from .jsonl import read_jsonl

    names = list(plan.benchmarks)
    settings = EvalSettings(limit=plan.questions, max_new_tokens=plan.max_new_tokens, batch_size=plan.batch_size,
                            data_seed=data_seed)
    summary = evaluate(names, settings, out_dir, loaded=(model, tokenizer), description=description).summary
    return {name: (summary["benchmarks"][name]["accuracy"],
                   [row for _, row in read_jsonl(out_dir / bench_dir_name(name) / "predictions.jsonl")])
            for name in names}


def looping(text: str) -> bool:
    """Whether a reply repeats itself: some run of three words occurs three times or more."""
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + 3]) for i in range(len(words) - 2))
    return bool(grams) and max(grams.values()) >= 3


def chat_check(model, tokenizer, out_dir: Path) -> tuple[int, int]:
    """Answer CHAT_PROMPTS; returns (relevant replies, looping replies) and keeps the replies in chat.jsonl."""
    from .atomic import write_jsonl
    from .generate import Generator, Sampling

    conversations = [[{"role": "user", "content": prompt}] for prompt, _ in CHAT_PROMPTS]
    replies = [r[0] for r in Generator(model, tokenizer).generate(conversations, Sampling(max_new_tokens=64),
                                                                  batch_size=len(conversations), progress=False)]
    rows = [{"prompt": prompt, "reply": reply, "relevant": any(w in reply.lower() for w in words),
             "looping": looping(reply)} for (prompt, words), reply in zip(CHAT_PROMPTS, replies, strict=True)]
    write_jsonl(out_dir / "chat.jsonl", rows)
    return sum(r["relevant"] for r in rows), sum(r["looping"] for r in rows)


def _show(title: str, rows: list) -> None:
    print(f"\n== {title} ==")
    for row in rows[:SHOWN]:
        answer = " ".join(row["outputs"][0].split())
        print(
            f"Q: {row['question'].strip()[:160]}\n   model: {answer[:160]}\n   gold: {row['gold']}   "
            f"{'right' if row['correct'] else 'wrong'}"
        )


def _cell(accuracy: float, n: int) -> str:
    from .evaluate.runner import wilson_interval

    low, high = wilson_interval(accuracy * n, n)
    return f"{accuracy:.0%} [{low:.0%}, {high:.0%}]"


def result_table(before: dict, after: dict, chat: tuple[tuple[int, int], tuple[int, int]], trained: str) -> str:
    """The quickstart's result: each benchmark before and after with 95% intervals and the commonest-answer score,
    then the chat check."""
    from .evaluate.runner import commonest_answer

    rows = [("", "before", "after", "always the commonest answer")]
    for name, (acc_before, rows_before) in before.items():
        acc_after, rows_after = after[name]
        gold, share = commonest_answer([row["gold"] for row in rows_after])
        kind = {trained: "trained task", f"{trained}-unseen": "unseen templates"}.get(name, "not trained on")
        label = f"{name} ({kind}, {len(rows_after)} held-out)"
        rows.append((label, _cell(acc_before, len(rows_before)), _cell(acc_after, len(rows_after)),
                     f"{share:.0%} ('{gold}')"))
    n = len(CHAT_PROMPTS)
    (rel_b, loop_b), (rel_a, loop_a) = chat
    rows.append((f"ordinary prompts ({n}): relevant / looping", f"{rel_b}/{n} / {loop_b}/{n}",
                 f"{rel_a}/{n} / {loop_a}/{n}", "-"))
    from .tables import text_table

    return text_table(rows)


def _short_config(output_dir: str, task: str, rows: int, data_seed: int, replay: Path | None) -> RunConfig:
    """The CPU-sized recipe: LoRA on one task's short "The answer is \\boxed{A}." replies (docs/results.md)."""
    return RunConfig(
        lora=LoraArgs(lora_rank=16, lora_alpha=32),
        data=DataArgs(dataset=(f"rg:{task}#{rows}", *([str(replay)] if replay else [])), data_seed=data_seed,
                      max_length=512,
                      split_dataset_ratio=0.02),
        optim=OptimArgs(num_train_epochs=1, learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1,
                        warmup_ratio=0.05),
        run=RunArgs(output_dir=output_dir, logging_steps=5, save_steps=1000, eval_steps=1000),
        fast=FastArgs(gradient_checkpointing=False),
    )


def gsm_config(output_dir: str, rows: int | None, data_seed: int, replay: Path | None,
               epochs: float | None = None) -> RunConfig:
    """GSM_RECIPE as an sft config, plus the replay rows; `rows` scales every source (None: the recipe's sizes) and
    `epochs` replaces the recipe's (None: keep them)."""
    import argparse
    import re

    from .config import build_config

    scale = 1.0 if rows is None else rows / int(GSM_RECIPE["dataset"][0].rpartition("#")[2])
    dataset = [re.sub(r"#(\d+)$", lambda m: f"#{max(1, round(int(m.group(1)) * scale))}", source)
               for source in GSM_RECIPE["dataset"]]
    if replay:
        dataset.append(f"{replay}#{max(1, round(GSM_REPLAY_ROWS * scale))}")
    options = {**GSM_RECIPE, "dataset": tuple(dataset), "output_dir": output_dir, "data_seed": data_seed}
    if epochs is not None:
        options["num_train_epochs"] = epochs
    return build_config(argparse.Namespace(config=None, **options))


def _train(output_dir: str, plan: Plan, rows: int | None, data_seed: int, replay: Path | None):
    from .sft import run_sft

    if plan.gsm:
        cfg = gsm_config(output_dir, rows or GSM_QUICK_ROWS, data_seed, replay, GSM_QUICK_EPOCHS)
    else:
        cfg = _short_config(output_dir, plan.task, rows or DEFAULT_TRAIN_ROWS, data_seed, replay)
    also = f" and the base model's own replies to everyday prompts ({replay}), so that it stays a chat model" \
        if replay else ""
    print(f"\nfine-tuning on {' + '.join(d for d in cfg.data.dataset if d.startswith('rg:'))} (held-out questions "
          f"are never trained on){also} ...")
    return run_sft(cfg)


def _measure(model, tokenizer, description: str, plan: Plan, data_seed: int, out_dir: Path, title: str):
    results = _answer(model, tokenizer, description, plan, data_seed, out_dir)
    chat = chat_check(model, tokenizer, out_dir)
    for name in plan.benchmarks[: 2 if plan.gsm else 1]:  # the GSM plan shows seen and unseen templates
        accuracy, rows = results[name]
        _show(f"{title}: {accuracy:.0%} of {len(rows)} held-out {name} questions right", rows)
    return results, chat


def run_quickstart(output_dir: str = "output", train_rows: int | None = None, task: str | None = None) -> int:
    """Answer, fine-tune, merge, answer again; print one table of the gain next to the trivial baseline, an untrained
    task and a chat check. `task` None: the GSM recipe on CUDA, number_sequence elsewhere. Returns the exit code."""
    from .evaluate.report import compare
    from .export import merge_lora
    from .model import default_device, load_for_inference
    from .replay import write_replay_rows

    timings: dict[str, float] = {}
    start = mark = time.perf_counter()
    plan, data_seed = make_plan(task, default_device()), 42
    # The run folder exists only once training starts: the answers before it wait here, then move into it.
    staging = Path(tempfile.mkdtemp(prefix="mathtune-quickstart-"))
    try:
        base, tokenizer, description = load_for_inference(None, device=plan.device)
        print(f"model: {description} on {plan.device}")
        before, chat_before = _measure(base, tokenizer, description, plan, data_seed, staging / "before",
                                       "before fine-tuning")
        replay = Path(output_dir) / "quickstart-replay.jsonl"  # the same rows every time: greedy replies of the base
        replay = replay if write_replay_rows(base, tokenizer, replay) else None
        del base
        timings["answer before"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = _train(output_dir, plan, train_rows, data_seed, replay)
        eval_dir = Path(result.run_dir) / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / "before", eval_dir / "before")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    timings["fine-tune"] = time.perf_counter() - mark
    if result.interrupted:  # Ctrl-C: run_sft saved a checkpoint and said how to resume; skip merging and answering
        return 130

    mark = time.perf_counter()
    merged_dir = merge_lora(result.last_checkpoint)
    timings["merge"] = time.perf_counter() - mark

    mark = time.perf_counter()
    merged, tokenizer, merged_description = load_for_inference(str(merged_dir), device=plan.device)
    after, chat_after = _measure(merged, tokenizer, merged_description, plan, data_seed, eval_dir / "after",
                                 "after fine-tuning (merged model)")
    timings["answer after"] = time.perf_counter() - mark
    chart = compare(eval_dir / "before", eval_dir / "after", out_dir=eval_dir, labels=("before", "after"))
    _report(result, merged_dir, eval_dir, chart.rsplit("chart: ", 1)[-1], timings, time.perf_counter() - start)
    print(f"\n{result_table(before, after, (chat_before, chat_after), plan.benchmarks[0])}")
    return 0


def _report(result, merged_dir: Path, eval_dir: Path, chart: str, timings: dict[str, float], total: float) -> None:
    run_dir = Path(result.run_dir)
    print("\n== where everything is ==")
    print(
        f"run dir:        {run_dir}\nadapter:        {result.last_checkpoint}\nmerged model:   {merged_dir}\n"
        f"loss curve:     {run_dir / 'images' / 'train_loss.png'}\ntraining log:   {run_dir / 'logging.jsonl'}\n"
        f"predictions:    {eval_dir / 'before'} and {eval_dir / 'after'} (predictions.jsonl per benchmark, "
        f"chat.jsonl)\ncomparison:     {chart}"
    )
    print("timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    print(f"next: mathtune infer --ckpt_dir {merged_dir}")
