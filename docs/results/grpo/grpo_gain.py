"""GRPO's gain on the embedded model over SFT alone (issue 14, "Gain"), in ONE GPU call.

An experiment record, not a tool. Stages in order, each appending one JSON line to --out as soon as it ends, so a
timeout keeps every finished stage:

  sft            the default recipe (configs/smollm2-135m-math.yaml, sweep2's `default` variant), or --sft_checkpoint
  eval_sft       rg:gsm-symbolic 200, rg:gsm-symbolic-unseen 200, rg:equations 100 (never trained on), CHAMP 100
  filter         (--filter_samples K) the SFT model samples K answers per GRPO question; only questions it gets right
                 sometimes but not always are kept (all of them if none is)
  grpo_sft       GRPO from the SFT checkpoint (merged; a fresh LoRA adapter), on seen-template questions SFT never saw
  eval_grpo_sft  the same benchmarks, then the paired difference GRPO - SFT per benchmark with its 95% interval
  grpo_base      (--from_base) GRPO straight from the base model, shorter, same settings
  eval_grpo_base

Training goes through mathtune's own entry points: sft through sweep2 (run_sft), GRPO through the code `mathtune
rlhf --rlhf_type grpo` runs (its flag parser, rl.cli.config_from, rl.grpo.run_grpo). Evaluation is sweep2's (one
batched call of mathtune's Generator, greedy, 512 new tokens, data seed 42, mathtune's grader), so the figures compare
with docs/results/recipe_sweep. A training run stops at its deadline after its current step and saves a checkpoint,
as Ctrl-C does (sweep2.stop_at); it is then answered as it is.

GRPO's questions: rg:gsm-symbolic's training stream (seen templates only; the held-out ones never enter it, tests/rl/
test_prompt_split.py), rows 6000.. of it, i.e. the ones after those the SFT recipe trained on (rg:gsm-symbolic#6000),
written to a local file with their gold answers (same prompt text, same `math` checker as rg:gsm-symbolic's).

Settings (flags; defaults and why):
  --learning_rate 1e-4, constant: LoRA wants about 10x full fine-tuning's rate (Thinking Machines' "LoRA Without
      Regret"; TRL's replication of it ran GRPO with LoRA at 5e-5 on a 0.6B model); this model is smaller (hidden
      576), its SFT recipe's best LoRA rate was 5e-4, and a 4-minute run has only ~50 steps. Constant, because the
      number of steps is set by the clock, not known ahead.
  LoRA r16 alpha 32 on all linear layers (the SFT recipe's adapter shape), dropout 0: the policy that samples is the
      one the loss scores (peft's dropout would make them differ).
  --num_generations 8, --prompts_per_step 16 (128 completions a step, micro-batches of 64): sampling is launch-bound
      on a 135M model, so 128 rows cost little more than 64 per decoding step, and 16 groups give a steadier step.
  --max_completion_length 320: the SFT replies these questions are trained on run to 267 tokens at most (p99 262,
      mean 105, SmolLM2 tokenizer, the first 2000 rows); the SFT model's answers average 108.
  --temperature 1.0, beta 0 (no reference pass; the LoRA adapter itself limits the drift), loss dapo (token mean over
      the step), scale_rewards group, one optimizer step per generation batch (so no ratio clipping happens):
      TRL's GRPO defaults.
  rewards accuracy + format, weights 1 and 1: accuracy is the goal; format (one final box) is already ~1 after SFT
      and gives the base model its first signal.

Time: each stage starts only if its predicted time fits what is left of --budget_s; predictions come from times
measured earlier in this call (answering: the SFT eval; GRPO's setup: the first GRPO stage) or, for what this call
has not measured yet, from recorded H200 figures named below. A stage that does not fit is one JSON line saying why.

GPU (from the repository root; the embedded model converted or convertible in $MATHTUNE_CACHE; checkpoints stay on
the machine; logging.jsonl, completions.jsonl, curves and predictions of each stage go to --keep_dir, tarred after
the run, which `timeout` ends early enough for the tar to run inside the call's 600 s):
  set -o pipefail; PYTHONUNBUFFERED=1 timeout 575 python docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl \
      --keep_dir /tmp/grpo_keep --work /tmp/grpo_work 2>&1 | tee $OUT/grpo_gain.log; \
      tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep
One GRPO run longer than a call (a call lasts 600 s at most): run the same command in consecutive calls on a warm
machine with --resume in all but the first (the run continues from the checkpoint its deadline saved, sampling RNG
included) and --no-answer in all but the last.
CPU proof of the same code path (tiny counts, a few minutes on 2 cores):
  python docs/results/grpo/grpo_gain.py --smoke --out /tmp/grpo_smoke/out.jsonl --work /tmp/grpo_smoke/work
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "docs" / "results" / "recipe_sweep"))
import sweep2  # noqa: E402  (its START is this script's start: imported first)
from sweep2 import emit, free_memory, load_and_evaluate, log  # noqa: E402

# Recorded on one H200 (sweep2_h200_20261202.jsonl): answering the 600 questions with the base model took 61.4 s (its
# replies run to the 512-token limit); a GRPO run from the base is predicted to answer as slowly until measured.
BASE_EVAL_S = 61.4
GRPO_SETUP_S = 20.0  # loading, merging the SFT adapter and writing base-merged/, before the first GRPO stage ran
MARGIN_S = 10.0  # the step that passes a deadline still finishes, then the checkpoint is written


# ---- settings -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per stage (appended)")
    p.add_argument("--work", type=Path, default=Path("/tmp/grpo_gain"), help="run folders (checkpoints)")
    p.add_argument("--keep_dir", type=Path, default=None,
                   help="what is kept of each stage: predictions, logging.jsonl, completions.jsonl, curves "
                        "(default: grpo_gain_files beside --out); must be new or empty")
    p.add_argument("--budget_s", type=float, default=540)
    p.add_argument("--sft_checkpoint", default=None, help="start from this sft checkpoint instead of training one")
    p.add_argument("--from_base", action=argparse.BooleanOptionalAction, default=True,
                   help="also GRPO straight from the base model, if its predicted time fits")
    p.add_argument("--champ", action=argparse.BooleanOptionalAction, default=True, help="answer CHAMP 100 too")
    p.add_argument("--sft_max_s", type=float, default=150, help="SFT training stops after this many seconds")
    p.add_argument("--grpo_max_s", type=float, default=200, help="GRPO from SFT: training seconds at most")
    p.add_argument("--base_max_s", type=float, default=90, help="GRPO from the base: training seconds at most")
    p.add_argument("--min_train_s", type=float, default=20, help="skip a GRPO stage with less training time left")
    p.add_argument("--grpo_questions", type=int, default=2000, help="questions after SFT's rows (one epoch > budget)")
    p.add_argument("--sft_gsm_rows", type=int, default=None,
                   help="rg:gsm-symbolic rows the SFT model trained on, skipped for GRPO's questions (default: the "
                        "config file's count; give it with an --sft_checkpoint of another recipe)")
    p.add_argument("--replay_sft_rows", type=int, default=0,
                   help="N > 0: GRPO's questions also take the last N rows SFT trained on (rg:gsm-symbolic "
                        "yields 51,798 distinct seen-template questions at seed 42: a long run needs more than the "
                        "fresh ones)")
    p.add_argument("--filter_samples", type=int, default=0,
                   help="K > 0: sample K answers per question with the SFT model first and keep only questions it "
                        "gets right sometimes but not always (0 < right < K): the others give GRPO no signal")
    p.add_argument("--epochs", type=int, default=1, help="GRPO passes over its (filtered) questions")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--prompts_per_step", type=int, default=16)
    p.add_argument("--micro_batch", type=int, default=64, help="completions per forward/backward")
    p.add_argument("--max_completion_length", type=int, default=320)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--loss_type", default="dapo")
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--dynamic_sample", action="store_true",
                   help="mathtune rlhf --dynamic_sample: replace zero-variance groups by fresh ones from the pool")
    p.add_argument("--max_resample_times", type=int, default=3, help="with --dynamic_sample (ms-swift's default 3)")
    p.add_argument("--lora_rank", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=32)
    p.add_argument("--resume", action="store_true",
                   help="continue the GRPO run of an earlier call in --work and --keep_dir (rlhf's "
                        "--resume_from_checkpoint auto): one GRPO run can then span several calls")
    p.add_argument("--answer", action=argparse.BooleanOptionalAction, default=True,
                   help="answer the benchmarks (SFT's, GRPO's, their paired differences); --no-answer in every "
                        "call of a multi-call run but its last")
    p.add_argument("--smoke", action="store_true", help="tiny counts on the same code path (a CPU check)")
    args = p.parse_args(argv)
    args.keep_dir = args.keep_dir or args.out.parent / "grpo_gain_files"
    args.max_new_tokens = sweep2.MAX_NEW_TOKENS
    args.max_steps = None
    if args.smoke:
        args.max_new_tokens, args.grpo_questions, args.num_generations, args.prompts_per_step = 8, 8, 4, 2
        args.micro_batch, args.max_completion_length, args.max_steps = 8, 16, 3
        args.sft_max_s, args.grpo_max_s, args.base_max_s, args.min_train_s = 60, 20, 15, 5
        args.budget_s = max(args.budget_s, 1800)
    per_step = args.prompts_per_step * args.num_generations
    if per_step % min(args.micro_batch, per_step):  # said before any GPU time is spent, not at the GRPO stage
        p.error(f"--prompts_per_step x --num_generations ({per_step}) must be a multiple of --micro_batch")
    return args


def limits_of(args) -> dict[str, int]:
    limits = {k: v for k, v in sweep2.BENCHMARKS.items() if args.champ or k != "champ"}
    return {k: 2 for k in limits} if args.smoke else limits


def grpo_argv(args, start: str | None, output_dir: Path, questions: Path) -> list[str]:
    """`mathtune rlhf` flags for one GRPO stage (start: an sft checkpoint, or None for the embedded base model)."""
    per_step = args.prompts_per_step * args.num_generations
    micro = min(args.micro_batch, per_step)
    argv = ["rlhf", "--rlhf_type", "grpo", "--dataset", str(questions), "--output_dir", str(output_dir),
            "--reward_funcs", "accuracy", "format", "--num_generations", str(args.num_generations),
            "--max_completion_length", str(args.max_completion_length), "--temperature", str(args.temperature),
            "--beta", str(args.beta), "--loss_type", args.loss_type, "--learning_rate", str(args.learning_rate),
            "--lr_scheduler_type", "constant", "--batch_size", str(micro),
            "--gradient_accumulation_steps", str(per_step // micro), "--num_train_epochs", str(args.epochs),
            "--sft_type", "lora", "--lora_rank", str(args.lora_rank), "--lora_alpha", str(args.lora_alpha),
            "--lora_dropout", "0", "--target_modules", "all-linear", "--gradient_checkpointing", "false",
            "--use_liger_kernel", "false", "--logging_steps", "1", "--log_completions_steps", "5",
            "--save_steps", "100000", "--save_total_limit", "1", "--seed", "42",
            "--data_seed", str(sweep2.DATA_SEED), "--nan_policy", "skip"]
    if args.dynamic_sample:
        argv += ["--dynamic_sample", "true", "--max_resample_times", str(args.max_resample_times)]
    if args.max_steps:
        argv += ["--max_steps", str(args.max_steps)]
    if args.resume:
        argv += ["--resume_from_checkpoint", "auto"]
    return argv + (["--ckpt_dir", start] if start else [])


# ---- stages -------------------------------------------------------------------------------------------------------


def write_questions(path: Path, skip: int, n: int) -> dict[str, Any]:
    """GRPO's questions: rows skip..skip+n of rg:gsm-symbolic's training stream (seed 42), as {question, answer}
    rows whose question is the rg prompt itself; the rows before `skip` are those the SFT recipe trained on."""
    from mathtune.data import generators

    rows = generators.generate("gsm-symbolic", skip + n, sweep2.DATA_SEED)[skip:]
    lines = []
    for row in rows:
        entry = generators.train_entry(row.origin, sweep2.DATA_SEED)
        lines.append(json.dumps({"question": row.messages[0]["content"],
                                 "answer": generators.task_gold("gsm-symbolic", entry), "origin": row.origin}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"questions": len(lines), "first_origin": rows[0].origin, "skipped_sft_rows": skip}


def sft_rows(config: dict[str, Any]) -> int:
    """How many rg:gsm-symbolic rows the SFT recipe trains on (its `#N`)."""
    for spec in config["dataset"]:
        name, _, count = spec.rpartition("#")
        if name == "rg:gsm-symbolic":
            return int(count)
    return 0


def filter_stage(args, sft: str, questions: Path) -> tuple[Path, dict[str, Any]]:
    """Keep the questions the SFT model answers right in some but not all of --filter_samples samples (at GRPO's
    temperature and length): a group whose rewards are all equal has no advantage and teaches nothing (66-73% of the
    groups of the 2026-12-03 run). Writes the kept rows beside `questions`; the record has the pass-count histogram."""
    from collections import Counter

    from mathtune.generate import Generator, Sampling
    from mathtune.rl.prompts import load_prompts
    from mathtune.rl.rewards import accuracy

    k = args.filter_samples
    started = time.perf_counter()
    prompts = load_prompts([str(questions)], seed=sweep2.DATA_SEED)
    model, tokenizer = sweep2.load_merged(sft)
    try:
        sampling = Sampling(max_new_tokens=args.max_completion_length, temperature=args.temperature, n=k, seed=7)
        outputs = Generator(model, tokenizer).generate([list(p.messages) for p in prompts], sampling,
                                                       batch_size=max(1, 1024 // k), progress=False)
    finally:
        del model
        free_memory()
    rights = [int(sum(accuracy(replies, [prompt] * k))) for replies, prompt in zip(outputs, prompts, strict=True)]
    lines = questions.read_text().splitlines()
    kept = [line for line, right in zip(lines, rights, strict=True) if 0 < right < k]
    filtered = questions.with_name("grpo_questions_filtered.jsonl")
    if kept:
        filtered.write_text("\n".join(kept) + "\n")
    record = {"stage": "filter", "status": "ok", "candidates": len(lines), "kept": len(kept), "samples": k,
              "right_histogram": dict(sorted(Counter(rights).items())),
              "sampled_accuracy": round(sum(rights) / (k * len(rights)), 4),
              "filter_s": round(time.perf_counter() - started, 1)}
    return (filtered if kept else questions), record


def sft_stage(args) -> tuple[str | None, dict[str, Any]]:
    if args.sft_checkpoint:
        return args.sft_checkpoint, {"stage": "sft", "status": "given", "checkpoint": args.sft_checkpoint}
    cfg = sweep2.build_config({}, args.work / "runs" / "sft", args.smoke)
    log(f"sft: training (at most {args.sft_max_s:.0f} s)")
    started = time.perf_counter()
    result, train_s, stopped = sweep2.train(cfg, deadline=started + args.sft_max_s)
    return str(result.last_checkpoint), {
        "stage": "sft", "status": "ok", "dataset": list(cfg.data.dataset), "train_s": round(train_s, 1),
        "stopped_at_step": stopped, **sweep2.train_figures(result), "checkpoint": str(result.last_checkpoint)}


def eval_stage(name: str, checkpoint: str, args, limits, timing: dict[str, float]) -> dict[str, Any]:
    started = time.perf_counter()
    results = load_and_evaluate(checkpoint, limits, args.keep_dir / "eval" / name, args.max_new_tokens)
    eval_s = time.perf_counter() - started
    timing[f"eval_s:{name}"] = eval_s
    return {"stage": f"eval_{name}", "status": "ok", "checkpoint": checkpoint, "eval_s": round(eval_s, 1),
            "results": results}


def predicted_eval_s(name: str, args, timing: dict[str, float]) -> float:
    """Answering after GRPO: as the SFT model's (measured), or as the base model's (recorded) for a run from the
    base, until this call has measured one; sweep2's margin (x1.2 + 10 s) on top."""
    measured = timing.get("eval_s:grpo_base" if name == "grpo_base" else "eval_s:sft")
    if measured is None:
        measured = timing.get("eval_s:sft", 0.0) if args.smoke else BASE_EVAL_S
    if name == "grpo_base" and not args.smoke:
        measured = max(measured, BASE_EVAL_S)
    return measured * 1.2 + 10


