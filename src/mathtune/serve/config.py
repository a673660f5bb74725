"""Typed options of `mathtune deploy` (no heavy imports: the flag table reads the defaults from here)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError

# An adapter's served name: what a client passes as `model`; no spaces or '=' (the flag's separator).
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][\w.:/-]*$")


@dataclass(frozen=True)
class DeployArgs:
    """What `mathtune deploy` serves and how."""

    model: str | None = None  # a model folder, hub id, adapter checkpoint or merged folder; None: the embedded model
    adapters: tuple[str, ...] = ()  # NAME=CHECKPOINT: LoRA adapters of the same base, chosen by a request's model
    served_model_name: str | None = None  # None: the model folder's name
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: no authentication
    infer_backend: str = "pt"
    dtype: str = "AUTO"
    trust_remote_code: bool = False
    max_new_tokens: int = 512  # a request's max_tokens when it gives none (cut to what the context leaves)
    # Rows one generation step holds. A decoding step of a small model is launch-bound on a GPU, so a wide batch costs
    # little more per step than one row; 128 covers the load test's widest level in one batch.
    max_batch_size: int = 128
    max_queue: int = 512  # requests admitted (running or waiting); one more is answered 429
    # How long the worker waits for the rest of a burst once a request arrived and the worker was idle: clients that
    # got their answers together send their next questions within a few ms of each other, and without the wait the
    # first one would start a batch of one while the others queue behind its whole reply.
    batch_wait_ms: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be 0-65535, got {self.port}")
        if self.infer_backend not in ("pt", "vllm"):
            raise UserError(f"--infer_backend must be pt or vllm, got '{self.infer_backend}'")
        if self.max_new_tokens < 1 or self.max_batch_size < 1 or self.max_queue < 1:
            raise UserError("--max_new_tokens, --max_batch_size and --max_queue must be positive")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise UserError(f"--batch_wait_ms must be 0-10000, got {self.batch_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key is empty: pass a key, or leave the flag out to serve without one")
        if self.served_model_name is not None and not ADAPTER_NAME.match(self.served_model_name):
            raise UserError(f"--served_model_name '{self.served_model_name}': use letters, digits and . _ - : /")
        self.adapter_table()  # a bad NAME=PATH fails before anything loads

    def adapter_table(self) -> dict[str, str]:
        """--adapters as {served name: checkpoint}; one line for a malformed or repeated entry."""
        table: dict[str, str] = {}
        for entry in self.adapters:
            name, sep, path = entry.partition("=")
            if not sep or not path or not ADAPTER_NAME.match(name):
                raise UserError(f"--adapters '{entry}': expected NAME=CHECKPOINT, NAME of letters, digits, . _ - : /")
            if name in table or name == self.served_model_name:
                raise UserError(f"--adapters: the name '{name}' is given twice")
            table[name] = path
        return table
