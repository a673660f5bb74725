"""Recipe sweep for the embedded model on GSM-style problems, seen and unseen templates (issue 13), in ONE GPU call.

An experiment record, not a tool. Runs variants in priority order within --budget_s and appends one JSON line per
variant to --out as soon as it is done, so a timeout keeps every finished variant:

  base       the untrained model
  default    configs/smollm2-135m-math.yaml as it stands (`mathtune quickstart` on CUDA runs it for 1 epoch)
  tutorial   the tutorial's settings on the same data: LoRA r8 alpha 32 on q/k/v, lr 1e-4, 16 rows per optimizer
             step, linear schedule, warmup 0.05, 1 epoch
  gsm_only   the default without the mixed-in arithmetic tasks (what diversity adds)
  full_fp32  full fine-tuning at lr 3e-5 with fp32 weights (the earlier full run at 1e-4 was pure bf16, where
             AdamW steps smaller than a weight's bf16 spacing round away). fp32 has no flash kernel: packed rows run
             SDPA row by row (since 2dbb188; before, a dense L x L mask made it impractical), at about 7,800 tok/s
             on an H200: 10 minutes cover under a third of one epoch
  1ep        the default for 1 epoch (the default of 2026-12-04's first session, measured as `b128_gsm48k`; what the
             CUDA quickstart trains)
  gsm18k     the default until 2026-12-04: 18,000 gsm-symbolic rows, 32 rows a step (32k packs), lr 5e-4, 1 epoch
             (measured as `rows3x` on 2026-12-03, when 6,000 rows were the default and rows2x/rows3x scaled it)
  b128       gsm18k's data in steps of 128 rows (one 64k-token pack) at lr 1e-3 (twice the rate for four times the
             batch, the square-root rule): a 135M model's step is launch-bound, so a step of 128 rows costs little
             more than one of 32 (docs/benchmarks.md: 74,627 useful tok/s at 32 rows a step, 115,491 at 256)
The default since 2026-12-04 is b128 with 48,000 gsm-symbolic rows (measured as `b128_gsm48k`), and since that day's
second session for 2 epochs (measured as `2ep`): more rows, then more passes, in the same time. More rows would not be
new: the generator has 51,798 distinct questions of the 68 seen templates at seed 42.

Each trained variant goes through mathtune's own `run_sft` (packed fast path) and is then answered on rg:gsm-symbolic
(seen templates, 200), rg:gsm-symbolic-unseen (held-out templates, 200), rg:equations (never trained on, 100) and
CHAMP (100), greedy, at most 512 new tokens, graded by mathtune's grader; predictions.jsonl and summary.json of every
variant go to --eval_dir (beside --out by default), run folders to --work. Every benchmark's prompts go to the model
in one batched call of mathtune's Generator (its decoding loop, mathtune.decode: a static cache, finished rows leaving
the batch, CUDA graphs): a 135M model's step is launch-bound, so one batch of 600 costs about what one of 100 does.

Time: a variant starts only if its predicted time fits the budget left; a training run that would pass its share
stops after its current step and saves a checkpoint, as Ctrl-C does (recorded as `stopped_at_step`), and is answered
as it is. Each variant runs inside try/except: a failure is one JSON line and the sweep goes on.

GPU (from the repository root, embedded model converted or convertible in $MATHTUNE_CACHE; checkpoints stay on the
machine, predictions come back beside --out):
  PYTHONPATH=src python docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep2 --budget_s 540
CPU proof of the same code path (tiny counts, a few minutes on 2 cores):
  python docs/results/recipe_sweep/sweep2.py --smoke --out /tmp/sweep2_smoke.jsonl --work /tmp/sweep2_smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "smollm2-135m-math.yaml"
BENCHMARKS = {"rg:gsm-symbolic": 200, "rg:gsm-symbolic-unseen": 200, "rg:equations": 100, "champ": 100}
MAX_NEW_TOKENS = 512
DATA_SEED = 42
# Tutorial (ms-swift v2): LoRA r8 alpha 32 dropout 0.05 on q/k/v, lr 1e-4, batch 1 x accumulation 16, linear
# schedule, warmup 0.05, 1 epoch. Sixteen rows in one packed micro-batch is the same update as 1 x 16 under
# mathtune's token-weighted loss (ms-swift averages per-row means instead), at a sixteenth of the launches.
TUTORIAL = {"lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ("q_proj", "k_proj", "v_proj"),
            "learning_rate": 1e-4, "batch_size": 16, "gradient_accumulation_steps": 1, "lr_scheduler_type": "linear",
            "warmup_ratio": 0.05, "num_train_epochs": 1}


def variants(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides of the config file's options), in priority order."""
    dataset = list(config["dataset"])
    gsm = [d for d in dataset if d.startswith("rg:gsm-symbolic")]
    gsm18k = tuple("rg:gsm-symbolic#18000" if d in gsm else d for d in dataset)
    return [
        ("default", {}),
        ("tutorial", TUTORIAL),
        ("gsm_only", {"dataset": tuple(gsm)}),
        ("full_fp32", {"sft_type": "full", "dtype": "fp32", "learning_rate": 3e-5}),
        ("1ep", {"num_train_epochs": 1}),
        ("gsm18k", {"dataset": gsm18k, "batch_size": 32, "packing_length": 32768, "learning_rate": 5e-4,
                    "num_train_epochs": 1}),
        ("b128", {"dataset": gsm18k, "batch_size": 128, "packing_length": 65536, "learning_rate": 1e-3,
                  "num_train_epochs": 1}),
    ]


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f} s] {message}", flush=True)