def grpo_stage(name: str, start: str | None, cap_s: float, args, questions: Path, timing) -> tuple[str | None, dict]:
    """One GRPO run within its share of the time left: (its last checkpoint or None when skipped, its record)."""
    left = args.budget_s - (time.perf_counter() - sweep2.START)
    setup_s = timing.get("grpo_setup_s", 0.0 if args.smoke else GRPO_SETUP_S)
    eval_s = predicted_eval_s(name, args, timing) if args.answer else 0.0
    share = min(cap_s, left - setup_s - eval_s - MARGIN_S)
    if share < args.min_train_s:
        return None, {"stage": name, "status": "skipped", "why": f"{left:.0f} s left; setup {setup_s:.0f} s, "
                      f"answering {eval_s:.0f} s and margin {MARGIN_S:.0f} s predicted: {share:.0f} s for training, "
                      f"under --min_train_s {args.min_train_s:.0f}"}
    from mathtune.cli import build_parser
    from mathtune.rl.cli import config_from
    from mathtune.rl.grpo import run_grpo

    argv = grpo_argv(args, start, args.work / "runs" / name, questions)
    cfg = config_from(build_parser("rlhf").parse_args(argv))
    log(f"{name}: GRPO (training share {share:.0f} s) from {start or 'the base model'}")
    started = time.perf_counter()
    with sweep2.stop_at(started + setup_s + share):
        result = run_grpo(cfg, progress=False)
    stage_s = time.perf_counter() - started
    figures = grpo_figures(Path(result.run_dir))
    timing["grpo_setup_s"] = max(0.0, stage_s - figures.get("train_loop_s", 0.0))
    kept = keep_run_files(Path(result.run_dir), args.keep_dir / name)
    return str(result.last_checkpoint), {
        "stage": name, "status": "ok", "start": start or "base", "argv": argv, "stage_s": round(stage_s, 1),
        "share_s": round(share, 1), "stopped_by_time": result.interrupted, **figures,
        "checkpoint": str(result.last_checkpoint), "kept": kept}


