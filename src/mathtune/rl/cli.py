"""`mathtune rlhf --rlhf_type grpo`: sft's flags (model, LoRA, data, training, run, evaluation) plus GRPO's, under
TRL / ms-swift names. Options not typed take TRL's GRPO defaults (rl.config)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..config import OptimArgs, add_sft_arguments, build_config, parse_bool
from .config import RLHF_TYPES, GrpoArgs, GrpoConfig, grpo_optim

S = argparse.SUPPRESS
_GRPO_FLAGS: tuple[tuple[str, dict], ...] = (
    ("--num_generations", {"type": int, "help": "completions per prompt (default 8)"}),
    ("--max_completion_length", {"type": int, "help": "longest completion in tokens (default 512)"}),
    ("--reward_funcs", {"nargs": "+", "metavar": "NAME",
                        "help": "accuracy, format, or functions from --external_plugins (default accuracy format)"}),
    ("--reward_weights", {"nargs": "+", "type": float, "metavar": "W", "help": "one weight per reward function"}),
    ("--external_plugins", {"nargs": "+", "metavar": "FILE.py", "help": "Python files defining reward functions"}),
    ("--beta", {"type": float, "help": "KL weight (default 0.0, TRL's; ms-swift uses 0.04)"}),
    ("--epsilon", {"type": float, "help": "ratio clipping (default 0.2)"}),
    ("--epsilon_high", {"type": float, "help": "upper ratio clipping (default: epsilon; DAPO uses 0.28)"}),
    ("--loss_type", {"choices": ("grpo", "dr_grpo", "dapo"), "help": "default dapo (TRL's; ms-swift grpo)"}),
    ("--scale_rewards", {"help": "group, batch or none (default group)"}),
    ("--num_iterations", {"type": int, "help": "optimizer steps per generation batch (default 1)"}),
    ("--temperature", {"type": float, "help": "sampling temperature (default 1.0)"}),
    ("--top_p", {"type": float, "help": "nucleus sampling (default 1.0)"}),
    ("--log_completions_steps", {"type": int, "help": "write sampled completions every N steps (default 10)"}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sft_arguments(parser)
    parser.add_argument("--ckpt_dir", dest="model_id_or_path", default=S, metavar="PATH",
                        help="the model to start from (a merged folder; same as --model_id_or_path)")
    group = parser.add_argument_group("grpo")
    group.add_argument("--rlhf_type", choices=RLHF_TYPES, default=S, help="grpo (the only one for now)")
    for name, options in _GRPO_FLAGS:
        group.add_argument(name, default=S, **options)
    group.add_argument("--log_completions", type=parse_bool, nargs="?", const=True, default=S,
                       help="accepted for TRL users: completions.jsonl is always written")


def config_from(namespace: argparse.Namespace) -> GrpoConfig:
    """Defaults (TRL's for GRPO) < YAML (--config) < typed flags."""
    values = vars(namespace)
    grpo = {f.name: values.pop(f.name) for f in fields(GrpoArgs) if f.name in values}
    rlhf_type = values.pop("rlhf_type", "grpo")
    values.pop("log_completions", None)
    base = build_config(namespace)
    typed = {f.name for f in fields(OptimArgs) if f.name in values}
    defaults = OptimArgs()
    optim = {f.name: getattr(base.optim, f.name) for f in fields(OptimArgs)
             if f.name in typed or getattr(base.optim, f.name) != getattr(defaults, f.name)}
    return GrpoConfig(model=base.model, lora=base.lora, data=base.data, optim=grpo_optim(**optim), run=base.run,
                      fast=base.fast, eval_benchmarks=base.eval_benchmarks, eval_limit=base.eval_limit,
                      grpo=GrpoArgs(**{k: tuple(v) if isinstance(v, list) else v for k, v in grpo.items()}),
                      rlhf_type=rlhf_type)


def run(namespace: argparse.Namespace) -> int:
    from .grpo import run_grpo

    return 130 if run_grpo(config_from(namespace)).interrupted else 0
