"""A LoRA adapter checkpoint, checked before it is trusted: its config (before anything is allocated), its weights
(every tensor the config implies, no other, as resume checks them), and the base model it was trained on (a
fingerprint of the base recorded at save time, compared at load time).

export, infer and eval load adapters through `load_adapter`; a checkpoint records its base with `write_base_record`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from .errors import UserError, first_line

BASE_RECORD = "mathtune_base.json"
# Tensors whose first values the fingerprint reads: the embedding and the first layer exist in every decoder LM.
_FINGERPRINT_PICKS = 3
_FINGERPRINT_VALUES = 256


def fingerprint(model_dir: Path) -> str | None:
    """A cheap fingerprint of a model folder's weights: the names, shapes and dtypes of all its tensors and the bytes
    of the first values of a few of them, read from the safetensors headers and slices (no full load). None for a
    folder without safetensors."""
    import torch
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    named: list[tuple[str, Path]] = []
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in sorted(f.keys()):
                part = f.get_slice(name)
                digest.update(f"{name}:{part.get_shape()}:{part.get_dtype()};".encode())
                named.append((name, file))
    named.sort()
    picks = {named[0], named[len(named) // 2], named[-1]} if len(named) >= _FINGERPRINT_PICKS else set(named)
    for name, file in sorted(picks):
        with safe_open(file, framework="pt") as f:
            part = f.get_slice(name)
            rows = part[:1] if part.get_shape() else f.get_tensor(name)
            values = rows.reshape(-1)[:_FINGERPRINT_VALUES].contiguous()
            digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def write_base_record(folder: Path, base_dir: Path, requested: str | None, print_fingerprint: str | None) -> None:
    """Record in an adapter checkpoint which base it was trained on: the absolute folder, the name as typed (a hub
    id: its snapshot folder names the revision), and the fingerprint."""
    record = {"path": str(Path(base_dir).resolve()), "requested": requested, "fingerprint": print_fingerprint}
    (folder / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_base_record(adapter: Path) -> dict[str, Any] | None:
    """The checkpoint's record of its base model, or None for a checkpoint written before it was recorded."""
    file = adapter / BASE_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"'{file}' is not valid JSON; cannot tell the base model of adapter '{adapter}'") from None
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise UserError(f"'{file}': expected an object with the base model's 'path'")
    return record


def recorded_base(adapter: Path) -> str | None:
    """The base to load for `adapter` from its record: the absolute folder while it exists, else the hub id typed."""
    record = read_base_record(adapter)
    if record is None:
        return None
    if Path(record["path"]).is_dir():
        return record["path"]
    requested = record.get("requested")
    return requested if isinstance(requested, str) and not Path(requested).expanduser().exists() else record["path"]


def check_base(adapter: Path, base_dir: Path) -> None:
    """Refuse a base whose weights are not those the adapter was trained on (same name, other model)."""
    record = read_base_record(adapter)
    if record is None or not record.get("fingerprint"):
        return
    found = fingerprint(base_dir)
    if found is not None and found != record["fingerprint"]:
        raise UserError(f"adapter '{adapter}' was trained on base '{record['path']}' (fingerprint "
                        f"{record['fingerprint']}), but '{base_dir}' has other weights (fingerprint {found}); pass the "
                        "base model it was trained on")


def read_adapter_config(adapter: Path, base_config: Any):
    """peft's LoraConfig of `adapter`, refused in one line where peft would misread it or allocate without bound: no
    target_modules (peft would silently pick q,v only), a rank beyond the base's hidden size, layer_replication."""
    from peft import LoraConfig

    file = adapter / "adapter_config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"'{file}' is not valid JSON") from None
    if not isinstance(raw, dict):
        raise UserError(f"'{file}': expected a JSON object")
    if raw.get("peft_type", "LORA") != "LORA":
        raise UserError(f"'{file}': peft_type {raw.get('peft_type')!r} is not LORA, the only kind mathtune trains")
    if raw.get("layer_replication"):
        raise UserError(f"'{file}': layer_replication is not supported (mathtune never writes it)")
    targets = raw.get("target_modules")
    if not targets or not isinstance(targets, (str, list)):
        raise UserError(f"'{file}': target_modules is missing or empty, so it does not say which layers it adapts")
    hidden = getattr(base_config, "hidden_size", None)
    for key in ("r", "lora_alpha"):
        value = raw.get(key, 8)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"'{file}': {key} must be a positive whole number, got {value!r}")
    if hidden and raw.get("r", 8) > hidden:
        raise UserError(f"'{file}': rank r={raw['r']:,} is beyond the base model's hidden size {hidden:,}; "
                        "this adapter was not trained on this base")
    try:
        return LoraConfig.from_pretrained(str(adapter))
    except (TypeError, ValueError) as exc:
        raise UserError(f"'{file}': {first_line(exc)}") from None


def load_adapter(model, adapter: Path, base_dir: Path):
    """`model` wrapped with the LoRA adapter in `adapter`, for inference: its config checked first, then the weights
    loaded as resume loads them (each tensor the config implies present with its shape, nothing else), then the
    base's fingerprint compared with the one recorded at save time."""
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_adapter_config(adapter, model.config)
    config.inference_mode = True
    weights_file = adapter / "adapter_model.safetensors"
    try:
        with warnings.catch_warnings():  # peft's deprecation and renamed-base notes say nothing to a user
            warnings.simplefilter("ignore")
            wrapped = get_peft_model(model, config)
        state = load_file(weights_file)
        result = set_peft_model_state_dict(wrapped, state)
    except (FileNotFoundError, SafetensorError) as exc:
        raise UserError(f"adapter '{adapter}' has no readable weights ({_reason(exc)})") from None
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"adapter '{adapter}' does not fit base model '{base_dir}': {_reason(exc)}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        expected = len([k for k in wrapped.state_dict() if "lora_" in k])
        names = (list(result.unexpected_keys) + missing)[:2]
        raise UserError(f"adapter '{adapter}' does not fit base model '{base_dir}': it holds {len(state)} tensors, "
                        f"the config implies {expected} ({', '.join(names)})")
    check_base(adapter, base_dir)  # after the shapes: another shape says 'size mismatch', the same shape this
    return wrapped


def _reason(exc: BaseException) -> str:
    """A 'size mismatch' line where torch gives one (it lists missing keys first, which say less), else the first."""
    return first_line(exc, 240, prefer="size mismatch")