def grpo_figures(run_dir: Path) -> dict[str, Any]:
    """Steps, the first and last five steps' reward and accuracy, and the measured speed, from logging.jsonl."""
    log_file = run_dir / "logging.jsonl"
    rows = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    if not rows:
        return {"steps": 0}

    def mean(key: str, part: list[dict]) -> float | None:
        values = [r[key] for r in part if isinstance(r.get(key), (int, float))]
        return round(sum(values) / len(values), 4) if values else None

    head, tail = rows[:5], rows[-5:]
    return {"steps": rows[-1]["step"], "train_loop_s": round(sum(r.get("step_s") or 0 for r in rows), 1),
            "mean_step_s": mean("step_s", rows), "mean_generation_s": mean("generation_s", rows),
            "reward_first5": mean("reward", head), "reward_last5": mean("reward", tail),
            "accuracy_first5": mean("accuracy", head), "accuracy_last5": mean("accuracy", tail),
            "format_first5": mean("rewards/format", head), "format_last5": mean("rewards/format", tail),
            "completion_length_first5": mean("completion_length", head),
            "completion_length_last5": mean("completion_length", tail),
            "frac_reward_zero_std": mean("frac_reward_zero_std", rows),
            "skipped_steps": sum(1 for r in rows if r.get("skipped"))}


