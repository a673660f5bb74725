"""GRPO's options: TRL GRPOConfig / ms-swift `swift rlhf --rlhf_type grpo` names, TRL 1.16's defaults.

Where TRL and ms-swift differ, TRL's default is kept and ms-swift's is said: loss_type dapo (ms-swift grpo), beta 0.0
(ms-swift 0.04), learning_rate 1e-6 (TRL's, for full fine-tuning; LoRA usually wants 1e-5 or more, as in the
issue's example). Batch sizes count completions, as in TRL: an optimizer step takes batch_size x
gradient_accumulation_steps completions, num_generations per prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import MAY_CHANGE_ON_RESUME, SECTIONS, OptimArgs, RunConfig
from ..errors import UserError
from ..flags import RLHF_TYPES
from .loss import LOSS_TYPES, SCALE_REWARDS


@dataclass(frozen=True)
class GrpoArgs:
    """How completions are sampled, rewarded and turned into a policy update."""

    num_generations: int = 8
    """Completions sampled per prompt (a group); advantages compare a completion with its group."""
    max_completion_length: int = 512
    """Longest completion in tokens; dr_grpo divides by it."""
    reward_funcs: tuple[str, ...] = ("accuracy", "format")
    """accuracy (strict grading against the gold), format (one final box), or names from --external_plugins."""
    reward_weights: tuple[float, ...] | None = None
    """One weight per reward function (default: all 1)."""
    external_plugins: tuple[str, ...] = ()
    """Python files defining reward functions; run only when named here."""
    beta: float = 0.0
    """Weight of the k3 KL to the reference policy (the base; for LoRA the model with the adapter off). 0: no
    reference is computed."""
    epsilon: float = 0.2
    """Ratio clipping below 1 (and above, unless epsilon_high is set)."""
    epsilon_high: float | None = None
    """Ratio clipping above 1 (DAPO's clip-higher, e.g. 0.28); None: epsilon."""
    loss_type: str = "dapo"
    """grpo (per-sequence mean), dr_grpo (sum / (batch x max_completion_length)) or dapo (token mean over the step)."""
    scale_rewards: str = "group"
    """Divide advantages by the group's reward std (group), the batch's (batch), or not (none; Dr. GRPO)."""
    num_iterations: int = 1
    """Optimizer steps per generation batch (PPO epochs, TRL's mu)."""
    temperature: float = 1.0
    top_p: float = 1.0
    dynamic_sample: bool = False
    """ms-swift's dynamic_sample (DAPO's dynamic sampling): groups whose total rewards are all equal have zero
    advantage and teach nothing, so they are dropped and more questions sampled in their place; the step keeps its
    number of groups."""
    max_resample_times: int = 3
    """With dynamic_sample, extra sampling rounds per step at most; a step still short of groups with reward
    variance after them is filled back up with the first round's zero-std groups."""
    log_completions_steps: int = field(default=10, metadata=MAY_CHANGE_ON_RESUME)
    """Write this step's sampled completions and rewards to completions.jsonl every N steps."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward_funcs", tuple(self.reward_funcs))
        object.__setattr__(self, "external_plugins", tuple(self.external_plugins))
        if self.scale_rewards in ("true", "True", True):  # TRL's older boolean spelling
            object.__setattr__(self, "scale_rewards", "group")
        elif self.scale_rewards in ("false", "False", False):
            object.__setattr__(self, "scale_rewards", "none")
        for name in ("num_generations", "max_completion_length", "num_iterations", "log_completions_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--{name} must be a positive whole number, got {value!r}")
        if isinstance(self.max_resample_times, bool) or not isinstance(self.max_resample_times, int) \
                or self.max_resample_times < 0:
            raise UserError(f"--max_resample_times must be 0 or a positive whole number, got "
                            f"{self.max_resample_times!r}")
        if self.num_generations < 2:
            raise UserError("--num_generations must be at least 2: advantages compare completions of one prompt")
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"--loss_type '{self.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise UserError(f"--scale_rewards '{self.scale_rewards}' is not one of {', '.join(SCALE_REWARDS)}")
        if not self.reward_funcs:
            raise UserError("--reward_funcs needs at least one reward function")
        if self.reward_weights is not None:
            object.__setattr__(self, "reward_weights", tuple(float(w) for w in self.reward_weights))
            if len(self.reward_weights) != len(self.reward_funcs):
                raise UserError(f"--reward_weights has {len(self.reward_weights)} values for "
                                f"{len(self.reward_funcs)} --reward_funcs")
            if not all(math.isfinite(w) for w in self.reward_weights):
                raise UserError("--reward_weights must be finite numbers")
        for name in ("beta", "epsilon", "epsilon_high"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"--{name} must be 0 or more, got {value}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError(f"--temperature must be positive (GRPO samples), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")

    @property
    def weights(self) -> tuple[float, ...]:
        return self.reward_weights or (1.0,) * len(self.reward_funcs)

    @property
    def epsilon_upper(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


# TRL GRPOConfig's training defaults where they differ from sft's: applied to the options the user did not set.
GRPO_OPTIM_DEFAULTS = {"learning_rate": 1e-6, "batch_size": 8, "gradient_accumulation_steps": 1,
                       "warmup_ratio": 0.0, "lr_scheduler_type": "linear", "weight_decay": 0.0, "packing": False}


@dataclass(frozen=True)
class GrpoOptimDefaults(OptimArgs):
    """OptimArgs's fields with GRPO_OPTIM_DEFAULTS as defaults: what `rlhf --help` reads them from (flags.Section).
    Runs themselves hold a plain OptimArgs (grpo_optim), so args.json and resume matching are sft's."""

    learning_rate: float = GRPO_OPTIM_DEFAULTS["learning_rate"]
    batch_size: int = GRPO_OPTIM_DEFAULTS["batch_size"]
    gradient_accumulation_steps: int = GRPO_OPTIM_DEFAULTS["gradient_accumulation_steps"]
    warmup_ratio: float = GRPO_OPTIM_DEFAULTS["warmup_ratio"]
    lr_scheduler_type: str = GRPO_OPTIM_DEFAULTS["lr_scheduler_type"]
    weight_decay: float = GRPO_OPTIM_DEFAULTS["weight_decay"]
    packing: bool = GRPO_OPTIM_DEFAULTS["packing"]


def grpo_optim(**given) -> OptimArgs:
    """OptimArgs with TRL's GRPO defaults under the values given."""
    return OptimArgs(**{**GRPO_OPTIM_DEFAULTS, **given})


@dataclass(frozen=True)
class GrpoConfig(RunConfig):
    """A GRPO run: sft's sections (model, lora, data, optim, run, fast) plus `grpo`; saved as args.json."""

    optim: OptimArgs = field(default_factory=grpo_optim)
    grpo: GrpoArgs = field(default_factory=GrpoArgs)
    rlhf_type: str = "grpo"

    # Sections beyond sft's that resume matching compares too (run_dir.differences).
    extra_sections = {"grpo": GrpoArgs}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rlhf_type not in RLHF_TYPES:
            raise UserError(f"--rlhf_type '{self.rlhf_type}' is not one of {', '.join(RLHF_TYPES)}")
        per_step = self.optim.batch_size * self.optim.gradient_accumulation_steps
        if per_step % self.grpo.num_generations:
            raise UserError(f"--batch_size x --gradient_accumulation_steps ({per_step} completions per step) must be "
                            f"a multiple of --num_generations ({self.grpo.num_generations})")

    @property
    def prompts_per_step(self) -> int:
        return self.optim.batch_size * self.optim.gradient_accumulation_steps // self.grpo.num_generations


def build(sections: dict[str, dict] | None = None, **top) -> GrpoConfig:
    """A GrpoConfig from per-section option dicts ({"optim": {...}, "grpo": {...}}); TRL's defaults for the optim
    options not given."""
    sections = sections or {}
    parts = {name: cls(**sections.get(name, {})) for name, cls in SECTIONS.items() if name != "optim"}
    return GrpoConfig(**parts, optim=grpo_optim(**sections.get("optim", {})),
                      grpo=GrpoArgs(**sections.get("grpo", {})), **top)
