"""`mathtune sft`: data -> model -> training -> loss curve (-> accuracy before and after)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_json
from .checkpoint import (
    RunLog,
    check_output_dir,
    find_resume_checkpoint,
    latest_checkpoint,
    new_run_dir,
    newest_run,
)
from .config import RunConfig
from .data.types import Conversation
from .errors import UserError
from .model import (
    attach_lora,
    check_target_modules,
    default_device,
    load_model,
    load_tokenizer,
    model_name,
    resolve_model_path,
)
from .seeding import seed_everything


@dataclass
class SftResult:
    run_dir: Path
    last_checkpoint: Path | None
    interrupted: bool
    final_loss: float | None
    final_eval_loss: float | None
    eval_summary: dict | None


def _load_weights(model, checkpoint: Path, lora: bool) -> None:
    """Put a checkpoint's trained weights back into a freshly built model (resume); only safetensors are read."""
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


# Options a resumed run may change: where and how often it writes, how long it trains, evaluation, and switches that
# change the speed only. Any other difference would change the result, so resuming requires the same value.
MAY_CHANGE = {"output_dir", "resume_from_checkpoint", "logging_steps", "save_steps", "eval_steps", "save_total_limit",
              "max_steps", "num_train_epochs", "use_liger_kernel", "gradient_checkpointing", "checkpoint_layers",
              "attn_impl", "trust_remote_code"}


def _differences(saved: dict, cfg: RunConfig) -> list[str]:
    """'option: before -> now' for each option that differs between a run's args.json and `cfg`."""
    now = _json_config(cfg)
    found = []
    for section in ("model", "lora", "data", "train"):
        old_values, new_values = saved.get(section, {}), now[section]
        for key, value in new_values.items():
            old = old_values.get(key, value)
            if key in MAY_CHANGE or _same(key, old, value):
                continue
            found.append(f"{key}: {old!r} -> {value!r}")
    return found


def _same(key: str, old, new) -> bool:
    if key == "model_id_or_path":
        return _same_path(old, new)
    if key == "dataset" and isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(_same_path(a[0], b[0]) and a[1] == b[1] for a, b in zip(map(_split_spec, old),
                                                                           map(_split_spec, new), strict=True))
    return old == new


def _split_spec(spec: str) -> tuple[str, str]:
    """'SRC#N' -> (SRC, N); 'SRC' -> (SRC, '')."""
    head, sep, tail = spec.rpartition("#")
    return (head, tail) if sep else (spec, "")