def keep_run_files(run_dir: Path, to: Path) -> list[str]:
    """Copy what is worth keeping of a GRPO run (its checkpoints stay on the machine)."""
    to.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in ("logging.jsonl", "completions.jsonl", "args.json", "images/grpo_curves.png",
                 "images/train_loss.png"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, to / Path(name).name)
            kept.append(name)
    return kept


def paired_differences(args, a: str, b: str) -> tuple[bool, dict[str, Any]]:
    """b - a per benchmark on the same questions, with Newcombe's paired 95% interval (mathtune.evaluate.report)."""
    from mathtune.evaluate.report import compare_runs

    rows = compare_runs(args.keep_dir / "eval" / a, args.keep_dir / "eval" / b)
    results = {c.benchmark: {"n": c.n, "a": c.accuracy_a, "b": c.accuracy_b, "diff": c.diff,
                             "ci": [c.diff_low, c.diff_high], "fixed": c.fixed, "broken": c.broken} for c in rows}
    return True, {"stage": f"diff_{b}_vs_{a}", "status": "ok", "results": results}


# ---- the call -----------------------------------------------------------------------------------------------------


def run_stage(args, name: str, fn, *fn_args) -> Any:
    """fn(*fn_args) -> (value, record); the record is emitted, a failure as an error record. The value, or None when
    the stage did not finish."""
    try:
        value, record = fn(*fn_args)
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: what finished is still worth reporting
        if isinstance(exc, SystemExit):
            raise
        value, record = None, {"stage": name, "status": "error", "error": repr(exc)[:500],
                               "traceback": traceback.format_exc()[-2000:]}
    free_memory()
    emit(args.out, record)
    return value if record.get("status") in ("ok", "given") else None


