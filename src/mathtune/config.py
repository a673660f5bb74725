"""Run configuration: small frozen dataclasses per concern, filled from defaults, then a YAML file, then flags.

Flag names follow ms-swift v2 (`--model_id_or_path`, `--sft_type`, ...) with the newer short spellings as aliases.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .data.config import DATA_FLAGS, DataArgs
from .errors import UserError, first_line
from .flags import Section, add_flags, aliases, parse_bool
from .seeding import check_seed

# Field metadata: a resumed run may change this option (where and how often it writes, how long it trains, switches
# that change the speed only). Any other difference would change the result, so resuming requires the same value.
MAY_CHANGE_ON_RESUME = {"resume": "may_change"}


@dataclass(frozen=True)
class ModelArgs:
    """Which model to fine-tune and how to load it."""

    model_id_or_path: str | None = None
    """Local folder or hub id; None is the embedded default (SmolLM2-135M-Instruct)."""
    dtype: str = "AUTO"
    """AUTO (bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU), bf16, fp16 or fp32."""
    trust_remote_code: bool = field(default=False, metadata=MAY_CHANGE_ON_RESUME)
    """Run a model repository's own Python code; off unless asked for."""

    def __post_init__(self) -> None:
        if self.dtype.lower() not in ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"):
            raise UserError(f"--dtype '{self.dtype}' is not one of AUTO, bf16, fp16, fp32")


