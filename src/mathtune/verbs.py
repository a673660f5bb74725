"""Typed options of `mathtune export` and `mathtune plot`, whose modules take plain arguments."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class ExportArgs:
    """`mathtune export`: merge a LoRA checkpoint into its base model."""

    ckpt_dir: str
    merge_lora: bool = True
    output_dir: str | None = None  # None: CHECKPOINT-merged next to the checkpoint
    dtype: str = "AUTO"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.merge_lora:
            raise UserError("export only merges for now: pass --merge_lora true")


@dataclass(frozen=True)
class PlotArgs:
    """`mathtune plot RUN_DIR`."""

    run_dir: str