def emit(out: Path, record: dict[str, Any]) -> None:
    record = {**record, "elapsed_s": round(time.perf_counter() - START, 1)}
    with out.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
    log("RESULT " + json.dumps(record, default=str))


def smoke_rows(dataset: list[str] | tuple[str, ...]) -> list[str]:
    """Every `#N` cut to a handful of rows (same sources, same code path)."""
    return [re.sub(r"#(\d+)$", lambda m: f"#{max(2, int(m.group(1)) // 1000)}", d) for d in dataset]


# ---- evaluation ---------------------------------------------------------------------------------------------------


def evaluate(model, tokenizer, limits: dict[str, int], out_dir: Path, max_new_tokens: int) -> dict[str, Any]:
    """Every benchmark's questions answered in one batched call, graded per benchmark; {name: figures}. A benchmark
    that cannot load (CHAMP's package missing, say) is recorded as an error and the others go on."""
    from mathtune.evaluate.benchmarks import resolve_benchmarks
    from mathtune.evaluate.runner import save_result, score_outputs
    from mathtune.generate import Generator, Sampling

    loaded, results = [], {}
    for name, bench in zip(limits, resolve_benchmarks(list(limits), data_seed=DATA_SEED), strict=True):
        try:
            items = bench.load(limit=limits[name], seed=DATA_SEED)
            loaded.append((name, bench, items, [bench.render(item.question) for item in items]))
        except Exception as exc:  # noqa: BLE001 - one benchmark's trouble must not cost the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    conversations = [[{"role": "user", "content": p}] for *_, prompts in loaded for p in prompts]
    outputs = Generator(model, tokenizer).generate(conversations, Sampling(max_new_tokens=max_new_tokens),
                                                   batch_size=max(1, len(conversations)), progress=False)
    summary: dict[str, Any] = {"model": "sweep2", "settings": {"max_new_tokens": max_new_tokens}, "benchmarks": {}}
    at = 0
    for name, bench, items, prompts in loaded:
        result = score_outputs(bench, items, outputs[at : at + len(items)], tokenizer, prompts)
        at += len(items)
        save_result(out_dir, summary, result)
        results[name] = {"n": result.n, "accuracy": result.accuracy, "ci": [result.ci_low, result.ci_high],
                         "right": round(result.accuracy * result.n), "unparsed": result.unparsed,
                         "mean_output_tokens": result.mean_output_tokens,
                         "commonest_gold": result.commonest_accuracy}  # the key of the records kept so far
    return results


def load_merged(checkpoint: str | None):
    """(model, tokenizer) of a checkpoint (None: the base model), a LoRA adapter merged in: LoRA layers add launches
    to every decoding step."""
    from mathtune.model import load_for_inference

    model, tokenizer, _ = load_for_inference(checkpoint)
    return (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model), tokenizer


def load_and_evaluate(checkpoint: str | None, limits, out_dir: Path, max_new_tokens: int) -> dict[str, Any]:
    model, tokenizer = load_merged(checkpoint)
    try:
        return evaluate(model, tokenizer, limits, out_dir, max_new_tokens)
    finally:
        del model
        free_memory()


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ---- training -----------------------------------------------------------------------------------------------------


