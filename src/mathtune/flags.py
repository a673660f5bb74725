"""Every command-line flag of every verb, declared once: its names (SWIFT spellings kept as aliases), how its text is
read, its help, and the config field it fills. Defaults live only in the config dataclasses: parsers never set one
(an absent flag leaves the field's default, or the YAML value under `sft --config`), and help reads them from there.

A verb picks its flags as `Section`s: a config dataclass and the flags that fill its fields. `add_flags` puts them on
a parser and `typed` turns the parsed flags into one dataclass per section.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from .errors import UserError


def parse_bool(text: str | bool) -> bool:
    """SWIFT-style boolean flag values: true/false, 1/0, yes/no."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def finite_float(text: str) -> float:
    """A number that is not nan or inf (argparse's float takes both)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def json_mapping(text: str) -> dict[str, str]:
    """A JSON object of text to text, e.g. '{"question": "query"}' (--columns); what the names may be is checked by
    the config that takes it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f'invalid JSON ({e.msg}); expected e.g. \'{{"question": "query"}}\'') from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of column names to names, got {value!r}")
    return value


@dataclass(frozen=True)
class Flag:
    """One flag. `field` is the config field it fills (and the argparse dest); `names` starting without '-' make a
    positional argument, whose name must then be the field."""

    names: tuple[str, ...]
    field: str
    help: str = ""
    parse: Callable[[str], Any] | None = None
    nargs: int | str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | tuple[str, ...] | None = None
    required: bool = False
    store_true: bool = False
    none_means: str = ""  # help's words for a default of None, where one is not obvious ("by device")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, config: type | None) -> None:
        kwargs: dict[str, Any] = {"help": help_with_default(self.help, config, self.field, self.none_means)}
        if self.names[0].startswith("-"):
            kwargs.update(dest=self.field, default=argparse.SUPPRESS)
            if self.required:
                kwargs["required"] = True
        if self.store_true:
            kwargs["action"] = "store_true"
        elif self.parse is parse_bool:  # `--flag` alone means true, as in SWIFT
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar=self.metavar or "BOOL")
        else:
            for key in ("nargs", "choices", "metavar"):
                if getattr(self, key) is not None:
                    kwargs[key] = getattr(self, key)
            if self.parse is not None:
                kwargs["type"] = self.parse
        parser.add_argument(*self.names, **kwargs)


def help_with_default(text: str, config: type | None, name: str, none_means: str = "") -> str:
    """The help, ending in the field's default read from its dataclass unless the text already explains it."""
    if config is None or "default" in text:
        return text
    found = next((f for f in fields(config) if f.name == name), None)
    if found is None or found.default is MISSING:
        return text
    value = found.default
    if value is None and none_means:
        return f"{text} (default: {none_means})"
    if value is None or value == ():
        return text
    shown = str(value).lower() if isinstance(value, bool) else " ".join(value) if isinstance(value, tuple) else value
    return f"{text} (default {shown})" if text else f"default {shown}"


def _b(*names: str, field: str | None = None, help: str = "") -> Flag:  # noqa: A002 - argparse's own word
    """A true/false flag."""
    return Flag(names, field or names[0].lstrip("-"), help, parse_bool)


