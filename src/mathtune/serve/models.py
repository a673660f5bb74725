"""What `mathtune deploy` serves: one network in memory and the names a request may ask for.

`--ckpt_dir` (a base, merged folder or adapter checkpoint, loaded as `infer` loads it) is served under
`--served_model_name`; each `--adapters NAME=CHECKPOINT` is a LoRA adapter of the same base put on that one network
(peft's named adapters), chosen per batch, so several fine-tunes share the base's memory.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import DeployArgs

BASE = ""  # the peft adapter name that stands for 'no adapter': the base model itself


@dataclass
class ServedModels:
    """The network, its tokenizer and served name -> peft adapter name (BASE: adapters switched off)."""

    network: Any
    tokenizer: Any
    names: dict[str, str]
    description: str
    context: int | None = field(default=None)

    def __post_init__(self) -> None:
        self.context = getattr(getattr(self.network, "config", None), "max_position_embeddings", None)

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """The network answering as `name` while the block runs (the batch worker alone calls this)."""
        adapter = self.names[name]
        if adapter == BASE:
            wrapped = hasattr(self.network, "disable_adapter")
            with self.network.disable_adapter() if wrapped else contextlib.nullcontext():
                yield
            return
        self.network.set_adapter(adapter)
        yield


def load_served(args: DeployArgs) -> ServedModels:
    """Load --ckpt_dir (default: the embedded model) and put every --adapters checkpoint on it; one line for any
    checkpoint that does not fit the base."""
    from ..model import (
        base_of_adapter,
        is_adapter_dir,
        load_for_inference,
        model_name,
        resolve_model_path,
        run_folder_hint,
    )

    table = args.adapter_table()
    for name, path in table.items():
        if not is_adapter_dir(Path(path)):
            raise UserError(run_folder_hint(Path(path), f"--adapters {name}={path}") or
                            f"--adapters {name}={path}: no adapter_config.json there (is it a LoRA checkpoint?)")
    requested = args.model
    if requested is None and table:  # adapters alone: their base, as recorded by the run that trained the first
        first = next(iter(table.values()))
        requested = base_of_adapter(Path(first))
        if requested is None:
            raise UserError(f"--adapters: cannot tell which base '{first}' was trained on; pass it with --model")
    own_adapter = requested is not None and Path(requested).is_dir() and is_adapter_dir(Path(requested))
    base_requested = base_of_adapter(Path(requested)) if own_adapter else requested
    base_path = resolve_model_path(base_requested)
    network, tokenizer, description = load_for_inference(requested, dtype=args.dtype,
                                                        trust_remote_code=args.trust_remote_code)
    served = args.served_model_name or (checkpoint_name(Path(requested)) if own_adapter else
                                        model_name(base_path, base_requested))
    names = {served: "default" if own_adapter else BASE}
    for number, (name, path) in enumerate(table.items(), start=1):
        wrapped = hasattr(network, "peft_config")
        network = _put_adapter(network, f"a{number}", Path(path), base_path)
        names[name] = f"a{number}" if wrapped else "default"  # the first adapter wraps the base: peft's 'default'
        description += f" + {name}={path}"
    network.eval()
    return ServedModels(network, tokenizer, names, description)


def checkpoint_name(path: Path) -> str:
    """A checkpoint's served name: 'checkpoint-100' says little alone, so its run folder's name comes first."""
    path = path.resolve()
    return f"{path.parent.name}-{path.name}" if path.name.startswith("checkpoint-") else path.name


def _put_adapter(network: Any, peft_name: str, path: Path, base_path: Path) -> Any:
    """`network` with the adapter at `path` added: the first wraps the base exactly as `infer` does (peft names it
    'default'); later ones are added beside it under `peft_name`, their tensors checked as the first's are."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..adapters import check_base, load_adapter, read_adapter_config

    if not hasattr(network, "peft_config"):
        return load_adapter(network, path, base_path)
    config = read_adapter_config(path, network.get_base_model().config)
    config.inference_mode = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network.add_adapter(peft_name, config)
        state = load_file(path / "adapter_model.safetensors")
        result = set_peft_model_state_dict(network, state, adapter_name=peft_name)
    except (FileNotFoundError, SafetensorError) as exc:
        raise UserError(f"adapter '{path}' has no readable weights ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"adapter '{path}' does not fit base model '{base_path}': {str(exc).splitlines()[0]}") from None
    missing = [k for k in result.missing_keys if "lora_" in k and f".{peft_name}." in k]
    if result.unexpected_keys or missing:
        raise UserError(f"adapter '{path}' does not fit base model '{base_path}' "
                        f"({', '.join((list(result.unexpected_keys) + missing)[:2])})")
    check_base(path, base_path)
    return network