def build_config(overrides: dict[str, Any], output_dir: Path, smoke: bool):
    """The config file, the variant's overrides on it (as flags would be), then what the sweep fixes: its own output
    folder, no evaluation or validation during training (the sweep evaluates), one checkpoint at the end."""
    from mathtune.config import build_config as from_file_and_flags

    values = {**overrides, "output_dir": str(output_dir), "eval_benchmarks": (), "split_dataset_ratio": 0.0,
              "save_steps": 100_000, "eval_steps": 100_000, "save_total_limit": 1, "data_seed": DATA_SEED}
    if smoke:
        values["dataset"] = smoke_rows(values.get("dataset") or load_config()["dataset"])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return from_file_and_flags(argparse.Namespace(config=str(CONFIG), **values))


def load_config() -> dict[str, Any]:
    from mathtune.config import load_yaml

    return load_yaml(str(CONFIG))


@contextlib.contextmanager
def stop_at(deadline: float) -> Iterator[None]:
    """Inside it, a training loop (sft's or GRPO's) that passes `deadline` stops after its step and saves a
    checkpoint, the path Ctrl-C takes: both loops ask their signal handler, a mathtune.signals.StopOnSignal, after
    every step, and its answer gets the deadline here."""
    from mathtune.signals import StopOnSignal

    original = StopOnSignal.__call__
    StopOnSignal.__call__ = lambda self: self.requested or time.perf_counter() > deadline  # type: ignore[method-assign]
    try:
        yield
    finally:
        StopOnSignal.__call__ = original  # type: ignore[method-assign]


def train(cfg, deadline: float) -> tuple[Any, float, int | None]:
    """run_sft with a deadline (stop_at). (result, seconds, step it stopped at or None)."""
    from mathtune.sft import run_sft

    started = time.perf_counter()
    with stop_at(deadline):
        result = run_sft(cfg, progress=False)
    return result, time.perf_counter() - started, checkpoint_step(result) if result.interrupted else None


def checkpoint_step(result) -> int | None:
    name = Path(str(result.last_checkpoint or "")).name
    return int(name.rpartition("-")[2]) if name.startswith("checkpoint-") else None