# The choices of two data flags; DataArgs checks values from YAML and Python against the same tuples.
DATASET_FORMATS = ("auto", "swift", "messages", "sharegpt", "alpaca", "response")
TRUNCATION_STRATEGIES = ("delete", "truncation_left", "truncation_right")
# The choices of two rlhf flags; rl.config checks values against RLHF_TYPES, and a test keeps GRPO_LOSS_TYPES equal to
# rl.loss.LOSS_TYPES (rl.loss imports torch, which the flag table must not).
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
RLHF_TYPES = ("grpo",)
F = Flag
MODEL_HELP = "a model folder, hub id, adapter checkpoint or merged folder (default: the embedded model)"
FLAGS: dict[str, Flag] = {flag_key: flag for flag_key, flag in [
    # --- shared by several verbs ---
    ("trust_remote_code", _b("--trust_remote_code",
                             help="run the model repository's own Python code (only for code you trust)")),
    ("dtype", F(("--dtype", "--torch_dtype"), "dtype", "AUTO (bf16 on a GPU that has it, fp16 on other GPUs, fp32 "
                "on CPU), bf16, fp16 or fp32")),
    ("model", F(("--model", "--model_id_or_path", "--ckpt_dir"), "model", MODEL_HELP, metavar="PATH_OR_ID")),
    ("adapter", F(("--adapter",), "adapter", "a LoRA checkpoint to put on top of --model", metavar="CHECKPOINT")),
    ("max_new_tokens", F(("--max_new_tokens",), "max_new_tokens", "longest answer in tokens", int,
                         none_means="by device, said when applied")),
    ("temperature", F(("--temperature",), "temperature", "0 is greedy", float)),
    ("top_p", F(("--top_p",), "top_p", "nucleus sampling share", float)),
    ("gen_batch_size", F(("--batch_size",), "batch_size", "prompts per generation batch", int)),
    ("static_cache", _b("--static_cache", help="a preallocated KV cache with a compiled decoding step (CUDA graphs on "
                        "a GPU); several times faster once compiled, which takes about 40 s (135M) to 150 s (6B)")),
    ("swift_backend", F(("--infer_backend",), "infer_backend", "pt (PyTorch); accepted for SWIFT users",
                        choices=("pt",))),
    ("run_output_dir", F(("--output_dir",), "output_dir", "runs go to OUTPUT_DIR/<model>/v<N>-<timestamp>")),
    # --- sft: model and LoRA ---
    ("config", F(("--config",), "config", "YAML file with any of these options; flags override it",
                 metavar="FILE.yaml")),
    ("model_id_or_path", F(("--model_id_or_path", "--model"), "model_id_or_path",
                           "local folder or hub id (default: the embedded SmolLM2-135M-Instruct)",
                           metavar="PATH_OR_ID")),
    ("sft_type", F(("--sft_type", "--train_type"), "sft_type", "train LoRA adapters or every weight",
                   choices=("lora", "full"))),
    ("lora_rank", F(("--lora_rank", "--lora_r"), "lora_rank", parse=int)),
    ("lora_alpha", F(("--lora_alpha",), "lora_alpha", parse=int)),
    ("lora_dropout", F(("--lora_dropout",), "lora_dropout", parse=float)),
    ("target_modules", F(("--target_modules",), "target_modules", "module names, or all-linear", nargs="+")),
    # --- sft: data (DataArgs; `data` actions take some of them too) ---
    ("dataset", F(("--dataset",), "dataset", "datasets to mix: a .jsonl/.json/.csv/.parquet file or folder, rg:TASK "
                  "(built-in generator), a named hub set (e.g. AI-ModelScope/blossom-math-v2), HF::org/name[:subset] "
                  "or MS::org/name[:subset]; #N takes N training rows", nargs="+", metavar="SRC[#N]")),
    ("dataset_format", F(("--dataset_format",), "dataset_format", "row shape of local files and generic hub sets "
                         "(default: detect from each file's first row)",
                         choices=DATASET_FORMATS)),
    ("columns", F(("--columns",), "columns", 'rename source columns first, e.g. \'{"question": "query", "answer": '
                  '"response"}\'', json_mapping, metavar="JSON")),
    ("split_dataset_ratio", F(("--split_dataset_ratio",), "split_dataset_ratio",
                              "share of each source held out for validation", finite_float)),
    ("data_seed", F(("--data_seed",), "data_seed", "seed for sampling and the built-in generators; keep it equal to "
                    "compare runs", int)),
    ("skip_bad_rows", _b("--skip_bad_rows",
                         help="skip rows that fail to parse and report them, instead of stopping at the first one")),
    ("max_length", F(("--max_length",), "max_length", "longest row in tokens", int)),
    ("truncation_strategy", F(("--truncation_strategy",), "truncation_strategy", "rows over --max_length: delete "
                              "them, or cut tokens from the left or right",
                              choices=TRUNCATION_STRATEGIES)),
    ("system", F(("--system",), "system", "system prompt for rows (or questions) that have none")),
    # --- sft: training ---
    ("num_train_epochs", F(("--num_train_epochs",), "num_train_epochs", parse=float)),
    ("max_steps", F(("--max_steps",), "max_steps", "stop after this many optimizer steps; -1 runs the epochs", int)),
    ("learning_rate", F(("--learning_rate",), "learning_rate", parse=float)),
    ("batch_size", F(("--batch_size", "--per_device_train_batch_size"), "batch_size", "rows per micro-batch", int)),
    ("gradient_accumulation_steps", F(("--gradient_accumulation_steps",), "gradient_accumulation_steps", parse=int)),
    ("warmup_ratio", F(("--warmup_ratio",), "warmup_ratio", parse=float)),
    ("lr_scheduler_type", F(("--lr_scheduler_type",), "lr_scheduler_type",
                            "cosine, linear, constant or constant_with_warmup")),
    ("weight_decay", F(("--weight_decay",), "weight_decay", parse=float)),
    ("max_grad_norm", F(("--max_grad_norm",), "max_grad_norm", parse=float)),
    ("seed", F(("--seed",), "seed", "random seed (of training under sft, of sampling under eval)", int)),
    ("logging_steps", F(("--logging_steps",), "logging_steps", parse=int)),
    ("save_steps", F(("--save_steps",), "save_steps", parse=int)),
    ("eval_steps", F(("--eval_steps",), "eval_steps",
                     "every N steps: sft's validation loss; rlhf's --eval_benchmarks, answered greedily", int)),
    ("save_total_limit", F(("--save_total_limit",), "save_total_limit", "checkpoints kept", int)),
    ("resume_from_checkpoint", F(("--resume_from_checkpoint",), "resume_from_checkpoint",
                                 "continue a run from a checkpoint", metavar="auto|PATH")),
    ("nan_policy", F(("--nan_policy",), "nan_policy", "on a non-finite loss: stop, or skip the step",
                     choices=("stop", "skip"))),
    ("packing", _b("--packing", help="concatenate rows into long sequences (attention never crosses rows)")),
    ("packing_length", F(("--packing_length",), "packing_length",
                         "tokens per packed micro-batch (default max(batch_size*max_length, 8192))", int)),
    # --- sft: speed only ---
    ("gradient_checkpointing", _b("--gradient_checkpointing", help="recompute activations to save memory")),
    ("checkpoint_layers", F(("--checkpoint_layers",), "checkpoint_layers", "with --gradient_checkpointing, recompute "
                            "only the first N decoder layers (default: all)", int, metavar="N")),
    ("use_liger_kernel", _b("--use_liger_kernel", "--use_liger", field="use_liger_kernel",
                            help="fused kernels (default: on with CUDA when liger-kernel is installed)")),
    ("fast_lora", _b("--fast_lora", help="fused LoRA forward in the model dtype (default: on with CUDA)")),
    ("torch_compile", _b("--torch_compile", help="torch.compile each decoder layer")),
    ("attn_impl", F(("--attn_impl", "--attn_implementation"), "attn_impl",
                    "varlen (default on CUDA), sdpa, eager, flex_attention or flash_attention_2")),
    ("fsdp", _b("--fsdp", help="under torchrun: shard weights, gradients and optimizer state across ranks with FSDP2 "
                               "(default: plain data parallel, DDP)")),
    # --- sft: evaluation before and after ---
    ("eval_benchmarks", F(("--eval_benchmarks",), "eval_benchmarks",
                          "measure these before and after training (e.g. rg:gsm-symbolic champ)", nargs="+",
                          metavar="BENCH")),
    ("eval_limit", F(("--eval_limit",), "eval_limit", "questions per benchmark", int)),
    # --- infer ---
    ("eval_human", _b("--eval_human", help="interactive chat (default when no --query or --input is given)")),
    ("query", F(("--query",), "query", "answer this one question and exit")),
    ("input", F(("--input",), "input", "answer every row of this file (any training row shape; an answer in it is "
                "ignored)", metavar="FILE.jsonl")),
    ("output", F(("--output",), "output", "where --input's answers go", metavar="FILE.jsonl")),
    ("stop_words", F(("--stop_words",), "stop_words", "stop generating at any of these", nargs="+", metavar="WORD")),
    # --- export ---
    ("export_ckpt_dir", F(("--ckpt_dir",), "ckpt_dir", "the LoRA checkpoint to merge", metavar="CHECKPOINT",
                          required=True)),
    ("merge_lora", _b("--merge_lora", help="merge the adapter into the base model")),
    ("merged_dir", F(("--output_dir",), "output_dir", "default: CHECKPOINT-merged next to the checkpoint",
                     metavar="DIR")),
    # --- eval ---
    ("benchmarks", F(("--benchmarks", "--eval_dataset"), "benchmarks",
                     "benchmarks to run, e.g. rg:gsm-symbolic champ gsm8k=/data/gsm8k_test.jsonl", nargs="+",
                     metavar="BENCH")),
    ("limit", F(("--limit", "--eval_limit"), "limit", "questions per benchmark", int,
                none_means="every one on a GPU; fewer on a CPU, said when applied")),
    ("eval_output_dir", F(("--output_dir",), "output_dir", "default output/eval/<model>-<YYYYMMDD-HHMMSS>; with "
                          "--compare, where the chart goes", metavar="DIR")),
    ("num_samples", F(("--num_samples",), "num_samples", "answers per question; K > 1 adds pass@K and majority vote "
                      "(needs --temperature > 0)", int, metavar="K")),
    ("baseline", F(("--baseline",), "baseline", "also evaluate the base model without the adapter (into DIR/base and "
                   "DIR/adapter) and print the comparison", store_true=True)),
    ("compare", F(("--compare",), "compare", "compare two finished evaluation folders instead of running one",
                  nargs=2, metavar=("DIR_A", "DIR_B"))),
    ("infer_backend", F(("--infer_backend",), "infer_backend", "pt (PyTorch) or vllm when it is installed",
                        choices=("pt", "vllm"))),
    ("api_base", F(("--api_base",), "api_base", "evaluate the model served at this OpenAI-compatible URL (e.g. "
                   "http://127.0.0.1:8000/v1) instead of loading one; --batch_size requests at a time", metavar="URL")),
    ("served_model", F(("--served_model",), "served_model", "the model name to ask --api_base for (default: the only "
                       "one it lists)", metavar="NAME")),
    ("remote_api_key", F(("--api_key",), "api_key", "the key sent to --api_base as a Bearer token (default: "
                         "$OPENAI_API_KEY if set)", metavar="KEY")),
    # --- deploy (serve.config.DeployArgs holds the defaults) ---
    ("adapters", F(("--adapters",), "adapters", "LoRA checkpoints of the same base to serve beside it, each chosen by "
                   "a request's model name", nargs="+", metavar="NAME=CHECKPOINT")),
    ("served_model_name", F(("--served_model_name",), "served_model_name", "the name clients ask for",
                            none_means="the model folder's name")),
    ("host", F(("--host",), "host", "address to listen on (0.0.0.0: every interface; then set --api_key)")),
    ("port", F(("--port",), "port", parse=int)),
    ("api_key", F(("--api_key",), "api_key", "require this Bearer key from clients (default: none)", metavar="KEY")),
    ("max_batch_size", F(("--max_batch_size",), "max_batch_size", "rows generated together at most", int)),
    ("max_queue", F(("--max_queue",), "max_queue", "requests running or waiting at most; more get 429", int)),
    ("batch_wait_ms", F(("--batch_wait_ms",), "batch_wait_ms", "how long an idle worker waits for the rest of a "
                        "burst of requests before starting a batch", finite_float, metavar="MS")),
    # --- plot ---
    ("run_dir", F(("run_dir",), "run_dir", "a run folder (output/<model>/v<N>-<timestamp>)")),
    # --- quickstart ---
    ("train_rows", F(("--train_rows",), "train_rows", "training rows (default: sized for a 2-core CPU)", int)),
    ("task", F(("--task",), "task", "built-in task to learn and measure (rg:TASK without the prefix): number_sequence, "
               "chain_sum, arithmetic, equations, gsm-symbolic, syllogism, ...; `mathtune data list` names them all",
               none_means="by device: the GSM recipe on CUDA, number_sequence elsewhere")),
    # --- data actions ---
    ("sources", F(("sources",), "sources", "files, folders, rg:TASK or hub sets", nargs="+", metavar="SRC[#N]")),
    ("rows", F(("-n", "--rows"), "rows", "rows to show per source", int)),
    ("color", F(("--color",), "color", "color trained tokens (auto: on a tty)", choices=("auto", "always", "never"))),
    ("tokenizer_model", F(("--model",), "model", "whose tokenizer and chat template to use (default: the embedded "
                          "model)", metavar="PATH_OR_ID")),
    ("train", F(("--train",), "train", "training sources (#N ignored: all rows)", nargs="+", metavar="SRC",
                required=True)),
    ("against", F(("--against",), "against", "benchmarks to compare with (e.g. rg:gsm-symbolic)", nargs="+",
                  metavar="BENCH", required=True)),
    ("ngram", F(("--ngram",), "ngram", "n-gram length that counts as overlap", int)),
    ("drop", F(("--drop",), "drop", "write the training rows without the overlapping ones (exit 0)",
               metavar="OUT.jsonl")),
    # --- rlhf (GRPO; TRL GRPOConfig / ms-swift names; GrpoArgs holds the defaults) ---
    ("rl_model", F(("--model_id_or_path", "--model", "--ckpt_dir"), "model_id_or_path", "the model to start from: "
                   "a folder, hub id, merged folder or sft checkpoint (a LoRA one is merged in first) (default: the "
                   "embedded SmolLM2-135M-Instruct)", metavar="PATH_OR_ID")),
    ("rlhf_type", F(("--rlhf_type",), "rlhf_type", "grpo, the only one for now", choices=RLHF_TYPES)),
    ("grpo_batch_size", F(("--batch_size", "--per_device_train_batch_size"), "batch_size", "completions per "
                          "micro-batch of the policy loss; an optimizer step takes batch_size x "
                          "gradient_accumulation_steps completions, num_generations per prompt", int)),
    ("num_generations", F(("--num_generations",), "num_generations", "completions per prompt", int)),
    ("max_completion_length", F(("--max_completion_length",), "max_completion_length",
                                "longest completion in tokens", int)),
    ("reward_funcs", F(("--reward_funcs",), "reward_funcs", "accuracy, format, or functions from --external_plugins",
                       nargs="+", metavar="NAME")),
    ("reward_weights", F(("--reward_weights",), "reward_weights", "one weight per reward function", finite_float,
                         nargs="+", metavar="W", none_means="all 1")),
    ("external_plugins", F(("--external_plugins",), "external_plugins", "Python files defining reward functions",
                           nargs="+", metavar="FILE.py")),
    ("beta", F(("--beta",), "beta", "KL weight to the reference policy (0: none is computed; ms-swift uses 0.04)",
               finite_float)),
    ("epsilon", F(("--epsilon",), "epsilon", "ratio clipping", finite_float)),
    ("epsilon_high", F(("--epsilon_high",), "epsilon_high", "upper ratio clipping; DAPO uses 0.28", finite_float,
                       none_means="--epsilon")),
    ("loss_type", F(("--loss_type",), "loss_type", "the loss's normalisation (ms-swift uses grpo)",
                    choices=GRPO_LOSS_TYPES)),
    ("scale_rewards", F(("--scale_rewards",), "scale_rewards", "divide advantages by the reward std of the group, "
                        "the batch, or none")),
    ("num_iterations", F(("--num_iterations",), "num_iterations", "optimizer steps per generation batch", int)),
    ("grpo_temperature", F(("--temperature",), "temperature", "sampling temperature", float)),
    ("grpo_top_p", F(("--top_p",), "top_p", "nucleus sampling", float)),
    ("dynamic_sample", _b("--dynamic_sample", help="drop groups whose rewards are all equal (no learning signal) and "
                          "sample more questions in their place (ms-swift's name for DAPO's dynamic sampling)")),
    ("max_resample_times", F(("--max_resample_times",), "max_resample_times", "with --dynamic_sample, extra "
                             "sampling rounds per step at most", int, metavar="N")),
    ("log_completions_steps", F(("--log_completions_steps",), "log_completions_steps",
                                "write sampled completions every N steps", int, metavar="N")),
    ("log_completions", _b("--log_completions", help="accepted for TRL users: completions.jsonl is always written")),
]}


