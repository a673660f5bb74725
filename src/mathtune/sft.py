"""`mathtune sft`: data -> model -> training -> loss curve (-> accuracy before and after)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import distributed, fastpath
from .config import RunConfig
from .data.tokenize import Encoded
from .data.types import Conversation
from .errors import UserError
from .fastpath.checkpointing import decoder_layers
from .model import (
    attach_lora,
    check_target_modules,
    default_device,
    load_model,
    load_tokenizer,
    model_name,
    resolve_dtype,
    resolve_model_path,
)
from .run_dir import RunDir, check_output_dir, latest_checkpoint, load_state
from .seeding import seed_everything
from .train import LossFn, TrainResult, packing_capacity, train


@dataclass
class SftResult:
    run_dir: Path
    last_checkpoint: Path | None
    interrupted: bool
    final_loss: float | None
    final_eval_loss: float | None
    eval_summary: dict | None


def load_weights(model, checkpoint: Path, lora: bool) -> None:
    """Put a checkpoint's trained weights (adapter or full) back into a freshly built model (resume), checked as resume
    checks them; only safetensors are read, and a checkpoint that does not fit is one UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import first_reason

    try:
        if lora:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
            missing = [k for k in result.missing_keys if "lora_" in k]
        elif (checkpoint / "model.safetensors").is_file():
            result = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
            missing = []
        else:
            from transformers.modeling_utils import load_sharded_checkpoint

            if not (checkpoint / "model.safetensors.index.json").is_file():
                raise FileNotFoundError(checkpoint / "model.safetensors")
            result = load_sharded_checkpoint(model, checkpoint, strict=False, prefer_safe=True)
            missing = []
    except (FileNotFoundError, SafetensorError) as exc:
        raise UserError(f"checkpoint '{checkpoint}' has no readable weights ({first_reason(exc)})") from None
    except RuntimeError as exc:
        raise UserError(f"checkpoint '{checkpoint}' does not fit this model: {first_reason(exc)}") from None
    if result.unexpected_keys or missing:
        names = (list(result.unexpected_keys) + missing)[:2]
        raise UserError(f"checkpoint '{checkpoint}' does not fit this model: weights differ ({', '.join(names)})")


def run_sft(cfg: RunConfig, progress: bool = True) -> SftResult:
    """Fine-tune as `cfg` says: data -> model -> fast path -> run folder -> training -> loss curve (-> evaluation).
    A new run's folder appears once data and model have loaded (and goes again if a later step of the setup fails);
    a resumed run's folder is left untouched until its checkpoint has loaded.

    Under torchrun every rank runs this; rank 0 alone prints, logs and writes (see distributed.py)."""
    with distributed.session() as d:
        return _run_sft(cfg, progress and d.is_main, d)


def _run_sft(cfg: RunConfig, progress: bool, d: distributed.Dist) -> SftResult:
    started = time.perf_counter()
    if d.active and cfg.fast.fsdp and cfg.eval_benchmarks:
        raise UserError("--eval_benchmarks with --fsdp: generation on a sharded model is not supported; evaluate the "
                        "checkpoint afterwards with `mathtune eval` (which shares questions across ranks)")
    if not cfg.data.dataset:
        raise UserError(
            "--dataset is required: a file, a folder, rg:TASK or a hub set, e.g. --dataset rg:gsm-symbolic#500")
    check_output_dir(cfg.run.output_dir)  # before the slow part: data and model
    seed_everything(cfg.optim.seed)
    model_path = resolve_model_path(cfg.model.model_id_or_path)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    built = _build_data(cfg, tokenizer)
    with RunDir.open(cfg, model_name(model_path, cfg.model.model_id_or_path)) as run:
        model, loss_fn, before = _prepare(cfg, run, model_path, tokenizer, built, progress, d)
        parallel = distributed.Parallel(model, loss_fn, d, cfg.fast.fsdp, default_device(),
                                        decoder_layers(model)) if d.active else None
        with distributed.stop_on_signal(d) as stop, distributed.peer_guard(d, lambda: _last_checkpoint(run.path)):
            # Ctrl-C or SIGTERM: checkpoint after this step, then stop (all ranks together)
            result = train_in(run, model, tokenizer, built.train, built.val, loss_fn, origins=built.train_origins,
                              should_stop=stop, progress=progress, parallel=parallel)
        run.finish()
        plot = _plot(run.path) if d.is_main else ""
        summary = None
        if cfg.eval_benchmarks and not result.interrupted:
            summary = evaluate_after(model, tokenizer, cfg, run.path, before, progress)
    if not d.is_main:
        return SftResult(run.path, result.last_checkpoint, result.interrupted, result.final_loss,
                         result.final_eval_loss, summary)
    if result.interrupted:
        print(f"Stopped at step {result.global_step}; resume with --resume_from_checkpoint {result.last_checkpoint}")
    print(f"run dir: {run.path}\nlast checkpoint: {result.last_checkpoint}\nloss curve: {plot}\n"
          f"time: {time.perf_counter() - started:.0f} s", flush=True)
    return SftResult(run.path, result.last_checkpoint, result.interrupted, result.final_loss, result.final_eval_loss,
                     summary)


def _last_checkpoint(run_dir: Path | None) -> Path | None:
    return latest_checkpoint(run_dir) if run_dir is not None and run_dir.is_dir() else None


def _build_data(cfg: RunConfig, tokenizer):
    from .data.mixing import build_dataset

    built = build_dataset(cfg.data, tokenizer)
    if not built.train:
        raise UserError("no training rows left after filtering (all longer than --max_length?)")
    if cfg.eval_benchmarks:
        warn_overlap(built.train_rows, cfg.eval_benchmarks, cfg.data.data_seed)
    return built