def train_figures(result) -> dict[str, Any]:
    """Steps, first and last logged loss, median logged speed (a run stopped before its first log has none)."""
    log_file = Path(result.run_dir) / "logging.jsonl"
    rows = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    losses = [r["loss"] for r in rows if "loss" in r]
    speeds = sorted(r["tokens_per_s"] for r in rows if "tokens_per_s" in r)
    return {"steps": checkpoint_step(result), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "median_tokens_per_s": speeds[len(speeds) // 2] if speeds else None}


# ---- the sweep ----------------------------------------------------------------------------------------------------


def run_variant(name: str, overrides: dict[str, Any], args, limits, timing: dict[str, float]) -> dict:
    left = args.budget_s - (time.perf_counter() - START)
    eval_s = timing.get("eval_s", 60.0) * 1.2 + 10  # loading, merging and answering, from the base run
    setup_s = timing.get("setup_s", 20.0)
    # Capped, so that one slow variant (the tutorial's 16-row steps) cannot take the time of all those after it.
    train_share = min(left - eval_s - setup_s, args.max_train_s)
    if train_share < args.min_train_s:
        return {"variant": name, "status": "skipped", "why": f"{left:.0f} s left, {eval_s + setup_s:.0f} s needed "
                f"for setup and answering: {train_share:.0f} s for training, under --min_train_s"}
    cfg = build_config(overrides, args.work / "runs" / name, args.smoke)
    log(f"{name}: training (share {train_share:.0f} s) with {json.dumps(overrides, default=str)}")
    started = time.perf_counter()
    result, train_s, stopped = train(cfg, deadline=time.perf_counter() + setup_s + train_share)
    figures = train_figures(result)
    log(f"{name}: trained in {train_s:.0f} s ({figures}); answering")
    eval_started = time.perf_counter()
    results = load_and_evaluate(str(result.last_checkpoint), limits, args.eval_dir / name, args.max_new_tokens)
    eval_s = time.perf_counter() - eval_started
    # The next variant's prediction: the last trained variant's answering time. Not the base's: its replies run to
    # the token limit (60-100 s on an H200), a trained model's end in about 12 s; taking the larger skipped variants
    # that had time (2026-12-02).
    timing["eval_s"] = eval_s
    return {"variant": name, "status": "ok", "overrides": overrides, "dataset": list(cfg.data.dataset),
            "train_s": round(train_s, 1), "stopped_at_step": stopped, **figures, "eval_s": round(eval_s, 1),
            "gpu_minutes": round((time.perf_counter() - started) / 60, 2), "checkpoint": str(result.last_checkpoint),
            "results": results}


def answer_base(args, limits, timing: dict[str, float]) -> None:
    """The untrained model's answers, one JSON line; its answering time predicts the first variant's."""
    try:
        started = time.perf_counter()
        results = load_and_evaluate(None, limits, args.eval_dir / "base", args.max_new_tokens)
        timing["eval_s"] = time.perf_counter() - started
        emit(args.out, {"variant": "base", "status": "ok", "eval_s": round(timing["eval_s"], 1), "results": results})
    except Exception as exc:  # noqa: BLE001 - the trained variants are still worth having
        emit(args.out, {"variant": "base", "status": "error", "error": repr(exc)[:500],
                        "traceback": traceback.format_exc()[-2000:]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per variant (appended)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sweep2"), help="run folders (checkpoints)")
    parser.add_argument("--eval_dir", type=Path, default=None,
                        help="predictions.jsonl and summary.json per variant (default: sweep2_eval beside --out)")
    parser.add_argument("--budget_s", type=float, default=540)
    parser.add_argument("--variants", nargs="+", default=None, help="names to run, in this order (default: all)")
    parser.add_argument("--min_train_s", type=float, default=25, help="skip a variant with less training time left")
    parser.add_argument("--max_train_s", type=float, default=150,
                        help="a training run still going after this many seconds stops and is answered as it is")
    parser.add_argument("--base", action=argparse.BooleanOptionalAction, default=True,
                        help="answer with the untrained model first (--no-base: its figures are recorded already)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts on the same code path (a CPU check)")
    args = parser.parse_args(argv)
    config = load_config()
    limits = dict(BENCHMARKS)
    args.max_new_tokens = MAX_NEW_TOKENS
    if args.smoke:
        limits, args.max_new_tokens = {k: 2 for k in limits}, 8
    table = variants(config)
    if args.variants:
        known = dict(table)
        unknown = [v for v in args.variants if v not in known]
        if unknown:
            print(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        table = [(v, known[v]) for v in args.variants]
    args.work.mkdir(parents=True, exist_ok=True)
    args.eval_dir = args.eval_dir or args.out.parent / "sweep2_eval"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    emit(args.out, environment(args, config, limits))
    if args.base:
        answer_base(args, limits, timing)
    else:  # the first variant's answering predicted as a trained model's (about 12 s on an H200, 2026-12-02)
        timing["eval_s"] = 20.0
        log("base: not answered (--no-base)")
    for name, overrides in table:
        try:
            record = run_variant(name, overrides, args, limits, timing)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: keep going with the next variant
            if isinstance(exc, SystemExit):
                raise
            record = {"variant": name, "status": "error", "error": repr(exc)[:500],
                      "traceback": traceback.format_exc()[-2000:]}
        free_memory()
        emit(args.out, record)
    print(markdown_table(args.out), flush=True)
    log("done")
    return 0


def markdown_table(out: Path) -> str:
    """Every finished variant of this --out file as docs/results.md's table: accuracy [95% CI] per benchmark."""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    names = list(BENCHMARKS)
    lines = ["| variant | training s | steps | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for r in records:
        if r.get("status") != "ok":
            continue
        cells = []
        for name in names:
            got = r["results"].get(name, {})
            cells.append(f"{got['accuracy']:.1%} [{got['ci'][0]:.1%}, {got['ci'][1]:.1%}]" if "ci" in got else "-")
        steps = f"{r.get('steps', '-')}{' (stopped: time)' if r.get('stopped_at_step') else ''}"
        head = f"| {r['variant']} | {r.get('train_s', '-')} | {steps} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(args, config: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"variant": "environment", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "python": platform.python_version(), "config": config, "benchmarks": limits,
                            "max_new_tokens": args.max_new_tokens, "budget_s": args.budget_s, "smoke": args.smoke}
    try:
        import subprocess

        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__,
                    device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    except ImportError:
        pass
    return info


if __name__ == "__main__":
    sys.exit(main())