@dataclass(frozen=True)
class Section:
    """Flags that fill the fields of one config dataclass; `config` None: flags read by the verb itself, or accepted
    and ignored (`--config`, sft's `--infer_backend`)."""

    name: str
    config: type | None
    keys: tuple[str, ...]

    @property
    def flags(self) -> list[Flag]:
        return [FLAGS[key] for key in self.keys]


def add_flags(parser: argparse.ArgumentParser, sections: Sequence[Section]) -> None:
    """The sections' flags, one argument group per section."""
    for section in sections:
        group = parser.add_argument_group(section.name) if section.name else parser
        for flag in section.flags:
            flag.add_to(group, section.config)


def typed(namespace: argparse.Namespace, sections: Sequence[Section]) -> list[Any]:
    """One config per section that has a dataclass, in order, from the flags typed (lists become tuples); the
    dataclasses' `__post_init__` checks them, so a bad value is one UserError naming its flag."""
    given = vars(namespace)
    built = []
    for section in sections:
        if section.config is None:
            continue
        values = {f.field: _tupled(given[f.field]) for f in section.flags if f.field in given}
        try:
            built.append(section.config(**values))
        except TypeError as exc:  # a flag mapped onto a field its dataclass lacks: a table mistake, said plainly
            raise UserError(f"flags: {exc}") from None
    return built


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def aliases(sections: Iterable[Section]) -> dict[str, str]:
    """Every other spelling of the sections' flags -> the field it fills (`lora_r` -> `lora_rank`), for YAML keys."""
    return {name.lstrip("-"): flag.field for section in sections for flag in section.flags
            for name in flag.names if name.lstrip("-") != flag.field}


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every --flag a parser takes, its sub-commands' included."""
    names: list[str] = []
    for action in parser._actions:
        names += [name for name in action.option_strings if name.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                names += option_names(sub)
    return list(dict.fromkeys(names))


def did_you_mean(message: str, names: Sequence[str]) -> str:
    """argparse's 'unrecognized arguments: --datset x' with the closest flag names of the verb added."""
    hints = []
    for token in message.removeprefix("unrecognized arguments:").split():
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            close = difflib.get_close_matches(name, names, n=3)
            if close:
                hints.append((name, f"did you mean {', '.join(close[:-1])}{' or ' if len(close) > 1 else ''}"
                                    f"{close[-1]}?"))
    if len(hints) == 1:
        return f" ({hints[0][1]})"
    return f" ({'; '.join(f'{name}: {hint}' for name, hint in hints)})" if hints else ""
