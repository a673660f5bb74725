"""Merge a LoRA checkpoint into its base model and write a plain Hugging Face folder next to it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .atomic import staging_folder
from .errors import UserError
from .model import end_of_turn_ids, is_adapter_dir, load_for_inference


def merge_lora(ckpt_dir: str | Path, output: str | Path | None = None, dtype: str = "AUTO",
               device: str | None = None, trust_remote_code: bool = False) -> Path:
    """Write CHECKPOINT-merged/ (safetensors, config, tokenizer with chat template, generation config whose eos is
    the end-of-turn token), written aside and renamed into place."""
    import torch

    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise UserError(f"--ckpt_dir '{ckpt}' " + ("is a file, not a checkpoint folder" if ckpt.exists() else
                                                   "does not exist"))
    if not is_adapter_dir(ckpt):
        raise UserError(f"--ckpt_dir '{ckpt}' holds no LoRA adapter (adapter_config.json missing)")
    target = Path(output) if output else ckpt.with_name(ckpt.name + "-merged")
    _check_target(target, ckpt)
    model, tokenizer, _ = load_for_inference(str(ckpt), dtype=dtype, device=device or "cpu",
                                          trust_remote_code=trust_remote_code)
    merged = model.merge_and_unload()
    eos = end_of_turn_ids(tokenizer, merged.generation_config)
    merged.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    if merged.dtype == torch.float32 and dtype.upper() == "AUTO":
        merged = merged.to(_saved_dtype(merged))
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    with staging_folder(staging, f"cannot write merged model to '{target}'"):
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _swap_in(staging, target)
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an earlier export there is kept aside until the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_target(target: Path, ckpt: Path) -> None:
    """Before the slow merge: the output may replace an earlier export, never a file, the checkpoint or other data."""
    if target.exists() and not target.is_dir():
        raise UserError(f"--output_dir '{target}' is a file")
    resolved, source = target.resolve(), ckpt.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise UserError(f"--output_dir '{target}' overlaps the checkpoint '{ckpt}'; choose another folder")
    entries = list(target.iterdir()) if target.is_dir() else []
    if entries:
        earlier_export = (target / "config.json").is_file() and not (target / "adapter_config.json").exists()
        if not earlier_export or any(e.is_dir() for e in entries):
            raise UserError(f"--output_dir '{target}' exists and holds something other than a merged model; "
                            "choose a new folder")


def _saved_dtype(model):
    """Keep the dtype the base model was published in (config.dtype); merging ran in fp32 on the CPU."""
    import torch

    name = str(getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", "") or "")
    return {"bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16, "float16": torch.float16,
            "torch.float16": torch.float16}.get(name, torch.float32)
