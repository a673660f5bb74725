"""Resolve a model (embedded default, local folder, hub id, adapter checkpoint), load it, attach LoRA.

Weights are read from safetensors only. A folder holding only pickled weights (pytorch_model.bin, *.pt, *.pth) is
refused rather than unpickled: transformers and peft load them with torch.load(weights_only=True), but that
unpickler is a narrower attack surface, not none (before torch 2.6 it could be made to run code, CVE-2025-32434),
and converting a model once to safetensors is cheap. A repository's own Python code runs only with
--trust_remote_code true.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError, first_line

PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def resolve_model_path(model: str | None) -> Path:
    """A local folder for `model`: None means the embedded default; a hub id is downloaded (or taken from the cache)."""
    if model is None or model in ("", "default", "embedded"):
        from .embedded import embedded_model_dir

        return embedded_model_dir()
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path '{model}' is a file; pass the folder that holds config.json")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UserError(run_folder_hint(path, f"model folder '{model}'") or
                            f"model folder '{model}' has no config.json")
        return path
    if not HUB_ID.match(model) or model.startswith((".", "/", "~")):
        raise UserError(f"model path '{model}' does not exist")
    return _download(model)


def run_folder_hint(path: Path, label: str) -> str | None:
    """For a run folder passed where a checkpoint is expected: a line naming its checkpoints and the newest one."""
    found = sorted((int(p.name.split("-", 1)[1]), p.name) for p in path.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-", 1)[1].isdigit()) if path.is_dir() else []
    if not found:
        return None
    names = [name for _, name in found]
    shown = ", ".join(names[:5]) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")
    return (f"{label} is a run folder, not a checkpoint; its checkpoints: {shown}; the newest is "
            f"'{path / names[-1]}'")


def _download(model_id: str) -> Path:
    """Fetch a hub model (ModelScope when USE_MODELSCOPE_HUB=1 and its client is installed, else Hugging Face)."""
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]
    try:
        if os.environ.get("USE_MODELSCOPE_HUB") == "1":
            from modelscope import snapshot_download as ms_download

            return Path(ms_download(model_id, allow_patterns=patterns))
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except ImportError as exc:
        raise UserError(f"cannot fetch '{model_id}': {exc.name} is not installed") from None
    except Exception as exc:  # noqa: BLE001 - any hub failure (offline, 404, auth) ends in one line
        raise UserError(
            f"could not fetch model '{model_id}' from the hub ({first_line(exc, 160)}); "
            "download it where a hub is reachable and pass the local folder with --model_id_or_path PATH"
        ) from None


def unwrap(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attention_layers(model) -> list:
    """The attention modules of a transformers model (or a peft model around one): those transformers hands to an
    attention function, recognised by their `is_causal` and `layer_idx`."""
    return [m for m in unwrap(model).modules() if hasattr(m, "is_causal") and hasattr(m, "layer_idx")]


def backbone_of(model):
    """The decoder stack of a causal LM (`model.model` for Llama), or None."""
    base = unwrap(model)
    return getattr(base, getattr(base, "base_model_prefix", "model"), None)


def model_name(path: Path, requested: str | None = None) -> str:
    """The run-dir name of a model, SWIFT style: 'Yi-1.5-6B-Chat' -> 'yi-1_5-6b-chat'.

    A hub model resolves to a snapshot folder named by its commit hash, so the id the user typed names it instead.
    """
    name = path.name
    if requested and not Path(requested).expanduser().exists() and HUB_ID.match(requested):
        name = requested.rsplit("/", 1)[-1]
    return name.lower().replace(".", "_") or "model"


def end_of_turn_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token that ends an assistant turn: the tokenizer's eos, the template's end token, generation_config's eos.

    Yi-1.5's generation_config names a different eos than its tokenizer; taking the union makes generation stop.
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is not None:
        ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(ids)


def load_tokenizer(path: Path | str | None, trust_remote_code: bool = False):
    """The tokenizer of a model folder, with a pad token and a chat template guaranteed."""
    from transformers import AutoTokenizer

    folder = resolve_model_path(str(path) if path is not None else None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing or malformed tokenizer files
        raise UserError(f"cannot load the tokenizer of '{folder}': {first_reason(exc)}") from None
    if tokenizer.pad_token is None:
        end = [t for t in END_OF_TURN_TOKENS if t in tokenizer.get_vocab()]
        tokenizer.pad_token = end[0] if end else tokenizer.eos_token
    if not tokenizer.chat_template:
        raise UserError(f"tokenizer of '{folder}' has no chat template; use a chat model")
    return tokenizer


def resolve_dtype(dtype: str, device: str):
    """'AUTO' picks bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU (bf16 matmuls are slow there)."""
    import torch

    name = dtype.lower()
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise UserError(f"--dtype '{dtype}' is not one of AUTO, bf16, fp16, fp32")
    return table[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: Path, dtype: str = "AUTO", device: str | None = None, attn_implementation: str | None = None,
               trust_remote_code: bool = False):
    """A causal LM from a local folder, on `device`, in the resolved dtype."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    require_safetensors(Path(path))
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device), "trust_remote_code": trust_remote_code,
                              "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:  # missing, truncated or mismatched files
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise UserError(f"model '{path}' needs its own Python code to load, which mathtune runs only with "
                            "--trust_remote_code true, for code you trust") from None
        raise UserError(f"cannot load model from '{path}': {first_reason(exc)}") from None
    return model.to(device)