def _prepare(cfg: RunConfig, run: RunDir, model_path, tokenizer, built, progress: bool,
             d: distributed.Dist = distributed.SINGLE) -> tuple[Any, LossFn, dict | None]:
    """(model ready to train, its loss, benchmark results before training); the run folder exists afterwards."""
    device = default_device()
    # 'varlen' is ours (fastpath registers it for packed rows); transformers loads the model with its default.
    attn = None if cfg.fast.attn_impl == "varlen" else cfg.fast.attn_impl
    # Under FSDP the model is read into host memory and each rank moves only its shard to its card, so a model
    # larger than one card still loads.
    load_on, dtype = device, cfg.model.dtype
    if d.active and cfg.fast.fsdp:  # in the dtype the card would get (AUTO on the CPU alone would mean fp32)
        load_on, dtype = "cpu", str(resolve_dtype(cfg.model.dtype, device)).removeprefix("torch.")
    model = load_model(model_path, dtype, load_on, attn, cfg.model.trust_remote_code)
    lora = cfg.lora.sft_type == "lora"
    if lora:
        check_target_modules(model, cfg.lora.target_modules)
    before = None
    with run.setting_up():
        if d.is_main:
            print(built.report.to_text(), flush=True)
        if cfg.eval_benchmarks and run.resume is None:
            run.start(built.report.to_dict())
            before = evaluate_model(model, tokenizer, cfg, run.path / "eval" / "before", progress)
        if lora:
            model = attach_lora(model, cfg.lora.lora_rank, cfg.lora.lora_alpha, cfg.lora.lora_dropout,
                                list(cfg.lora.target_modules))
        if run.resume is not None:
            load_weights(model, run.resume, lora)
        loss_fn = fastpath.apply(model, cfg.fast, device).loss_fn
        run.start(built.report.to_dict())  # a new run's folder appears only now that everything has loaded
    return model, loss_fn, before


def train_in(run: RunDir, model, tokenizer, train_set: Sequence[Encoded], val_set: Sequence[Encoded],
             loss_fn: LossFn, *, origins: Sequence[str] | None = None, should_stop: Callable[[], bool] | None = None,
             progress: bool = True, parallel: distributed.Parallel | None = None) -> TrainResult:
    """Train `model` in `run`'s folder with `run.cfg`'s options: its log, its checkpoints, continuing from
    `run.resume` when set (the weights must already be loaded). With `parallel`, on every rank: only the run
    folder's writer (rank 0) logs and writes."""
    cfg = run.cfg

    def on_save(state):
        weights = None if parallel is None else parallel.full_model_state()  # FSDP: gathered, by every rank
        return run.save(model, tokenizer, state, weights)

    return train(model, train_set, val_set, cfg.optim, loss_fn=loss_fn,
                 capacity=packing_capacity(cfg.optim, cfg.data.max_length, default_device()),
                 pad_id=tokenizer.pad_token_id,
                 logging_steps=cfg.run.logging_steps, save_steps=cfg.run.save_steps, eval_steps=cfg.run.eval_steps,
                 state=None if run.resume is None else load_state(run.resume), origins=origins,
                 on_start=run.begin, on_log=(lambda record: run.log.write(record)) if run.writer else None,
                 on_save=on_save, should_stop=should_stop, progress=progress, parallel=parallel)


def _plot(run_dir: Path) -> str:
    from .plot import plot_run

    try:
        return str(plot_run(run_dir))
    except (UserError, OSError) as exc:  # the checkpoints are saved; a missing picture must not fail the run
        return f"not drawn ({exc})"


def evaluate_after(model, tokenizer, cfg: RunConfig, run_dir: Path, before: dict | None,
                   progress: bool = True) -> dict:
    """The benchmarks after training into run_dir/eval/after, with the comparison to eval/before printed when there
    is one; {"before": ..., "after": ...}."""
    model.eval()
    after = evaluate_model(model, tokenizer, cfg, run_dir / "eval" / "after", progress)
    if before is not None and distributed.is_main():  # under torchrun the files are rank 0's, written by now
        from .evaluate.report import compare

        print(compare(run_dir / "eval" / "before", run_dir / "eval" / "after"), flush=True)
    return {"before": before, "after": after}


def warn_overlap(train_rows: list[Conversation], benchmarks: tuple[str, ...], data_seed: int) -> list[str]:
    """Warn, one line per benchmark on stderr, when training rows overlap the benchmark's questions: its score after
    training would then measure memory, not skill. Training goes on, as overlap may be intended. Returns the lines."""
    from .data import contamination

    questions = contamination.benchmark_questions(benchmarks, data_seed=data_seed)
    report = contamination.check(train_rows, questions)
    lines = [f"warning: {exact + ngram:,} training rows overlap {name} ({exact:,} exact, {ngram:,} sharing a "
             f"{report.n}-gram); see `mathtune data check`"
             for name, (exact, ngram) in report.rows_per_benchmark().items()]
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines


def evaluate_model(model, tokenizer, cfg: RunConfig, out_dir: Path, progress: bool = True) -> dict:
    """cfg.eval_benchmarks (cfg.eval_limit questions each) on the loaded model, written to `out_dir`; the summary."""
    from .evaluate.runner import EvalSettings, evaluate

    settings = EvalSettings(limit=cfg.eval_limit, data_seed=cfg.data.data_seed)
    return evaluate(list(cfg.eval_benchmarks), settings, out_dir, loaded=(model, tokenizer), progress=progress).summary


from .callable_module import make_callable  # noqa: E402  (after run_sft exists; see that module)

make_callable(__name__, "mathtune.sft.run_sft")
