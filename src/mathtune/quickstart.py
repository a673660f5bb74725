"""`mathtune quickstart`: the tutorial's whole workflow on the embedded model and built-in data, offline, on a CPU.

Answers held-out questions, fine-tunes with LoRA, merges, answers them again with the merged model, draws the loss
curve, and prints where everything is and how long each stage took.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .config import FastArgs, LoraArgs, OptimArgs, RunArgs, RunConfig
from .data.config import DataArgs
from .errors import UserError

DEFAULT_TASK = "number_sequence"
# A task the run does not train on, answered before and after: a drop would show the fine-tune costing general skill.
CHECK_TASK = "chain_sum"
# 100 questions: a gain of 20 points has 95% intervals that do not overlap (40 gave +-15 points each).
EVAL_QUESTIONS = 100
SHOWN = 3
# 400 rows: on an H200 sweep (docs/results.md, "Quickstart task") 400 rows of rg:number_sequence gave 10% -> 44% and
# 800 rows 9% -> 48%; 400 rows (33k tokens) train in about 4 minutes on a 2-core CPU, 800 took 8.
DEFAULT_TRAIN_ROWS = 400
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
    train_rows: int | None = None  # None: DEFAULT_TRAIN_ROWS, sized for a 2-core CPU
    task: str = DEFAULT_TASK

    def __post_init__(self) -> None:
        # Checked first because a bad value would otherwise surface only after minutes of answering and training.
        if self.train_rows is not None and self.train_rows < 1:
            raise UserError(f"--train_rows must be a positive whole number, got {self.train_rows}")
        from .data.generators import canonical_task

        object.__setattr__(self, "task", canonical_task(self.task))  # a typo or an eval-only split: one line now


def quickstart(args: QuickstartArgs) -> int:
    """The entry point of `mathtune quickstart`: checks the output folder before the minutes of work, then runs."""
    from .run_dir import check_output_dir

    check_output_dir(args.output_dir)
    return run_quickstart(args.output_dir, args.train_rows, args.task)


def _answer(model, tokenizer, description: str, tasks: list[str], data_seed: int, out_dir: Path) -> dict:
    """Answer and grade the held-out questions of each task through `mathtune eval`'s entry point; predictions.jsonl
    and summary.json go to `out_dir`. Returns {benchmark: (accuracy, prediction rows)}."""
    from .evaluate.runner import EvalSettings, bench_dir_name, evaluate
    from .jsonl import read_jsonl

    names = [f"rg:{task}" for task in tasks]
    # 64 new tokens: the answers are one line. Batches of 50: a CPU step reads every weight once whatever the batch,
    # so larger batches generate more tokens per second (16 rows gave about 95 tokens/s on 2 cores).
    settings = EvalSettings(limit=EVAL_QUESTIONS, max_new_tokens=64, batch_size=50, data_seed=data_seed)
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
    rows = [("", "before", "after", "always the commonest answer")]
    for name, (acc_before, rows_before) in before.items():
        acc_after, rows_after = after[name]
        gold, count = Counter(row["gold"] for row in rows_after).most_common(1)[0]
        label = f"{name} ({'trained task' if name == trained else 'not trained on'}, {len(rows_after)} held-out)"
        rows.append((label, _cell(acc_before, len(rows_before)), _cell(acc_after, len(rows_after)),
                     f"{count / len(rows_after):.0%} ('{gold}')"))
    n = len(CHAT_PROMPTS)
    (rel_b, loop_b), (rel_a, loop_a) = chat
    rows.append((f"ordinary prompts ({n}): relevant / looping", f"{rel_b}/{n} / {loop_b}/{n}",
                 f"{rel_a}/{n} / {loop_a}/{n}", "-"))
    from .tables import text_table

    return text_table(rows)


def _train(output_dir: str, task: str, rows: int, data_seed: int, replay: Path | None):
    from .sft import run_sft

    cfg = RunConfig(
        lora=LoraArgs(lora_rank=16, lora_alpha=32),
        data=DataArgs(dataset=(f"rg:{task}#{rows}", *([str(replay)] if replay else [])), data_seed=data_seed,
                      max_length=512,
                      split_dataset_ratio=0.02),
        optim=OptimArgs(num_train_epochs=1, learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1,
                        warmup_ratio=0.05),
        run=RunArgs(output_dir=output_dir, logging_steps=5, save_steps=1000, eval_steps=1000),
        fast=FastArgs(gradient_checkpointing=False),
    )
    also = f" and the base model's own replies to everyday prompts ({replay}), so that it stays a chat model" \
        if replay else ""
    print(f"\nfine-tuning on rg:{task}#{rows} (held-out questions are never trained on){also} ...")
    return run_sft(cfg)


def _measure(model, tokenizer, description: str, tasks: list[str], data_seed: int, out_dir: Path, title: str):
    results = _answer(model, tokenizer, description, tasks, data_seed, out_dir)
    chat = chat_check(model, tokenizer, out_dir)
    accuracy, rows = results[f"rg:{tasks[0]}"]
    _show(f"{title}: {accuracy:.0%} of {len(rows)} held-out rg:{tasks[0]} questions right", rows)
    return results, chat


def run_quickstart(output_dir: str = "output", train_rows: int | None = None, task: str = DEFAULT_TASK) -> int:
    """Answer, fine-tune, merge, answer again; print one table of the gain next to the trivial baseline, an untrained
    task and a chat check. Returns the exit code."""
    from .evaluate.report import compare
    from .export import merge_lora
    from .model import load_for_inference
    from .replay import write_replay_rows

    timings: dict[str, float] = {}
    start = mark = time.perf_counter()
    rows, data_seed = train_rows or DEFAULT_TRAIN_ROWS, 42
    tasks = [task] + ([CHECK_TASK] if task != CHECK_TASK else [])
    # The run folder exists only once training starts: the answers before it wait here, then move into it.
    staging = Path(tempfile.mkdtemp(prefix="mathtune-quickstart-"))
    try:
        base, tokenizer, description = load_for_inference(None, device="cpu")
        print(f"model: {description}")
        before, chat_before = _measure(base, tokenizer, description, tasks, data_seed, staging / "before",
                                       "before fine-tuning")
        replay = Path(output_dir) / "quickstart-replay.jsonl"  # the same rows every time: greedy replies of the base
        replay = replay if write_replay_rows(base, tokenizer, replay) else None
        del base
        timings["answer before"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = _train(output_dir, task, rows, data_seed, replay)
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
    merged, tokenizer, merged_description = load_for_inference(str(merged_dir), device="cpu")
    after, chat_after = _measure(merged, tokenizer, merged_description, tasks, data_seed, eval_dir / "after",
                                 "after fine-tuning (merged model)")
    timings["answer after"] = time.perf_counter() - mark
    chart = compare(eval_dir / "before", eval_dir / "after", out_dir=eval_dir, labels=("before", "after"))
    _report(result, merged_dir, eval_dir, chart.rsplit("chart: ", 1)[-1], timings, time.perf_counter() - start)
    print(f"\n{result_table(before, after, (chat_before, chat_after), f'rg:{task}')}")
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
