"""`mathtune quickstart`: the tutorial's whole workflow on the embedded model and built-in data, offline, on a CPU.

Answers held-out questions, fine-tunes with LoRA, merges, answers them again with the merged model, draws the loss
curve, and prints where everything is and how long each stage took.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .config import LoraArgs, RunConfig, TrainArgs
from .data.config import DataArgs

DEFAULT_TASK = "syllogism"
EVAL_QUESTIONS = 40
SHOWN = 4
DEFAULT_TRAIN_ROWS = 320


def _accuracy(model, tokenizer, benchmark, items) -> tuple[float, list[str], list]:
    from .evaluate.grading import grade
    from .generate import generate

    prompts = [[{"role": "user", "content": benchmark.prompt.format(question=item.question)}] for item in items]
    outputs = [o[0] for o in generate(model, tokenizer, prompts, max_new_tokens=96, batch_size=8, progress=False)]
    verdicts = [
        grade(out, item, benchmark.checker, benchmark.language) for out, item in zip(outputs, items, strict=True)
    ]
    return sum(v.correct for v in verdicts) / len(items), outputs, verdicts


def _show(title: str, items, outputs, verdicts) -> None:
    print(f"\n== {title} ==")
    for item, out, verdict in list(zip(items, outputs, verdicts, strict=True))[:SHOWN]:
        answer = " ".join(out.split())
        print(
            f"Q: {item.question.strip()[:160]}\n   model: {answer[:160]}\n   gold: {item.gold}   "
            f"{'right' if verdict.correct else 'wrong'}"
        )


def run_quickstart(output_dir: str = "output", train_rows: int | None = None, task: str = DEFAULT_TASK) -> int:
    from .evaluate.benchmarks import get_benchmark
    from .export import merge_lora
    from .model import load_for_inference
    from .sft import run_sft

    timings: dict[str, float] = {}
    start = time.perf_counter()
    rows = train_rows or DEFAULT_TRAIN_ROWS
    data_seed = 42
    benchmark = get_benchmark(f"rg:{task}", data_seed=data_seed)
    items = benchmark.load(limit=EVAL_QUESTIONS)

    mark = time.perf_counter()
    base, tokenizer, description = load_for_inference(None, device="cpu")
    print(f"model: {description}")
    acc_before, outputs, verdicts = _accuracy(base, tokenizer, benchmark, items)
    _show(f"before fine-tuning: {acc_before:.0%} of {len(items)} held-out questions right", items, outputs, verdicts)
    del base
    timings["answer before"] = time.perf_counter() - mark

    mark = time.perf_counter()
    cfg = RunConfig(
        lora=LoraArgs(lora_rank=16, lora_alpha=32),
        data=DataArgs(dataset=(f"rg:{task}#{rows}",), data_seed=data_seed, max_length=512, split_dataset_ratio=0.02),
        train=TrainArgs(
            output_dir=output_dir,
            num_train_epochs=1,
            learning_rate=1e-3,
            batch_size=8,
            gradient_accumulation_steps=1,
            logging_steps=2,
            save_steps=1000,
            eval_steps=1000,
            gradient_checkpointing=False,
            warmup_ratio=0.05,
        ),
    )
    print(f"\nfine-tuning on rg:{task}#{rows} (held-out questions are never trained on) ...")
    result = run_sft(cfg)
    timings["fine-tune"] = time.perf_counter() - mark
    if result.interrupted:  # Ctrl-C: run_sft saved a checkpoint and said how to resume; skip merging and answering
        return 130

    mark = time.perf_counter()
    merged_dir = merge_lora(result.last_checkpoint)
    timings["merge"] = time.perf_counter() - mark

    mark = time.perf_counter()
    merged, tokenizer, _ = load_for_inference(str(merged_dir), device="cpu")
    acc_after, outputs, verdicts = _accuracy(merged, tokenizer, benchmark, items)
    _show(f"after fine-tuning (merged model): {acc_after:.0%} of {len(items)} right", items, outputs, verdicts)
    timings["answer after"] = time.perf_counter() - mark

    total = time.perf_counter() - start
    run_dir = Path(result.run_dir)
    print("\n== where everything is ==")
    print(
        f"run dir:        {run_dir}\nadapter:        {result.last_checkpoint}\nmerged model:   {merged_dir}\n"
        f"loss curve:     {run_dir / 'images' / 'train_loss.png'}\ntraining log:   {run_dir / 'logging.jsonl'}"
    )
    print(f"\naccuracy on {len(items)} held-out rg:{task} questions: {acc_before:.0%} -> {acc_after:.0%}")
    # Some tasks have skewed answers (syllogism: mostly Yes); say what always giving the commonest answer would score.
    gold, count = Counter(item.gold for item in items).most_common(1)[0]
    print(f"(always answering '{gold}' would score {count / len(items):.0%})")
    print("timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    print(f"next: mathtune infer --ckpt_dir {merged_dir}")
    return 0