def require_safetensors(folder: Path, what: str = "model") -> None:
    """Refuse a folder whose weights exist only in pickle form (see the module docstring)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
    if pickled:
        raise UserError(f"{what} folder '{folder}' holds weights only as pickle ({pickled[0]}), which mathtune does "
                        "not load because unpickling can run code; convert it to safetensors first")


def first_reason(exc: BaseException) -> str:
    """One line out of a library error: a 'size mismatch' line where there is one (torch lists missing keys before
    it, which say less), else the first line."""
    return first_line(exc, 240, prefer="size mismatch")


def attach_lora(model, rank: int, alpha: int, dropout: float, target_modules: str | list[str]):
    """Wrap `model` with fresh LoRA adapters; only they are trainable."""
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if target_modules in ("all-linear", "all", ["all-linear"], ["all"]) else target_modules
    check_rank(model, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"--target_modules {target_modules}: {first_line(exc)}") from None


def check_rank(model, rank: int) -> None:
    """Refuse a LoRA rank beyond the model's hidden size before any adapter is allocated: such a rank adapts nothing a
    full fine-tune would not, and 100,000 would allocate gigabytes before failing."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if rank < 1 or (hidden and rank > hidden):
        raise UserError(f"--lora_rank {rank}: must be between 1 and the model's hidden size {hidden:,}"
                        if hidden else f"--lora_rank {rank}: must be a positive whole number")


def check_target_modules(model, target_modules: str | list[str] | tuple[str, ...]) -> None:
    """One line before any slow work when a --target_modules name matches no module (peft's rule: the module's
    name is the target or ends with '.' + target); peft itself finds out only when the adapters are attached."""
    if target_modules in ("all-linear", "all") or list(target_modules) in (["all-linear"], ["all"]):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise UserError(f"--target_modules {' '.join(missing)}: no such module in this model (its linear layers: "
                        f"{', '.join(linear)})")


@contextmanager
def quiet_peft():
    """peft reads `is_gradient_checkpointing`, which transformers 5 deprecated; the warning it prints on every
    adapter says nothing to a user and would break the promise of one line on stderr for an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # Loading an adapter onto its base by another spelling of the path: the fingerprint, not the name, decides.
        warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*was renamed.*", category=UserWarning)
        yield


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def base_of_adapter(adapter: Path) -> str | None:
    """The base model an adapter checkpoint was trained on: its own record first (adapters.recorded_base), then the
    run's (run_dir.base_model_of)."""
    from .adapters import recorded_base
    from .run_dir import base_model_of  # run_dir reads the run's args.json; imported here, not at load time

    return recorded_base(adapter) or base_model_of(adapter)


def load_for_inference(model: str | None, adapter: str | None = None, dtype: str = "AUTO", device: str | None = None,
                       trust_remote_code: bool = False):
    """(model, tokenizer, description) for any of: base model, adapter checkpoint, merged folder.

    `model` may itself be an adapter checkpoint (as `swift infer --ckpt_dir` takes one); its base is then found
    from the run that wrote it.
    """
    if model and adapter is None and Path(model).is_dir() and is_adapter_dir(Path(model)):
        adapter, model = model, base_of_adapter(Path(model))
        if model and not Path(model).expanduser().exists() and not HUB_ID.match(model):
            raise UserError(f"adapter '{adapter}' was trained on '{model}', which does not exist any more; pass the "
                            f"base model: --ckpt_dir BASE --adapter {adapter}")
    if adapter is not None:
        if not is_adapter_dir(Path(adapter)):
            raise UserError(run_folder_hint(Path(adapter), f"adapter '{adapter}'") or
                            f"adapter '{adapter}' has no adapter_config.json")
        if not (Path(adapter) / "adapter_model.safetensors").is_file():
            require_safetensors(Path(adapter), "adapter")
            raise UserError(f"adapter '{adapter}' has no adapter_model.safetensors")
    base_path = resolve_model_path(model)
    tokenizer = load_tokenizer(base_path, trust_remote_code)
    loaded = load_model(base_path, dtype, device, trust_remote_code=trust_remote_code)
    description = str(base_path)
    if adapter is not None:
        from .adapters import load_adapter

        loaded = load_adapter(loaded, Path(adapter), base_path)
        description = f"{base_path} + {adapter}"
    loaded.eval()
    return loaded, tokenizer, description
