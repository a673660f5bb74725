"""Resolve a model (embedded default, local folder, hub id, adapter checkpoint), load it, attach LoRA."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import UserError

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
            raise UserError(f"model folder '{model}' has no config.json")
        return path
    if not HUB_ID.match(model) or model.startswith((".", "/", "~")):
        raise UserError(f"model path '{model}' does not exist")
    return _download(model)


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
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not fetch model '{model_id}' from the hub ({reason}); "
            "download it where a hub is reachable and pass the local folder with --model_id_or_path PATH"
        ) from None


def model_name(path: Path) -> str:
    """The run-dir name of a model, SWIFT style: 'Yi-1.5-6B-Chat' -> 'yi-1_5-6b-chat'."""
    return path.name.lower().replace(".", "_") or "model"


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
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
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
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model from '{path}': {str(exc).splitlines()[0]}") from None
    return model.to(device)


def attach_lora(model, rank: int, alpha: int, dropout: float, target_modules: str | list[str]):
    """Wrap `model` with fresh LoRA adapters; only they are trainable."""
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if target_modules in ("all-linear", "all", ["all-linear"], ["all"]) else target_modules
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"--target_modules {target_modules}: {str(exc).splitlines()[0]}") from None


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def base_of_adapter(adapter: Path) -> str | None:
    """The base model an adapter checkpoint was trained on: the run's args.json first, then peft's record."""
    args_file = adapter.parent / "args.json"
    if args_file.is_file():
        recorded = json.loads(args_file.read_text()).get("model", {}).get("model_id_or_path", "missing")
        if recorded != "missing":
            return recorded
    config = json.loads((adapter / "adapter_config.json").read_text())
    return config.get("base_model_name_or_path")


def load_for_inference(model: str | None, adapter: str | None = None, dtype: str = "AUTO", device: str | None = None,
                       trust_remote_code: bool = False):
    """(model, tokenizer, description) for any of: base model, adapter checkpoint, merged folder.

    `model` may itself be an adapter checkpoint (as `swift infer --ckpt_dir` takes one); its base is then found
    from the run that wrote it.
    """
    if model and adapter is None and Path(model).is_dir() and is_adapter_dir(Path(model)):
        adapter, model = model, base_of_adapter(Path(model))
    base_path = resolve_model_path(model)
    tokenizer = load_tokenizer(base_path, trust_remote_code)
    loaded = load_model(base_path, dtype, device, trust_remote_code=trust_remote_code)
    description = str(base_path)
    if adapter is not None:
        from peft import PeftModel

        adapter_path = Path(adapter)
        if not is_adapter_dir(adapter_path):
            raise UserError(f"adapter '{adapter}' has no adapter_config.json")
        try:
            loaded = PeftModel.from_pretrained(loaded, adapter_path)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(
                f"adapter '{adapter}' does not fit base model '{base_path}': {str(exc).splitlines()[0][:200]}"
            ) from None
        description = f"{base_path} + {adapter_path}"
    loaded.eval()
    return loaded, tokenizer, description