def answer(name: str, checkpoint: str, args, limits, timing) -> tuple[bool, dict[str, Any]]:
    return True, eval_stage(name, checkpoint, args, limits, timing)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_dir.exists() and any(args.keep_dir.iterdir()) and not args.resume:
        print(f"--keep_dir '{args.keep_dir}' is not empty; give a new folder (or --resume)", file=sys.stderr)
        return 2
    for folder in (args.out.parent, args.work, args.keep_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config, limits, timing = sweep2.load_config(), limits_of(args), {}
    questions = args.keep_dir / "grpo_questions.jsonl"
    skip = sft_rows(config) if args.sft_gsm_rows is None else args.sft_gsm_rows
    made = write_questions(questions, skip - args.replay_sft_rows, args.grpo_questions + args.replay_sft_rows)
    settings = {k: v for k, v in vars(args).items() if not isinstance(v, Path)}
    emit(args.out, {**sweep2.environment(args, config, limits), "stage": "environment", "settings": settings,
                    "grpo_data": made})
    sft = run_stage(args, "sft", sft_stage, args)
    answered = ["sft"] if sft and args.answer and run_stage(args, "eval_sft", answer, "sft", sft, args, limits,
                                                             timing) else []
    filtered = questions.with_name("grpo_questions_filtered.jsonl")
    if sft and args.filter_samples and args.resume and filtered.is_file():  # the earlier call's filter stands
        questions = filtered
    elif sft and args.filter_samples:
        questions = run_stage(args, "filter", filter_stage, args, sft, questions) or questions
    stages = [("grpo_sft", sft, args.grpo_max_s)] if sft else []
    stages += [("grpo_base", None, args.base_max_s)] if args.from_base else []
    for name, start, cap in stages:
        checkpoint = run_stage(args, name, grpo_stage, name, start, cap, args, questions, timing)
        if not (checkpoint and args.answer):
            continue
        if run_stage(args, f"eval_{name}", answer, name, checkpoint, args, limits, timing):
            answered.append(name)
    if answered[:1] == ["sft"]:
        for name in answered[1:]:
            run_stage(args, f"diff_{name}_vs_sft", paired_differences, args, "sft", name)
    print(markdown_table(args.out), flush=True)
    log("done")
    return 0


def _cell(got: dict[str, Any] | None) -> str:
    if not got or "ci" not in got:
        return "-"
    return f"{got['accuracy']:.1%} [{got['ci'][0]:.1%}, {got['ci'][1]:.1%}]"


def markdown_table(out: Path) -> str:
    """Accuracy [95% CI] per stage and benchmark, the commonest-answer baseline, and the paired differences."""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    trained = {r["stage"]: r for r in records if r.get("status") == "ok" and "steps" in r}
    evals = [r for r in records if r.get("stage", "").startswith("eval_") and r.get("status") == "ok"]
    names = list(evals[0]["results"]) if evals else list(sweep2.BENCHMARKS)
    lines = ["| stage | steps | training s | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    for r in evals:
        stage = r["stage"][len("eval_"):]
        t = trained.get(stage, {})
        steps = f"{t.get('steps', '-')}{' (time)' if t.get('stopped_by_time') or t.get('stopped_at_step') else ''}"
        seconds = t.get("train_s", t.get("train_loop_s", "-"))
        lines.append(f"| {stage} | {steps} | {seconds} | " + " | ".join(_cell(r["results"].get(n)) for n in names)
                     + " |")
    if evals:
        common = [evals[0]["results"].get(n, {}).get("commonest_gold") for n in names]
        lines.append("| commonest answer | | | " + " | ".join("-" if c is None else f"{c:.1%}" for c in common) + " |")
    for r in records:
        if r.get("stage", "").startswith("diff_") and r.get("status") == "ok":
            cells = [r["results"].get(n) for n in names]
            lines.append(f"| {r['stage'][len('diff_'):].replace('_vs_', ' - ')} (paired) | | | " + " | ".join(
                "-" if c is None else f"{100 * c['diff']:+.1f} [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]"
                for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