def _same_path(a, b) -> bool:
    """Equal, or two spellings of one local path."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False


def _saved_args(run_dir: Path) -> dict | None:
    import json

    try:
        saved = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) else None


def _resume_point(cfg: RunConfig, name: str) -> tuple[Path | None, Path | None]:
    """(checkpoint to resume from, its run folder); (None, run) to restart a run killed before its first checkpoint;
    (None, None) for a new run. `auto` takes the newest run started with the same options; a checkpoint given by
    path must come from such a run."""
    value = cfg.train.resume_from_checkpoint
    if not value:
        return None, None
    if value == "auto":
        run = newest_run(cfg.train.output_dir, name,
                         accept=lambda r: (saved := _saved_args(r)) is not None and not _differences(saved, cfg))
        if run is None:
            print(f"--resume_from_checkpoint auto: no run with these options under "
                  f"'{Path(cfg.train.output_dir) / name}' yet; starting a new run", flush=True)
            return None, None
        found = latest_checkpoint(run)
        if found is None:
            print(f"--resume_from_checkpoint auto: '{run}' has no complete checkpoint yet; restarting it from the "
                  "beginning", flush=True)
        return found, run
    found = find_resume_checkpoint(value)
    saved = _saved_args(found.parent)
    if saved is None:
        raise UserError(f"--resume_from_checkpoint '{value}': its run folder has no readable args.json")
    if changed := _differences(saved, cfg):
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise UserError(f"--resume_from_checkpoint '{value}': the run was started with other options, "
                        f"{changed[0]}{more}; pass the same options to resume it, or start a new run")
    return found, found.parent


def run_sft(cfg: RunConfig, progress: bool = True) -> SftResult:
    """Fine-tune as `cfg` says. A new run's folder appears once data and model have loaded (and goes again if a
    later step of the setup fails); a resumed run's folder is left untouched until its checkpoint has loaded."""
    from .data.mixing import build_dataset
    from .train import train

    started = time.perf_counter()
    if not cfg.data.dataset:
        raise UserError(
            "--dataset is required: a file, a folder, rg:TASK or a hub set, e.g. --dataset rg:gsm-symbolic#500")
    check_output_dir(cfg.train.output_dir)  # before the slow part: data and model
    seed_everything(cfg.train.seed)
    model_path = resolve_model_path(cfg.model.model_id_or_path)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    built = build_dataset(cfg.data, tokenizer)
    if not built.train:
        raise UserError("no training rows left after filtering (all longer than --max_length?)")
    if cfg.eval_benchmarks:
        warn_overlap(built.train_rows, cfg.eval_benchmarks, cfg.data.data_seed)
    name = model_name(model_path, cfg.model.model_id_or_path)
    resume, run_dir = _resume_point(cfg, name)
    restart = resume is None and run_dir is not None
    device = default_device()
    # 'varlen' is ours (speed.py registers it for packed rows); transformers loads the model with its default.
    attn = None if cfg.model.attn_impl == "varlen" else cfg.model.attn_impl
    model = load_model(model_path, cfg.model.dtype, device, attn, cfg.model.trust_remote_code)
    if cfg.lora.sft_type == "lora":
        check_target_modules(model, cfg.lora.target_modules)

    output_dir = Path(cfg.train.output_dir)
    made_by_us = [f for f in (output_dir / name, output_dir) if not f.exists()]  # removed again if setup fails

    def start_run() -> Path:
        if restart:  # the killed attempt's log lines go; its leftovers are cleaned by the first save
            RunLog(run_dir / "logging.jsonl", resume_step=0)
        folder = run_dir if restart else new_run_dir(cfg.train.output_dir, name)
        write_json(folder / "args.json", _json_config(cfg))
        write_json(folder / "data_mix.json", built.report.to_dict())
        return folder

    created = None
    benchmarks_before = None
    try:
        print(built.report.to_text(), flush=True)
        if cfg.eval_benchmarks and resume is None:
            run_dir = created = start_run()
            benchmarks_before = _evaluate(model, tokenizer, cfg, run_dir / "eval" / "before", progress)
        if cfg.lora.sft_type == "lora":
            model = attach_lora(model, cfg.lora.lora_rank, cfg.lora.lora_alpha, cfg.lora.lora_dropout,
                                list(cfg.lora.target_modules))
        if resume is not None:
            _load_weights(model, resume, cfg.lora.sft_type == "lora")
        from .speed import apply_fast_path, set_gradient_checkpointing

        if cfg.train.gradient_checkpointing:
            set_gradient_checkpointing(model, cfg.train.checkpoint_layers)

        fused_ce = apply_fast_path(model, cfg.train, device, attn_impl=cfg.model.attn_impl)
        if resume is None and created is None:  # a new run's folder appears only now that everything has loaded
            run_dir = created = start_run()
    except BaseException:
        if created is not None and not restart:
            shutil.rmtree(created, ignore_errors=True)
            for folder in made_by_us:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        raise
    result = train(model, tokenizer, built.train, built.val, cfg.train, max_length=cfg.data.max_length,
                   run_dir=run_dir, origins=built.train_origins, resume=resume, fused_linear_ce=fused_ce,
                   progress=progress)
    if resume is not None:  # records what may have changed (a longer --max_steps), once the checkpoint has loaded
        write_json(run_dir / "args.json", _json_config(cfg))
    from .plot import plot_run

    try:
        plot = plot_run(run_dir)
    except (UserError, OSError) as exc:  # the checkpoints are saved; a missing picture must not fail the run
        plot = f"not drawn ({exc})"
    summary = None
    if cfg.eval_benchmarks and not result.interrupted:
        model.eval()
        after = _evaluate(model, tokenizer, cfg, run_dir / "eval" / "after", progress)
        summary = {"before": benchmarks_before, "after": after}
        if benchmarks_before is not None:
            from .evaluate.report import compare

            print(compare(run_dir / "eval" / "before", run_dir / "eval" / "after"), flush=True)
    elapsed = time.perf_counter() - started
    if result.interrupted:
        print(f"Stopped at step {result.global_step}; resume with --resume_from_checkpoint {result.last_checkpoint}")
    print(f"run dir: {run_dir}\nlast checkpoint: {result.last_checkpoint}\nloss curve: {plot}\n"
          f"time: {elapsed:.0f} s", flush=True)
    return SftResult(run_dir, result.last_checkpoint, result.interrupted, result.final_loss, result.final_eval_loss,
                     summary)


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


def _json_config(cfg: RunConfig) -> dict:
    import json

    return json.loads(cfg.to_json())


def _evaluate(model, tokenizer, cfg: RunConfig, out_dir: Path, progress: bool) -> dict:
    from .evaluate.runner import evaluate_loaded

    return evaluate_loaded(model, tokenizer, list(cfg.eval_benchmarks), limit=cfg.eval_limit, output_dir=out_dir,
                           data_seed=cfg.data.data_seed, progress=progress)
