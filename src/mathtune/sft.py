"""`mathtune sft`: data -> model -> training -> loss curve (-> accuracy before and after)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import find_resume_checkpoint, new_run_dir, write_json_atomic
from .config import RunConfig
from .errors import UserError
from .model import attach_lora, default_device, load_model, load_tokenizer, model_name, resolve_model_path


@dataclass
class SftResult:
    run_dir: Path
    last_checkpoint: Path | None
    interrupted: bool
    final_loss: float | None
    final_eval_loss: float | None
    eval_summary: dict | None


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_weights(model, checkpoint: Path, lora: bool) -> None:
    """Put a checkpoint's trained weights back into a freshly built model (resume)."""
    from safetensors.torch import load_file

    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    else:
        from transformers.modeling_utils import load_sharded_checkpoint

        if (checkpoint / "model.safetensors").is_file():
            model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
        else:
            load_sharded_checkpoint(model, checkpoint)


def run_sft(cfg: RunConfig, progress: bool = True) -> SftResult:
    """Fine-tune as `cfg` says; every user error is raised before the run dir is created."""
    from .data.mixing import build_dataset
    from .train import train

    started = time.perf_counter()
    if not cfg.data.dataset:
        raise UserError("--dataset is required: a file, a folder, rg:TASK or a hub set, e.g. --dataset rg:gsm-symbolic#500")
    seed_everything(cfg.train.seed)
    model_path = resolve_model_path(cfg.model.model_id_or_path)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    built = build_dataset(cfg.data, tokenizer)
    if not built.train:
        raise UserError("no training rows left after filtering (all longer than --max_length?)")
    name = model_name(model_path)
    resume = None
    if cfg.train.resume_from_checkpoint:
        resume = find_resume_checkpoint(cfg.train.resume_from_checkpoint, cfg.train.output_dir, name)
        run_dir = resume.parent
    else:
        run_dir = new_run_dir(cfg.train.output_dir, name)
    print(built.report.to_text(), flush=True)
    write_json_atomic(run_dir / "args.json", _json_config(cfg))
    write_json_atomic(run_dir / "data_mix.json", built.report.to_dict())

    device = default_device()
    model = load_model(model_path, cfg.model.dtype, device, cfg.model.attn_impl, cfg.model.trust_remote_code)
    benchmarks_before = None
    if cfg.eval_benchmarks and resume is None:
        benchmarks_before = _evaluate(model, tokenizer, cfg, run_dir / "eval" / "before", progress)
    if cfg.lora.sft_type == "lora":
        model = attach_lora(model, cfg.lora.lora_rank, cfg.lora.lora_alpha, cfg.lora.lora_dropout,
                            list(cfg.lora.target_modules))
    if resume is not None:
        _load_weights(model, resume, cfg.lora.sft_type == "lora")
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    from .speed import apply_fast_path

    fused_ce = apply_fast_path(model, cfg.train, device)
    result = train(model, tokenizer, built.train, built.val, cfg.train, max_length=cfg.data.max_length,
                   run_dir=run_dir, origins=built.train_origins, resume=resume, fused_linear_ce=fused_ce,
                   progress=progress)
    from .plot import plot_run

    plot = plot_run(run_dir)
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


def _json_config(cfg: RunConfig) -> dict:
    import json

    return json.loads(cfg.to_json())


def _evaluate(model, tokenizer, cfg: RunConfig, out_dir: Path, progress: bool) -> dict:
    from .evaluate.runner import evaluate_loaded

    return evaluate_loaded(model, tokenizer, list(cfg.eval_benchmarks), limit=cfg.eval_limit, output_dir=out_dir,
                           data_seed=cfg.data.data_seed, progress=progress)
