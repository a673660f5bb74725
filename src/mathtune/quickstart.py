"""`mathtune quickstart`: the tutorial's whole workflow on the embedded model and built-in data, offline, on a CPU.

Answers held-out questions, fine-tunes with LoRA, merges, answers them again with the merged model, draws the loss
curve, and prints where everything is and how long each stage took.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from .config import FastArgs, LoraArgs, OptimArgs, RunArgs, RunConfig
from .data.config import DataArgs

DEFAULT_TASK = "syllogism"
EVAL_QUESTIONS = 40
SHOWN = 4
DEFAULT_TRAIN_ROWS = 320


def _answer(model, tokenizer, description: str, task: str, data_seed: int, out_dir: Path) -> tuple[float, list]:
    """Answer and grade the held-out questions through `mathtune eval`'s entry point; predictions.jsonl and
    summary.json go to `out_dir`. Returns the accuracy and the prediction rows."""
    from .evaluate.runner import EvalSettings, bench_dir_name, evaluate
    from .jsonl import read_jsonl

    name = f"rg:{task}"
    # 96 new tokens: the tasks' answers are short, and a CPU generates some 10 tokens/s per row.
    settings = EvalSettings(limit=EVAL_QUESTIONS, max_new_tokens=96, batch_size=8, data_seed=data_seed)
    summary = evaluate([name], settings, out_dir, loaded=(model, tokenizer), description=description).summary
    rows = [row for _, row in read_jsonl(out_dir / bench_dir_name(name) / "predictions.jsonl")]
    return summary["benchmarks"][name]["accuracy"], rows


def _show(title: str, rows: list) -> None:
    print(f"\n== {title} ==")
    for row in rows[:SHOWN]:
        answer = " ".join(row["outputs"][0].split())
        print(
            f"Q: {row['question'].strip()[:160]}\n   model: {answer[:160]}\n   gold: {row['gold']}   "
            f"{'right' if row['correct'] else 'wrong'}"
        )


def run_quickstart(output_dir: str = "output", train_rows: int | None = None, task: str = DEFAULT_TASK) -> int:
    from .export import merge_lora
    from .model import load_for_inference
    from .sft import run_sft

    timings: dict[str, float] = {}
    start = time.perf_counter()
    rows = train_rows or DEFAULT_TRAIN_ROWS
    data_seed = 42
    # The run folder exists only once training starts: the answers before it wait here, then move into it.
    staging = Path(tempfile.mkdtemp(prefix="mathtune-quickstart-"))

    mark = time.perf_counter()
    base, tokenizer, description = load_for_inference(None, device="cpu")
    print(f"model: {description}")
    acc_before, before_rows = _answer(base, tokenizer, description, task, data_seed, staging / "before")
    _show(f"before fine-tuning: {acc_before:.0%} of {len(before_rows)} held-out questions right", before_rows)
    del base
    timings["answer before"] = time.perf_counter() - mark

    mark = time.perf_counter()
    cfg = RunConfig(
        lora=LoraArgs(lora_rank=16, lora_alpha=32),
        data=DataArgs(dataset=(f"rg:{task}#{rows}",), data_seed=data_seed, max_length=512, split_dataset_ratio=0.02),
        optim=OptimArgs(num_train_epochs=1, learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1,
                        warmup_ratio=0.05),
        run=RunArgs(output_dir=output_dir, logging_steps=2, save_steps=1000, eval_steps=1000),
        fast=FastArgs(gradient_checkpointing=False),
    )
    print(f"\nfine-tuning on rg:{task}#{rows} (held-out questions are never trained on) ...")
    try:
        result = run_sft(cfg)
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
    acc_after, after_rows = _answer(merged, tokenizer, merged_description, task, data_seed, eval_dir / "after")
    _show(f"after fine-tuning (merged model): {acc_after:.0%} of {len(after_rows)} right", after_rows)
    timings["answer after"] = time.perf_counter() - mark

    total = time.perf_counter() - start
    run_dir = Path(result.run_dir)
    print("\n== where everything is ==")
    print(
        f"run dir:        {run_dir}\nadapter:        {result.last_checkpoint}\nmerged model:   {merged_dir}\n"
        f"loss curve:     {run_dir / 'images' / 'train_loss.png'}\ntraining log:   {run_dir / 'logging.jsonl'}\n"
        f"predictions:    {eval_dir / 'before'} and {eval_dir / 'after'} (predictions.jsonl per benchmark)"
    )
    print(f"\naccuracy on {len(after_rows)} held-out rg:{task} questions: {acc_before:.0%} -> {acc_after:.0%}")
    # Some tasks have skewed answers (syllogism: mostly Yes); say what always giving the commonest answer would score.
    gold, count = Counter(row["gold"] for row in after_rows).most_common(1)[0]
    print(f"(always answering '{gold}' would score {count / len(after_rows):.0%})")
    print("timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    print(f"next: mathtune infer --ckpt_dir {merged_dir}")
    return 0
