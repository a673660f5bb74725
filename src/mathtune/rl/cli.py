"""`mathtune rlhf --rlhf_type grpo`: sft's flags (model, LoRA, data, training, run, evaluation) plus GRPO's, under
TRL / ms-swift names, all from the one flag table (mathtune.flags). Options not typed take TRL's GRPO defaults
(rl.config); --ckpt_dir may name an sft checkpoint (rl.start)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..config import SFT_FLAGS, ModelArgs, OptimArgs, build_config, yaml_options
from ..flags import Section, add_flags, aliases
from .config import GrpoArgs, GrpoConfig, GrpoOptimDefaults, grpo_optim

GRPO_KEYS = ("num_generations", "max_completion_length", "reward_funcs", "reward_weights", "external_plugins", "beta",
             "epsilon", "epsilon_high", "loss_type", "scale_rewards", "num_iterations", "grpo_temperature",
             "grpo_top_p", "dynamic_sample", "max_resample_times", "log_completions_steps")


def _rlhf_sections() -> tuple[Section, ...]:
    """sft's sections with two changes: the model may also be named by --ckpt_dir (an sft checkpoint), and the
    training options show TRL's GRPO defaults; then GRPO's own, and the two flags the verb reads itself."""
    sections = []
    for section in SFT_FLAGS:
        if section.config is ModelArgs:
            section = Section(section.name, ModelArgs,
                              tuple("rl_model" if key == "model_id_or_path" else key for key in section.keys))
        elif section.config is OptimArgs:  # --batch_size counts completions here
            section = Section(section.name, GrpoOptimDefaults,
                              tuple("grpo_batch_size" if key == "batch_size" else key for key in section.keys))
        sections.append(section)
    return (*sections, Section("grpo", GrpoArgs, GRPO_KEYS), Section("", None, ("rlhf_type", "log_completions")))


RLHF_FLAGS = _rlhf_sections()
NAMES = aliases(RLHF_FLAGS)  # YAML keys take every spelling of a flag, as sft's do
OWN = frozenset({f.name for f in fields(GrpoArgs)} | {"rlhf_type", "log_completions"})  # read here, not by sft


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every rlhf flag, from the one table (mathtune.flags); no parser defaults, as for sft."""
    add_flags(parser, RLHF_FLAGS)


def config_from(namespace: argparse.Namespace) -> GrpoConfig:
    """Defaults (TRL's for GRPO) < YAML (--config) < typed flags."""
    values = vars(namespace)
    source = values.get("config")
    from_file = yaml_options(source, (GrpoArgs, GrpoConfig, OptimArgs), NAMES) if source else {}
    grpo = {f.name: from_file[f.name] for f in fields(GrpoArgs) if f.name in from_file}
    grpo.update({f.name: values.pop(f.name) for f in fields(GrpoArgs) if f.name in values})
    rlhf_type = values.pop("rlhf_type", from_file.get("rlhf_type", "grpo"))
    values.pop("log_completions", None)
    base = build_config(namespace, NAMES, OWN)
    # Given options keep their value even where it equals sft's default; the others take TRL's GRPO defaults.
    typed = {f.name for f in fields(OptimArgs) if f.name in values or f.name in from_file}
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
