"""`mathtune deploy`: serve a model (base, adapter checkpoint, merged folder, several adapters of one base) over an
OpenAI-compatible API, its concurrent requests batched through `generate.Generator` (see batcher.py); or, with
`--infer_backend vllm`, start vLLM's own OpenAI server on the same model."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .config import DeployArgs

__all__ = ["DeployArgs", "deploy", "vllm_command"]


def deploy(args: DeployArgs) -> int:
    """Serve until Ctrl-C or SIGTERM, which stop taking requests, finish those in flight and exit (0)."""
    if args.infer_backend == "vllm":
        return _run_vllm(args)
    import uvicorn

    from .app import create_app
    from .batcher import Batcher
    from .models import load_served

    # bound before loading: a taken port fails at once, not after the model has loaded
    with _bind(args.host, args.port) as sock:
        models = load_served(args)
        batcher = Batcher(models, args.max_batch_size, args.max_queue, args.batch_wait_ms)
        app = create_app(models, batcher, args.api_key, args.max_new_tokens)
        print(f"model: {models.description}", file=sys.stderr)
        if not args.api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {args.host} without --api_key: anyone who can reach this machine can use "
                  "the model", file=sys.stderr)
        print(f"serving {', '.join(models.names)} at http://{args.host}:{sock.getsockname()[1]}/v1"
              f"{' (Bearer key required)' if args.api_key else ''}; Ctrl-C drains and stops", file=sys.stderr,
              flush=True)
        # timeout_graceful_shutdown None: on Ctrl-C uvicorn waits for every request in flight (a second Ctrl-C
        # forces)
        config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=None)
        _server_class()(config).run(sockets=[sock])
    print("stopped: every request in flight was answered", file=sys.stderr)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    try:
        # proto is IPPROTO_TCP here, which asyncio needs to set TCP_NODELAY on each connection: on a socket made with
        # proto 0 a keep-alive client waits ~40 ms per reply (Nagle's algorithm against delayed ACKs)
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that after a graceful stop it does not raise the signal again (uvicorn does, so
        the process would die by it): a server asked to stop that answered everything exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def vllm_command(args: DeployArgs) -> list[str]:
    """vLLM's OpenAI server on the same model and names: an adapter checkpoint is served as a LoRA of its base, under
    the pt backend's name for it (`--served_model_name`, else `<run>-checkpoint-N`). vLLM serves the base as well:
    it then keeps the base's own name, so that one name never stands for two models."""
    from ..model import base_of_adapter, is_adapter_dir, model_name, resolve_model_path
    from .models import checkpoint_name

    table = args.adapter_table()
    model = args.model
    named = args.served_model_name  # the name of what --model is: the base, or the adapter
    if model is not None and Path(model).is_dir() and is_adapter_dir(Path(model)):
        table = {named or checkpoint_name(Path(model)): model, **table}
        model, named = base_of_adapter(Path(model)), None
    elif model is None and table:
        model = base_of_adapter(Path(next(iter(table.values()))))
    base = resolve_model_path(model)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base), "--host", args.host,
               "--port", str(args.port), "--served-model-name", named or model_name(base, model)]
    if args.dtype.upper() != "AUTO":
        command += ["--dtype", {"BF16": "bfloat16", "FP16": "float16", "FP32": "float32"}.get(args.dtype.upper(),
                                                                                           args.dtype)]
    if args.trust_remote_code:
        command.append("--trust-remote-code")
    if table:
        command += ["--enable-lora", "--lora-modules", *(f"{name}={path}" for name, path in table.items())]
    return command  # the API key goes in VLLM_API_KEY, not on a command line that `ps` shows


def _run_vllm(args: DeployArgs) -> int:
    if importlib.util.find_spec("vllm") is None:
        raise UserError("--infer_backend vllm: vllm is not installed (pip install vllm on a CUDA machine); "
                        "or use --infer_backend pt")
    command = vllm_command(args)
    print("starting: " + " ".join(command), file=sys.stderr, flush=True)
    env = {**os.environ, "VLLM_API_KEY": args.api_key} if args.api_key else None
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # vLLM got the Ctrl-C too and shuts itself down
        return 130