@dataclass(frozen=True)
class LoraArgs:
    """What is trained: LoRA adapters (SWIFT v2 defaults) or every weight."""

    sft_type: str = "lora"
    """lora or full."""
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)
    """Module names to adapt; all-linear adapts every linear layer but the output head."""

    def __post_init__(self) -> None:
        if self.sft_type not in ("lora", "full"):
            raise UserError(f"--sft_type '{self.sft_type}' is not one of lora, full")
        _positive("--lora_rank", self.lora_rank)
        _positive("--lora_alpha", self.lora_alpha)
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass(frozen=True)
class OptimArgs:
    """What is optimised and how: everything here shapes the result."""

    num_train_epochs: float = field(default=1.0, metadata=MAY_CHANGE_ON_RESUME)
    max_steps: int = field(default=-1, metadata=MAY_CHANGE_ON_RESUME)
    """Stop after this many optimizer steps; -1 runs num_train_epochs."""
    learning_rate: float = 1e-4
    batch_size: int = 1
    """Rows per micro-batch; with packing, the micro-batch holds up to batch_size * max_length tokens."""
    gradient_accumulation_steps: int = 16
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    packing: bool = True
    """Concatenate rows into long sequences with per-row positions; attention never crosses rows. An optimizer step
    still holds batch_size * gradient_accumulation_steps rows, so packing changes speed, not the result."""
    packing_length: int | None = None
    """Tokens per packed micro-batch (default max(batch_size * max_length, 8192)); larger is faster where memory
    allows. An optimizer step's rows go into as few micro-batches of this size as they fit in."""
    nan_policy: str = "stop"
    """On a non-finite loss or gradient: stop (naming the step and rows) or skip the step."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps"):
            _positive(f"--{name}", getattr(self, name))
        if self.packing_length is not None:
            _positive("--packing_length", self.packing_length)
        if not math.isfinite(self.num_train_epochs) or (self.num_train_epochs <= 0 and self.max_steps <= 0):
            raise UserError(f"--num_train_epochs must be a positive number (or set --max_steps), got "
                            f"{self.num_train_epochs}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"--weight_decay must be 0 or more, got {self.weight_decay}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise UserError(f"--max_grad_norm must be positive, got {self.max_grad_norm}")
        check_seed("--seed", self.seed)
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr_scheduler_type not in ("cosine", "linear", "constant", "constant_with_warmup"):
            raise UserError(f"--lr_scheduler_type '{self.lr_scheduler_type}' is not one of cosine, linear, constant")
        if self.nan_policy not in ("stop", "skip"):
            raise UserError(f"--nan_policy '{self.nan_policy}' is not one of stop, skip")


@dataclass(frozen=True)
class RunArgs:
    """Where the run is written, how often, and which run it continues."""

    output_dir: str = field(default="output", metadata=MAY_CHANGE_ON_RESUME)
    logging_steps: int = field(default=5, metadata=MAY_CHANGE_ON_RESUME)
    save_steps: int = field(default=500, metadata=MAY_CHANGE_ON_RESUME)
    eval_steps: int = field(default=500, metadata=MAY_CHANGE_ON_RESUME)
    save_total_limit: int | None = field(default=2, metadata=MAY_CHANGE_ON_RESUME)
    """Keep at most this many checkpoints (the newest is always kept); None keeps all."""
    resume_from_checkpoint: str | None = field(default=None, metadata=MAY_CHANGE_ON_RESUME)
    """auto (newest complete checkpoint of the newest run in output_dir/<model>) or a checkpoint path."""

    def __post_init__(self) -> None:
        for name in ("logging_steps", "save_steps", "eval_steps"):
            _positive(f"--{name}", getattr(self, name))
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise UserError(f"--save_total_limit must be at least 1, got {self.save_total_limit}")


@dataclass(frozen=True)
class FastArgs:
    """Speed only: none of these changes what is learned (beyond floating-point rounding)."""

    gradient_checkpointing: bool = field(default=True, metadata=MAY_CHANGE_ON_RESUME)
    checkpoint_layers: int | None = field(default=None, metadata=MAY_CHANGE_ON_RESUME)
    """With checkpointing on, recompute only the first N decoder layers (None: all). Each layer left out costs memory
    and saves time: on an H200, 28 of 32 Yi-6B layers ran 1% faster in 4 GiB more (docs/benchmarks.md)."""
    use_liger_kernel: bool | None = field(default=None, metadata=MAY_CHANGE_ON_RESUME)
    """Fused kernels (RMSNorm, SwiGLU, RoPE, linear + cross-entropy); None: on where CUDA and liger-kernel are."""
    fast_lora: bool | None = None
    """Run LoRA branches in the model dtype with scale and sum fused into one GEMM; None: on with CUDA."""
    torch_compile: bool = False
    """torch.compile each decoder layer (slow first steps; measure before relying on it)."""
    attn_impl: str | None = field(default=None, metadata=MAY_CHANGE_ON_RESUME)
    """Attention: None picks (on CUDA, varlen flash attention for packed rows; SDPA elsewhere); "varlen" asks for it;
    any transformers name (sdpa, eager, flex_attention, flash_attention_2) turns it off and uses that."""
    fsdp: bool = field(default=False, metadata=MAY_CHANGE_ON_RESUME)
    """Several ranks (torchrun): shard the weights, gradients and optimizer state with FSDP2's fully_shard, one group
    per decoder layer, so a model too large for one card trains; off: every rank holds the model (DDP). Ignored in
    one process. Checkpoints are the same files either way, so a run may resume with or without it."""

    def __post_init__(self) -> None:
        if self.checkpoint_layers is not None and self.checkpoint_layers < 0:
            raise UserError(f"--checkpoint_layers must be 0 or more, got {self.checkpoint_layers}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as args.json in the run dir."""

    model: ModelArgs = field(default_factory=ModelArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    data: DataArgs = field(default_factory=DataArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    run: RunArgs = field(default_factory=RunArgs)
    fast: FastArgs = field(default_factory=FastArgs)
    eval_benchmarks: tuple[str, ...] = ()
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        if self.eval_limit is not None:
            _positive("--eval_limit", self.eval_limit)
        object.__setattr__(self, "eval_benchmarks", tuple(dict.fromkeys(self.eval_benchmarks)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _positive(flag: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{flag} must be a positive whole number, got {value!r}")


SECTIONS: dict[str, type] = {"model": ModelArgs, "lora": LoraArgs, "data": DataArgs, "optim": OptimArgs,
                             "run": RunArgs, "fast": FastArgs}
TOP_LEVEL = ("eval_benchmarks", "eval_limit")

# sft's flags, a section per config; `config` None: read by build_config itself (--config) or accepted for SWIFT users.
SFT_FLAGS = (
    Section("", None, ("config",)),
    Section("model", ModelArgs, ("model_id_or_path", "dtype", "trust_remote_code")),
    Section("lora", LoraArgs, ("sft_type", "lora_rank", "lora_alpha", "lora_dropout", "target_modules")),
    DATA_FLAGS,
    Section("training", OptimArgs, ("num_train_epochs", "max_steps", "learning_rate", "batch_size",
                                    "gradient_accumulation_steps", "warmup_ratio", "lr_scheduler_type", "weight_decay",
                                    "max_grad_norm", "seed", "packing", "packing_length", "nan_policy")),
    Section("run", RunArgs, ("run_output_dir", "logging_steps", "save_steps", "eval_steps", "save_total_limit",
                             "resume_from_checkpoint")),
    Section("speed", FastArgs, ("gradient_checkpointing", "checkpoint_layers", "use_liger_kernel", "fast_lora",
                                "torch_compile", "attn_impl", "fsdp")),
    Section("evaluation", RunConfig, ("eval_benchmarks", "eval_limit")),
    Section("", None, ("swift_backend",)),
)
# YAML keys may use any spelling a flag has (`model`, `lora_r`, `per_device_train_batch_size`, ...).
ALIASES = aliases(SFT_FLAGS)
_NOT_OPTIONS = {flag.field for section in SFT_FLAGS if section.config is None for flag in section.flags}


def add_sft_arguments(parser: argparse.ArgumentParser) -> None:
    """Every sft flag; no parser defaults, so that only flags the user typed override the YAML file."""
    add_flags(parser, SFT_FLAGS)


def load_yaml(path: str) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config '{path}' does not exist or is not a file")
    class NoAliases(yaml.SafeLoader):
        """Refuses aliases (*name): options never need them, and nested ones expand exponentially (a YAML bomb)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in a config",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)

    try:
        loaded = yaml.load(file.read_text(encoding="utf-8"), Loader=NoAliases) or {}  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    return loaded


def build_config(namespace: argparse.Namespace, names: dict[str, str] | None = None,
                 handled: frozenset[str] = frozenset()) -> RunConfig:
    """Defaults, overridden by the YAML file, overridden by the flags the user typed. Another verb on these configs
    (rlhf) passes its flags' spellings as `names` (default sft's) and the options it reads from the YAML itself
    (`yaml_options`) as `handled`."""
    given = {k: v for k, v in vars(namespace).items() if k not in (*_NOT_OPTIONS, "command", "func")}
    values: dict[str, Any] = {}
    source = getattr(namespace, "config", None)
    types = {f.name: str(f.type) for cls in (*SECTIONS.values(), RunConfig) for f in fields(cls)}
    if source:
        for key, value in load_yaml(source).items():
            name = (names or ALIASES).get(key, key)
            if name in handled:
                continue
            values[name] = _from_yaml(source, name, value, types.get(name))
    values.update(given)
    known = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
    parts: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        if key in TOP_LEVEL:
            top[key] = tuple(value) if isinstance(value, list) else value
        elif key in known:
            parts[known[key]][key] = tuple(value) if isinstance(value, list) else value
        else:
            raise UserError(f"{source or 'flags'}: unknown option '{key}'")
    try:
        return RunConfig(**{s: SECTIONS[s](**parts[s]) for s in SECTIONS}, **top)
    except TypeError as exc:
        raise UserError(f"{source or 'flags'}: {exc}") from None


def yaml_options(source: str, classes: tuple[type, ...], names: dict[str, str]) -> dict[str, Any]:
    """The options in YAML file `source` that are fields of `classes` (keys in any spelling `names` maps to a field),
    typed as those fields are; any other key is left for build_config."""
    types = {f.name: str(f.type) for cls in classes for f in fields(cls)}
    found = ((names.get(key, key), value) for key, value in load_yaml(source).items())
    return {name: _typed(source, name, value, types[name]) for name, value in found if name in types}


def _typed(source: str, name: str, value: Any, annotation: str) -> Any:
    if not annotation.startswith("tuple[float"):  # GRPO's reward_weights: numbers, where other tuples hold names
        return _from_yaml(source, name, value, annotation)
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in items):
        raise UserError(f"{source}: option '{name}' takes a number or a list of numbers, got {value!r}")
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise UserError(f"{source}: option '{name}' takes a number or a list of numbers, got {value!r}") from None


def _from_yaml(source: str, name: str, value: Any, annotation: str | None) -> Any:
    """A YAML value in the type its option takes, or one line naming the option: YAML 1.1 reads `1e-4` as text and a
    lone `champ` is one item, but `dtype: 5`, `max_steps: 1.5` or `trust_remote_code: 5` are mistakes."""
    if annotation is None or value is None:
        return value
    kind = annotation.split("[")[0].split(" ")[0]
    wrong = UserError(f"{source}: option '{name}' takes {_KIND_NAMES.get(kind, kind)}, got {value!r}")
    if kind == "tuple":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise wrong
        return tuple(items)
    if kind == "dict":
        if not isinstance(value, dict):
            raise wrong
        return value
    try:
        if kind == "bool":
            return value if isinstance(value, bool) else parse_bool(_text(value, wrong))
        if kind == "int" and not isinstance(value, bool):
            return value if isinstance(value, int) else int(_text(value, wrong))
        if kind == "float" and not isinstance(value, bool):
            return float(value) if isinstance(value, (int, float)) else float(_text(value, wrong))
        if kind == "str":
            return _text(value, wrong)
    except (ValueError, argparse.ArgumentTypeError):
        raise wrong from None
    raise wrong


_KIND_NAMES = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text",
               "tuple": "a name or a list of names", "dict": "a mapping"}


def _text(value: Any, wrong: UserError) -> str:
    if not isinstance(value, str):
        raise wrong
    return value
