"""The model a GRPO run starts from.

A model folder, merged folder or hub id is loaded as it is. An sft LoRA checkpoint is loaded onto its base (as infer
loads it: config, weights and base fingerprint checked) and merged into the weights in memory (peft's
merge_and_unload): GRPO then trains a fresh adapter (or every weight) on the SFT policy, and with beta > 0 the
reference is that SFT policy (the new adapter switched off; for full fine-tuning, a frozen copy).

A GRPO LoRA checkpoint needs that merged model as its base, so a LoRA run writes it once into its run folder as
`base-merged/` (safetensors, config, tokenizer, and `mathtune_merged.json` naming the base and the adapter merged)
and names the policy after that folder before attaching the new adapter. Every checkpoint's base record
(adapters.write_base_record: path and fingerprint) then points at base-merged/, so export, infer and eval take the
GRPO checkpoint as they take an sft one. A resumed run loads base-merged/ rather than merging again: its checkpoints
were trained on exactly those weights. The cost is one copy of the model per such run (12 GB for a 6B model in bf16).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import follow_umask, staging_folder, write_json
from .config import GrpoConfig

BASE_MERGED = "base-merged"
MERGED_RECORD = "mathtune_merged.json"


@dataclass
class StartModel:
    model: Any
    sft_adapter: Path | None
    """The sft LoRA checkpoint merged into the model; None when the model was loaded as it is."""
    merged_dir: Path | None
    """The run's base-merged/ the model was loaded from (a resumed run); None when merged here or not merged."""


def run_name(model_path: Path, requested: str | None) -> str:
    """The run-folder name of the starting model (before '-grpo'): an sft checkpoint's base model, so that runs from
    checkpoint-375 of different models do not share output/checkpoint-375-grpo."""
    from ..model import base_of_adapter, is_adapter_dir, model_name

    if is_adapter_dir(model_path) and (base := base_of_adapter(model_path)):
        return model_name(Path(base), base)
    return model_name(model_path, requested)


def load_start_model(cfg: GrpoConfig, model_path: Path, run_path: Path | None) -> StartModel:
    """The policy's starting weights on the default device (see the module docstring); `run_path` is the folder of
    the run being resumed or restarted, if any."""
    from ..model import default_device, is_adapter_dir, load_for_inference, load_model, quiet_peft

    device, m = default_device(), cfg.model
    if not is_adapter_dir(model_path):
        return StartModel(load_model(model_path, m.dtype, device, None, m.trust_remote_code), None, None)
    saved = run_path / BASE_MERGED if run_path is not None else None
    if saved is not None and (saved / "config.json").is_file():
        return StartModel(load_model(saved, m.dtype, device, None, m.trust_remote_code), model_path, saved)
    adapted, _, _ = load_for_inference(str(model_path), None, m.dtype, device, m.trust_remote_code)
    with quiet_peft():
        model = adapted.merge_and_unload()
    model.requires_grad_(True)  # as a freshly loaded model: loading the adapter for inference froze the base
    return StartModel(model, model_path, None)


def save_base_merged(model, tokenizer, run_path: Path, sft_adapter: Path) -> Path:
    """Write the merged starting model to run_path/base-merged/ (staged, then renamed into place) with the record of
    what was merged, and name the model after that folder: the LoRA attached next records it as its base."""
    from ..adapters import read_base_record
    from ..model import base_of_adapter

    target = run_path / BASE_MERGED
    staging = run_path / f".{BASE_MERGED}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while writing it
    base = base_of_adapter(sft_adapter)
    record = {"base": str(Path(base).resolve()) if base and Path(base).is_dir() else base,
              "adapter": str(sft_adapter.resolve()),
              "base_fingerprint": (read_base_record(sft_adapter) or {}).get("fingerprint"),
              "how": "peft merge_and_unload of the adapter into the base, in the run's dtype"}
    with staging_folder(staging, f"cannot write the merged starting model to '{target}'"):
        staging.mkdir()
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        write_json(staging / MERGED_RECORD, record)
        follow_umask(staging)
        shutil.rmtree(target, ignore_errors=True)  # a restarted run's earlier copy of the same merge
        os.replace(staging, target)
    model.name_or_path = str(target.resolve())
    model.config.name_or_path = str(target.resolve())
    return target


def merged_record(base_dir: Path) -> dict | None:
    """What a base-merged/ folder was merged from ({"base", "adapter", ...}), or None for any other model folder."""
    import json

    file = Path(base_dir) / MERGED_RECORD
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
