"""Merge a LoRA checkpoint into its base model and write a plain Hugging Face folder next to it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .atomic import follow_umask, staging_folder
from .errors import UserError
from .model import end_of_turn_ids, is_adapter_dir, load_for_inference, run_folder_hint, unwrap


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
        raise UserError(run_folder_hint(ckpt, f"--ckpt_dir '{ckpt}'") or
                        f"--ckpt_dir '{ckpt}' holds no LoRA adapter (adapter_config.json missing)")
    target = Path(output) if output else ckpt.with_name(ckpt.name + "-merged")
    _check_target(target, ckpt)
    model, tokenizer, _ = load_for_inference(str(ckpt), dtype=dtype, device=device or "cpu",
                                          trust_remote_code=trust_remote_code)
    published = _published_dtype(Path(unwrap(model).name_or_path))
    merged = model.merge_and_unload()
    eos = end_of_turn_ids(tokenizer, merged.generation_config)
    merged.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    if merged.dtype == torch.float32 and dtype.upper() == "AUTO" and published is not None:
        merged = merged.to(published)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    with staging_folder(staging, f"cannot write merged model to '{target}'"):
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        follow_umask(staging)
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
        print(f"'{target}' holds an earlier export; it is replaced once this one is written", file=sys.stderr,
              flush=True)


def _published_dtype(base_dir: Path):
    """The floating dtype the base model's weights are stored in (read from the safetensors headers), so a merge
    that ran in fp32 on the CPU is written as the base was: a bf16 base gives a bf16 merged model, not twice the
    size. None when the base folder has no safetensors to read."""
    from collections import Counter

    import torch
    from safetensors import safe_open

    names = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    found: Counter = Counter()
    for file in sorted(base_dir.glob("*.safetensors")) if base_dir.is_dir() else []:
        with safe_open(file, framework="pt") as f:
            found.update(f.get_slice(name).get_dtype() for name in f.keys())
    floating = [(count, kind) for kind, count in found.items() if kind in names]
    return names[max(floating)[1]] if floating else None
