#!/usr/bin/env python
"""Serving under load: `mathtune deploy`'s server (FastAPI + the batch worker) on a loopback port, driven by 1, 8, 32
and 128 concurrent streaming clients, against answering the same prompts one at a time (`infer --input
--batch_size 1`: Generator.generate with batches of one).

Per level: requests/s, output tokens/s, p50/p99 latency and time to first token (first streamed text), and the
output tokens/s as a multiple of the one-at-a-time figure. Random-weight models of the embedded model's shape
(smol135m) and of Yi-1.5-6B's (yi6b), built as in train_speed.py, with generate_speed.py's tokenizer trained on the
prompts, padded with plain added tokens to the model's vocabulary so that every generated id decodes to text (streamed
pieces are then never empty). Every reply is forced to exactly --max_tokens tokens (min_new_tokens), so random
weights do not stop early and every level does the same work per request.

The clients run in a child process (asyncio + httpx), so their parsing does not compete with the server for the GIL.
Each level is closed-loop: every client sends its next request when its last one ends, --rounds requests each,
stopping early when the level's share of --max_seconds is spent (requests in flight still finish).

    python benchmarks/serve_load.py --model smol135m yi6b --out results/serve.jsonl      # GPU, about 3 minutes
    python benchmarks/serve_load.py --device cpu --model tiny                             # proves it works
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LEVELS = (1, 8, 32, 128)


# --- the client side (child process) ----------------------------------------------------------------------------

async def _one(client, url: str, messages: list, max_tokens: int, stream: bool) -> dict:
    """One request: its latency, time to first streamed text and output tokens (from the usage)."""
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    start = time.perf_counter()
    if not stream:
        response = await client.post(url + "/chat/completions", json=body)
        response.raise_for_status()
        tokens = response.json()["usage"]["completion_tokens"]
        return {"latency": time.perf_counter() - start, "ttft": None, "tokens": tokens}
    body["stream_options"] = {"include_usage": True}
    first, tokens = None, 0
    async with client.stream("POST", url + "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter() - start
            elif '"usage"' in line:
                tokens = json.loads(line.removeprefix("data: "))["usage"]["completion_tokens"]
    return {"latency": time.perf_counter() - start, "ttft": first, "tokens": tokens}


async def _level(url: str, prompts: list, clients: int, rounds: int, max_tokens: int, seconds: float,
                 stream: bool) -> dict:
    import httpx

    deadline = time.perf_counter() + seconds
    results: list[dict] = []

    async def client_loop(number: int, client) -> None:
        for k in range(rounds):
            if k and time.perf_counter() > deadline:
                return
            messages = prompts[(number * rounds + k) % len(prompts)]
            results.append(await _one(client, url, messages, max_tokens, stream))

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(n, client) for n in range(clients)))
        wall = time.perf_counter() - start
    return {"clients": clients, "stream": stream, "requests": len(results), "seconds": wall, "results": results}


def run_client(opts) -> int:
    """Drive the server at opts.client with each level; one JSON line per level on stdout."""
    prompts = json.loads(Path(opts.prompts_file).read_text())
    started = time.perf_counter()
    runs = [(stream, clients) for stream in opts.stream for clients in opts.levels]
    for done, (stream, clients) in enumerate(runs):
        share = max(1.0, (opts.max_seconds - (time.perf_counter() - started)) / (len(runs) - done))
        record = asyncio.run(_level(opts.client, prompts, clients, opts.rounds, opts.max_tokens, share,
                                    stream == "true"))
        print(json.dumps(record), flush=True)
    return 0


# --- the server side (this process) --------------------------------------------------------------------------------

def build(shape: str, opts):
    """(ServedModels, conversations): a random-weight model of `shape` and its padded prompt tokenizer."""
    import torch
    from generate_speed import build_tokenizer, gsm_prompts
    from train_speed import SHAPES, build_model

    from mathtune.serve.models import BASE, ServedModels

    conversations = gsm_prompts(opts.prompts, opts.seed)
    vocab = SHAPES[shape]["vocab_size"]
    tokenizer = build_tokenizer(conversations, min(2000, vocab))
    tokenizer.add_tokens([f"<t{i}>" for i in range(len(tokenizer), vocab)])  # every id the model draws is text
    model = build_model(shape, opts.device, torch.bfloat16 if opts.device.startswith("cuda") else torch.float32)
    model.eval()
    model.config.use_cache = True
    model.generation_config.use_cache = True
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.min_new_tokens = opts.max_tokens  # random weights must not stop early
    return ServedModels(model, tokenizer, {"bench": BASE}, f"random {shape}"), conversations


def sequential(served, conversations: list, opts, fast: bool = True) -> dict:
    """The same prompts answered one at a time, as `infer --input --batch_size 1` answers them (`fast`: through
    the generator's fast decoding loop, as infer does; else transformers' generate, the engine of streamed requests
    until 2026-12-02 and still the fallback for models the loop does not support)."""
    from train_speed import sync

    from mathtune.generate import Generator, Sampling

    generator = Generator(served.network, served.tokenizer, fast=fast)
    single = conversations[: opts.single_limit]
    generator.generate(single[:1], Sampling(opts.max_tokens), batch_size=1, progress=False)  # warm-up
    sync(opts.device)
    start = time.perf_counter()
    replies = generator.generate_ids(single, Sampling(opts.max_tokens), batch_size=1, progress=False)
    sync(opts.device)
    wall = time.perf_counter() - start
    tokens = sum(len(r[0]) for r in replies)
    return {"requests": len(single), "seconds": wall, "tokens": tokens}


def start_server(served, opts):
    """The app of `mathtune deploy` in a thread, on a socket bound first; (url, batcher, stop)."""
    import uvicorn

    from mathtune.serve.app import create_app
    from mathtune.serve.batcher import Batcher

    batcher = Batcher(served, max_batch_size=max(LEVELS), max_queue=4 * max(LEVELS), batch_wait_ms=opts.batch_wait_ms)
    # proto TCP, as `deploy` binds it: asyncio sets TCP_NODELAY only on such sockets (else 40 ms stalls a reply)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # keep-alive well past a level: uvicorn's default 5 s closes a pooled connection just as a client reuses it
    # (httpx.ReadError, seen in a 128-client level)
    server = uvicorn.Server(uvicorn.Config(create_app(served, batcher, None, opts.max_tokens), log_level="warning",
                                           timeout_graceful_shutdown=None, timeout_keep_alive=600))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(60)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", batcher, stop


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(shape: str, level: dict, baselines: dict[str, dict], batches: int, opts) -> dict:
    import torch

    results = level["results"]
    tokens = sum(r["tokens"] for r in results)
    rates = {name: b["tokens"] / b["seconds"] for name, b in baselines.items()}
    latencies = [r["latency"] for r in results]
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    cuda = opts.device.startswith("cuda")
    return {"model": shape, "clients": level["clients"], "stream": level["stream"], "requests": level["requests"],
            "seconds": level["seconds"],
            "requests_per_s": level["requests"] / level["seconds"], "output_tokens_per_s": tokens / level["seconds"],
            "latency_p50_s": percentile(latencies, 0.5), "latency_p99_s": percentile(latencies, 0.99),
            "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p99_s": percentile(ttfts, 0.99),
            # against infer's one-at-a-time (fast loop) and transformers' generate one at a time
            "x_one_at_a_time": tokens / level["seconds"] / rates["fast"],
            "x_generate_one_at_a_time": tokens / level["seconds"] / rates["generate"],
            "one_at_a_time_tokens_per_s": rates["fast"], "generate_one_at_a_time_tokens_per_s": rates["generate"],
            "generate_calls": batches, "max_tokens": opts.max_tokens, "prompts": opts.prompts,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


def run_model(shape: str, opts, seconds: float) -> list[dict]:
    import torch

    started = time.perf_counter()
    served, conversations = build(shape, opts)
    baselines = {"fast": sequential(served, conversations, opts), "generate": sequential(served, conversations,
                                                                                         opts, fast=False)}
    for name, one in baselines.items():
        print(json.dumps({"model": shape, "config": f"one_at_a_time_{name}", "requests": one["requests"],
                          "output_tokens_per_s": round(one["tokens"] / one["seconds"], 1)}), flush=True)
    url, batcher, stop = start_server(served, opts)
    from mathtune.generate import Sampling

    for clients in opts.levels:  # the fast loop captures a CUDA graph per batch shape: not inside the timed levels
        batcher.generator.generate_ids(conversations[:clients], Sampling(opts.max_tokens), batch_size=clients,
                                       progress=False)
    prompts_file = Path(opts.workdir) / f"prompts_{shape}.json"
    prompts_file.write_text(json.dumps(conversations))
    left = max(5.0, seconds - (time.perf_counter() - started))
    command = [sys.executable, __file__, "--client", url, "--prompts_file", str(prompts_file), "--levels",
               *map(str, opts.levels), "--rounds", str(opts.rounds), "--max_tokens", str(opts.max_tokens),
               "--max_seconds", str(left), "--stream", *opts.stream]
    records = []
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
            before = batcher.stats()["batches"]
            for line in child.stdout:
                calls = batcher.stats()["batches"]
                record = summarize(shape, json.loads(line), baselines, calls - before, opts)
                before = calls
                shown = ("model", "clients", "stream", "requests", "requests_per_s", "output_tokens_per_s",
                         "latency_p50_s", "latency_p99_s", "ttft_p50_s", "x_one_at_a_time",
                         "x_generate_one_at_a_time", "generate_calls")
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()
                                  if k in shown}), flush=True)
                records.append(record)
        if child.returncode:
            raise SystemExit(f"the client process failed ({child.returncode})")
    finally:
        stop()
        del served
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=("smol135m", "yi6b", "tiny"), default=["smol135m", "yi6b"])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), help="concurrent clients per level")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level (fewer if time is up)")
    parser.add_argument("--stream", nargs="+", choices=("true", "false"), default=["true", "false"],
                        help="streamed requests (TTFT measured) and/or plain ones; both run on the fast decoding "
                             "loop (streamed ones through its row hook)")
    parser.add_argument("--max_tokens", type=int, default=None, help="tokens per reply, forced (default 128; tiny 16)")
    parser.add_argument("--prompts", type=int, default=256, help="distinct prompts to cycle through")
    parser.add_argument("--single_limit", type=int, default=4, help="prompts answered one at a time (the baseline)")
    parser.add_argument("--batch_wait_ms", type=float, default=10.0)
    parser.add_argument("--max_seconds", type=float, default=160.0, help="time budget of the whole run, shared "
                                                                          "evenly by the models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="append one JSON line per level to this file")
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)  # the child: drive this server URL
    parser.add_argument("--prompts_file", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.max_tokens = opts.max_tokens or (16 if opts.model == ["tiny"] else 128)
    if opts.client:
        return run_client(opts)

    import tempfile

    import torch

    started = time.perf_counter()
    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not opts.device.startswith("cuda"):
        torch.set_num_threads(1)  # the client process needs a core too
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        opts.workdir = workdir
        for done, shape in enumerate(opts.model):
            share = (opts.max_seconds - (time.perf_counter() - started)) / (len(opts.model) - done)
            for record in run_model(shape, opts, share):
                results.append(record)
                if opts.out:
                    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
                    with open(opts.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
    print("\n| model | clients | stream | requests | req/s | output tok/s | p50 / p99 latency s | p50 TTFT s | "
          "x one at a time (infer) | x generate one at a time |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ttft = f"{r['ttft_p50_s']:.2f}" if r["ttft_p50_s"] is not None else "-"
        print(f"| {r['model']} | {r['clients']} | {'yes' if r['stream'] else 'no'} | {r['requests']} | "
              f"{r['requests_per_s']:.2f} | "
              f"{r['output_tokens_per_s']:,.0f} | {r['latency_p50_s']:.2f} / {r['latency_p99_s']:.2f} | {ttft} | "
              f"{r['x_one_at_a_time']:.1f}x | {r['x_generate_one_at_a_time']:.1f}x |")
    total = time.perf_counter() - started
    print(f"\n{opts.max_tokens} tokens per reply (forced), greedy, streamed; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
