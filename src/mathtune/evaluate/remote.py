"""Evaluate a model behind any OpenAI-compatible endpoint (`mathtune eval --api_base URL --served_model NAME`): the
same chat messages as a local run (the runner renders them; the server applies its own chat template), the same
grading and files. Requests go out `--batch_size` at a time from a thread pool; plain HTTP from the standard library,
so evaluating needs nothing installed beyond mathtune.

Output token counts are the server's own (`usage.completion_tokens`): the evaluating side may not have the served
model's tokenizer. With `--num_samples` K > 1 a request's count is shared evenly among its K replies (OpenAI reports
one total), so per-reply counts are approximate while the benchmark's mean is exact. `--seed` is not sent: on
`mathtune deploy` a seeded request runs alone, unbatched.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

RETRIES = 5  # 429 (server queue full), 5xx and dropped connections are retried with backoff from 0.5 s
TIMEOUT_S = 3600  # one request; a long reply on a slow server may take minutes


@dataclass(frozen=True)
class RemoteArgs:
    """Which served model `mathtune eval` asks, instead of loading one."""

    api_base: str | None = None  # e.g. http://127.0.0.1:8000/v1
    served_model: str | None = None  # None: the only model the server lists
    api_key: str | None = None  # None: $OPENAI_API_KEY when set

    def __post_init__(self) -> None:
        if self.api_base is None:
            if self.served_model is not None or self.api_key is not None:
                raise UserError("--served_model and --api_key go with --api_base")
            return
        if not self.api_base.startswith(("http://", "https://")):
            raise UserError(f"--api_base '{self.api_base}': expected an http:// or https:// URL, e.g. "
                            "http://127.0.0.1:8000/v1")
        object.__setattr__(self, "api_base", self.api_base.rstrip("/"))

    def key(self) -> str | None:
        return self.api_key or os.environ.get("OPENAI_API_KEY") or None


def check_job(remote: RemoteArgs, *, model: str | None, adapter: str | None, loaded: Any, baseline: bool,
              settings: Any) -> None:
    """--api_base evaluates what the server serves: a local model, --baseline or another backend makes no sense."""
    if model is not None or adapter is not None or loaded is not None:
        raise UserError("--api_base evaluates the served model: drop --model/--ckpt_dir and --adapter")
    if baseline:
        raise UserError("--baseline needs the adapter locally; with --api_base evaluate each served model and "
                        "compare the two folders with --compare")
    if settings.infer_backend != "pt" or settings.static_cache:
        raise UserError("--infer_backend and --static_cache are the server's business under --api_base")
    from ..distributed import launched

    if launched():  # the server batches the requests; several ranks would only split the token counts apart
        raise UserError("--api_base runs in one process: drop NPROC_PER_NODE (or torchrun); the server batches")


def post(remote: RemoteArgs, path: str, body: dict[str, Any] | None = None, retries: int = RETRIES) -> dict[str, Any]:
    """One JSON request, retried on 429, 5xx and dropped connections; any other failure is one UserError line."""
    headers = {"Content-Type": "application/json"}
    if remote.key():
        headers["Authorization"] = f"Bearer {remote.key()}"
    data = json.dumps(body).encode() if body is not None else None
    url = f"{remote.api_base}/{path}"
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data, headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if (exc.code == 429 or exc.code >= 500) and attempt < retries:
                time.sleep(0.5 * 2**attempt)
                continue
            raise UserError(f"--api_base {url} answered {exc.code}: {_message(exc)}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if attempt < retries:
                time.sleep(0.5 * 2**attempt)
                continue
            reason = getattr(exc, "reason", exc)
            raise UserError(f"--api_base {url}: cannot reach the server ({reason})") from None
        except json.JSONDecodeError:
            raise UserError(f"--api_base {url}: the answer is not JSON (is it an OpenAI-compatible server?)") from None
    raise AssertionError("unreachable")


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


def pick_model(remote: RemoteArgs) -> str:
    """--served_model, checked against the server's list; or the only model it lists."""
    # no retries: a server that is not there at the start is a wrong URL, said at once
    listed = [entry.get("id") for entry in post(remote, "models", retries=0).get("data", []) if isinstance(entry, dict)]
    if remote.served_model is not None:
        if listed and remote.served_model not in listed:
            raise UserError(f"--served_model '{remote.served_model}' is not served at {remote.api_base}; it serves: "
                            f"{', '.join(map(str, listed))}")
        return remote.served_model
    if len(listed) != 1:
        raise UserError(f"{remote.api_base} serves {len(listed)} models ({', '.join(map(str, listed))}); "
                        "name one with --served_model")
    return str(listed[0])


class ServerCounts:
    """Stands in for the tokenizer where the runner counts output tokens: the counts the server reported for the
    last call's replies, in their order (not keyed by text: two questions answered "42" have their own counts)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.counts: list[int] = []

    def record(self, texts: list[str], counts: list[int]) -> None:
        self.texts, self.counts = texts, counts

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = False) -> dict[str, list[range]]:
        if list(texts) != self.texts:
            raise ValueError("server token counts are known only for the last call's replies, in their order")
        return {"input_ids": [range(n) for n in self.counts]}


def remote_generator(remote: RemoteArgs, settings: Any,
                     progress: bool = True) -> tuple[Callable[[bool], Callable], ServerCounts, str]:
    """(make_generate(use_adapter), token counter, description) of the served model: the runner's pt and vllm
    backends give the same triple."""
    name = pick_model(remote)
    counts = ServerCounts()

    def ask(messages: list[dict[str, str]]) -> tuple[list[str], list[int]]:
        body = {"model": name, "messages": messages, "max_tokens": settings.max_new_tokens,
                "temperature": settings.temperature, "top_p": settings.top_p, "n": settings.num_samples}
        answer = post(remote, "chat/completions", body)
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        if len(texts) != settings.num_samples:
            raise UserError(f"--api_base: asked for {settings.num_samples} replies, got {len(texts)}")
        used = (answer.get("usage") or {}).get("completion_tokens")
        if not isinstance(used, int):
            raise UserError(f"--api_base {remote.api_base}: the answer has no usage.completion_tokens")
        return texts, [used // len(texts) + (k < used % len(texts)) for k in range(len(texts))]

    def make_generate(use_adapter: bool) -> Callable[[list[list[dict[str, str]]]], list[list[str]]]:
        def generate_fn(conversations: list[list[dict[str, str]]]) -> list[list[str]]:
            from tqdm.auto import tqdm

            with ThreadPoolExecutor(settings.batch_size) as pool, \
                    tqdm(total=len(conversations), desc="requests", unit="q", disable=not progress) as bar:
                futures = [pool.submit(ask, messages) for messages in conversations]
                for future in futures:
                    future.add_done_callback(lambda _: bar.update(1))
                try:
                    answers = [future.result() for future in futures]
                except BaseException:
                    for future in futures:  # one failure ends the run: do not send the rest
                        future.cancel()
                    raise
            counts.record([t for texts, _ in answers for t in texts], [n for _, used in answers for n in used])
            return [texts for texts, _ in answers]

        return generate_fn

    return make_generate, counts, f"{name} at {remote.api_base}"
