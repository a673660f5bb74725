"""Recipe and quickstart-task sweep on one GPU (the gain issue, 2026-12-02). An experiment record, not a tool.

Ran against mathtune commit 6d33ca1 (its Python API: RunConfig/TrainArgs, run_sft, generate, grading), put on
PYTHONPATH from a worktree of that commit. Two parts, each appending one JSON line per variant to --out:

  tasks: for each candidate reasoning-gym task, train the quickstart recipe on N rows with short replies
         ("The answer is \\boxed{A}.") and answer 100 held-out questions before and after (rg's own checker), with
         the score of always giving the commonest gold answer. Picks a task for the CPU quickstart.
  gsm:   gsm_symbolic with a template split: templates whose id % 5 == 0 are held out. Training rows come from the
         other templates only; 'seen' = new questions of trained templates, 'unseen' = held-out templates. Variants
         of the recipe are trained in turn, each evaluated on both splits (greedy, 512 new tokens).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

PROMPT = "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."

# task -> reasoning-gym config overrides (kept small so a 135M model on a CPU can learn it in minutes)
TASKS = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1},
    "leg_counting": {"min_animals": 1, "max_animals": 2, "max_instances": 3},
    "simple_geometry": {},
    "family_relationships": {},
    "number_sequence": {},
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "needle_haystack": {},
}


def rg_items(name: str, seed: int, n: int, config: dict, exclude: set[str] | None = None):
    import reasoning_gym

    ds = reasoning_gym.create_dataset(name, seed=seed, size=max(4 * n, 2000), **config)
    out, seen = [], set(exclude or ())
    for i in range(len(ds)):
        e = ds[i]
        if e["question"] in seen:
            continue
        seen.add(e["question"])
        out.append(e)
        if len(out) == n:
            break
    return ds, out


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w") as f:
        for q, r in rows:
            f.write(json.dumps({"query": PROMPT.format(question=q), "response": r}) + "\n")


def answer(model, tok, questions, max_new_tokens, batch_size=256):
    from mathtune.generate import generate

    convs = [[{"role": "user", "content": PROMPT.format(question=q)}] for q in questions]
    return [o[0] for o in generate(model, tok, convs, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   progress=False)]


def score_rg(ds, entries, outputs):
    from mathtune.evaluate.grading import extract_answer

    right = 0
    for e, o in zip(entries, outputs, strict=True):
        got = extract_answer(o)
        try:
            right += ds.score_answer(got, e) >= 1.0 if got is not None else 0
        except Exception:
            pass
    return right / len(entries)


def score_math(golds, outputs):
    from mathtune.evaluate.grading import extract_answer, verify

    return sum(verify(g, extract_answer(o)) for g, o in zip(golds, outputs, strict=True)) / len(golds)


def train(train_file: Path, out_dir: Path, **kw):
    from mathtune.config import LoraArgs, RunConfig, TrainArgs
    from mathtune.data.config import DataArgs
    from mathtune.sft import run_sft

    lora = kw.pop("lora", {})
    data = kw.pop("data", {})
    cfg = RunConfig(lora=LoraArgs(**lora),
                    data=DataArgs(dataset=(str(train_file),), max_length=1024, split_dataset_ratio=0.01, **data),
                    train=TrainArgs(output_dir=str(out_dir), save_steps=100000, eval_steps=100000,
                                    logging_steps=10, **kw))
    start = time.perf_counter()
    result = run_sft(cfg, progress=False)
    return result, time.perf_counter() - start


def load(path: str | None):
    from mathtune.model import load_for_inference

    model, tok, _ = load_for_inference(path)
    return model, tok


def emit(out: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")


def part_tasks(args, work: Path) -> None:
    base, tok = load(None)
    for name in args.tasks:
        config = TASKS[name]
        try:
            ds, test = rg_items(name, 1001, 100, config)
            _, train_entries = rg_items(name, 7, args.rows, config, exclude={e["question"] for e in test})
        except Exception as exc:  # a task this reasoning-gym lacks or a bad config
            emit(args.out, {"part": "tasks", "task": name, "error": str(exc)[:200]})
            continue
        gold, count = Counter(str(e["answer"]) for e in test).most_common(1)[0]
        before = score_rg(ds, test, answer(base, tok, [e["question"] for e in test], 64))
        f = work / f"{name}.jsonl"
        write_rows(f, [(e["question"], f"The answer is \\boxed{{{e['answer']}}}.") for e in train_entries])
        result, secs = train(f, work / "runs", lora={"lora_rank": 16, "lora_alpha": 32}, num_train_epochs=1,
                             learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1,
                             gradient_checkpointing=False, warmup_ratio=0.05)
        tuned, _ = load(str(result.last_checkpoint))
        outputs = answer(tuned, tok, [e["question"] for e in test], 64)
        after = score_rg(ds, test, outputs)
        emit(args.out, {"part": "tasks", "task": name, "config": config, "rows": args.rows, "before": before,
                        "after": after, "majority": count / len(test), "majority_answer": gold,
                        "train_s": round(secs, 1), "final_loss": result.final_loss, "sample": outputs[:3]})
        del tuned


def gsm_split(seed_train: int, seed_eval: int, rows: int, n_eval: int):
    import reasoning_gym

    sys.path.insert(0, str(Path(__file__).parent))
    from mathtune.data.generators import _gsm_response

    key = lambda e: " ".join(re.findall(r"\d+", e["question"]))  # noqa: E731  (generators' gsm key)
    ev = reasoning_gym.create_dataset("gsm_symbolic", seed=seed_eval, size=20000)
    seen, unseen, keys = [], [], set()
    for i in range(len(ev)):
        e = ev[i]
        k = key(e)
        if k in keys:
            continue
        keys.add(k)
        (unseen if ev.task_indices[i] % 5 == 0 else seen).append(e)
        if len(seen) >= n_eval and len(unseen) >= n_eval:
            break
    seen, unseen = seen[:n_eval], unseen[:n_eval]
    tr = reasoning_gym.create_dataset("gsm_symbolic", seed=seed_train, size=100000)
    train_rows = []
    for i in range(len(tr)):
        if tr.task_indices[i] % 5 == 0:
            continue
        e = tr[i]
        k = key(e)
        if k in keys:
            continue
        keys.add(k)
        train_rows.append((e["question"], _gsm_response(e)))
        if len(train_rows) == rows:
            break
    return seen, unseen, train_rows


def extra_rows(n_each: int) -> list[tuple[str, str]]:
    """Rows of other built-in tasks (their own worked replies), for the diversity variant."""
    from mathtune.data.generators import generate

    rows = []
    for task in ("arithmetic", "equations", "fractions"):
        for conv in generate(task, n_each, 42):
            q = conv.messages[0]["content"].rsplit("\n\nPlease reason", 1)[0]
            rows.append((q, conv.messages[1]["content"]))
    return rows


VARIANTS = {
    # name: (gsm rows, extra rows per other task, epochs, train kwargs)
    "lora_r16_lr5e-4": (6000, 0, 1, {"lora": {"lora_rank": 16, "lora_alpha": 32}, "learning_rate": 5e-4,
                                     "batch_size": 16, "gradient_accumulation_steps": 1, "packing_length": 32768}),
    "full_lr1e-4": (6000, 0, 1, {"lora": {"sft_type": "full"}, "learning_rate": 1e-4, "batch_size": 16,
                                 "gradient_accumulation_steps": 1, "packing_length": 32768}),
    "full_lr1e-4_mix": (6000, 1000, 1, {"lora": {"sft_type": "full"}, "learning_rate": 1e-4, "batch_size": 16,
                                        "gradient_accumulation_steps": 1, "packing_length": 32768}),
    "tutorial": (6000, 0, 1, {"lora": {"lora_rank": 8, "lora_alpha": 32,
                                       "target_modules": ("q_proj", "k_proj", "v_proj")},
                              "learning_rate": 1e-4, "batch_size": 1, "gradient_accumulation_steps": 16,
                              "lr_scheduler_type": "linear", "warmup_ratio": 0.05}),
    "lora_r16_lr5e-4_mix": (6000, 1000, 1, {"lora": {"lora_rank": 16, "lora_alpha": 32}, "learning_rate": 5e-4,
                                         "batch_size": 16, "gradient_accumulation_steps": 1,
                                         "packing_length": 32768}),
    "full_lr1e-4_2ep": (6000, 0, 2, {"lora": {"sft_type": "full"}, "learning_rate": 1e-4, "batch_size": 16,
                                     "gradient_accumulation_steps": 1, "packing_length": 32768}),
}


def part_gsm(args, work: Path) -> None:
    seen, unseen, rows = gsm_split(7, 1001, 12000, args.n_eval)
    qs = [e["question"] for e in seen] + [e["question"] for e in unseen]
    golds = [str(e["answer"]) for e in seen] + [str(e["answer"]) for e in unseen]
    n = len(seen)
    base, tok = load(None)
    out = answer(base, tok, qs, 512)
    emit(args.out, {"part": "gsm", "variant": "base", "seen": score_math(golds[:n], out[:n]),
                    "unseen": score_math(golds[n:], out[n:]), "n": n})
    del base
    extra = None
    for name in args.variants:
        if time.perf_counter() - START > args.budget_s:
            emit(args.out, {"part": "gsm", "variant": name, "skipped": "time budget"})
            continue
        gsm_rows, per_task, epochs, kw = VARIANTS[name]
        train_rows = rows[:gsm_rows]
        if per_task:
            extra = extra if extra is not None else extra_rows(per_task)
            train_rows = train_rows + extra
        f = work / f"gsm_{name}.jsonl"
        write_rows(f, train_rows)
        result, secs = train(f, work / "runs", num_train_epochs=epochs, **dict(kw))
        tuned, _ = load(str(result.last_checkpoint))
        o = answer(tuned, tok, qs, 512)
        emit(args.out, {"part": "gsm", "variant": name, "rows": len(train_rows), "epochs": epochs,
                        "seen": score_math(golds[:n], o[:n]), "unseen": score_math(golds[n:], o[n:]), "n": n,
                        "train_s": round(secs, 1), "final_loss": result.final_loss,
                        "sample_unseen": o[n:n + 2]})
        del tuned


START = time.perf_counter()

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("part", choices=("tasks", "gsm"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/sweep"))
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--n_eval", type=int, default=200)
    p.add_argument("--budget_s", type=float, default=480)
    a = p.parse_args()
    random.seed(0)
    a.work.mkdir(parents=True, exist_ok=True)
    (part_tasks if a.part == "tasks" else part_gsm)(a, a.work)
