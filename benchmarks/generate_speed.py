#!/usr/bin/env python
"""Generation speed: problems/s and generated tokens/s on GSM-like prompts, random-weight models.

(i) hf_single: plain `model.generate`, one prompt at a time; (ii) hf_batched: plain batched `model.generate`, batches
of 32 in the given order, left padding; (iii) mathtune / mathtune_static: `mathtune.generate.Generator` on transformers'
generate (length-sorted batches of 32; the static one with transformers' static cache); (iv) mathtune_fast: Generator
on its own decoding loop (mathtune.decode: CUDA graphs, finished rows leave) with every prompt in one batch, at each of
--fast_rows sequences (default 64 and 512), reported against the memory-bandwidth bound (weights and the live KV cache
read once per decoding step, --bandwidth_tbs).
Every reply is forced to exactly --max_new_tokens tokens (min_new_tokens = max_new_tokens in the generation config),
so random weights do not stop early and every config does the same work. See benchmarks/README.md.

    python benchmarks/generate_speed.py --model smol135m yi6b --out results/generate.jsonl
    python benchmarks/generate_speed.py --model smol135m yi6b --configs mathtune_fast --out results/fast.jsonl
    python benchmarks/generate_speed.py --model tiny --device cpu
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from train_speed import SHAPES, build_model, sync  # noqa: E402 - the same model builder as the training benchmark

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM = "You are a helpful assistant. Solve the problem step by step and end with 'The answer is N.'"
TEMPLATES = [
    "{name} has {a} apples. She buys {b} more bags with {c} apples in each bag and gives {d} apples to her friend. "
    "How many apples does {name} have now?",
    "A train travels {a} km in {b} hours. At the same speed, how far does it travel in {c} hours? Then it stops for "
    "{d} minutes. Give the distance in km.",
    "{name} earns ${a} per hour and works {b} hours a day for {c} days. He spends ${d} on rent. "
    "How much money is left?",
    "A school has {a} students in {b} classes. If {c} new students join and are split evenly among {d} new classes, "
    "how many students are in each new class, and how many students does the school have in total?",
    "A recipe needs {a} cups of flour for {b} cookies. {name} wants to bake {c} batches of {d} cookies each. "
    "How many cups of flour are needed?",
]
CONFIGS = ("hf_single", "hf_batched", "mathtune", "mathtune_static", "mathtune_fast", "mathtune_fast_repeat_kv")
NAMES = ["Natalia", "James", "Aiko", "Ravi", "Fatima", "Lukas", "Maria", "Chen"]


def gsm_prompts(n: int, seed: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = TEMPLATES[i % len(TEMPLATES)].format(name=rng.choice(NAMES), a=rng.randint(3, 500),
                                                    b=rng.randint(2, 40), c=rng.randint(2, 30), d=rng.randint(1, 90))
        if rng.random() < 0.5:  # some longer prompts, as in GSM8K
            text += " Assume every quantity stays the same for the whole problem and explain each step briefly."
        out.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return out


def build_tokenizer(conversations, vocab_size: int):
    """A byte-level BPE ChatML tokenizer trained on the prompts themselves (ids stay below the model's vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([m["content"] for c in conversations for m in c] * 2, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML
    return tokenizer


def hf_generate(model, tokenizer, prompts: list[list[int]], batch_size: int, new_tokens: int, device: str) -> int:
    """Plain batched HF generate in the given order, left padding; returns the number of generated tokens."""
    import torch

    made = 0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, p in enumerate(chunk):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert out.shape[1] - width == new_tokens, (out.shape, width)
        made += len(chunk) * new_tokens
    return made


def bandwidth_bound(model, rows: int, context: float, tbs: float) -> dict:
    """Generated tokens/s if each decoding step only read the weights once and the rows' KV cache once (`context`:
    the mean cached length over the steps), at `tbs` TB/s. An untied embedding table is not read (a lookup); the
    output head is."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if not config.tie_word_embeddings:
        embedding = model.get_input_embeddings().weight
        weights -= embedding.numel() * embedding.element_size()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(model.parameters()).element_size()
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element
    step_bytes = weights + rows * context * kv_per_token
    return {"bound_tokens_per_s": rows * tbs * 1e12 / step_bytes, "weights_gb": weights / 1e9,
            "kv_gb_per_step": rows * context * kv_per_token / 1e9}


def fast_call(config: str, model, generator, conversations, prompts, max_new_tokens: int):
    """(one call of the loop on the whole batch, its decoder's stats): through Generator for mathtune_fast, through
    decode.Decoder with the model's own step attention for mathtune_fast_repeat_kv."""
    from mathtune.decode import Decoder
    from mathtune.generate import Sampling

    if config == "mathtune_fast":
        sampling = Sampling(max_new_tokens)
        return (lambda: generator.generate_ids(conversations, sampling, batch_size=len(prompts), progress=False),
                generator.decoder_stats)
    decoder = Decoder(model, generator.eos, generator.pad_id, grouped_attention=False)
    return (lambda: [[r] for r in decoder.generate(prompts, 1, max_new_tokens, min_new_tokens=max_new_tokens)],
            decoder.stats)


def run_fast(shape: str, model, tokenizer, opts, config: str = "mathtune_fast") -> list[dict]:
    """mathtune_fast at each --fast_rows: every prompt in one batch, one call to warm up (CUDA graphs are captured
    there), the next timed. mathtune_fast_repeat_kv: the same loop driven directly (decode.Decoder, as Generator
    drives it) with the model's own attention at its steps instead of decode_attention's grouped one."""
    import torch

    from mathtune.generate import Generator

    results = []
    cuda = opts.device.startswith("cuda")
    for rows in opts.fast_rows:
        conversations = gsm_prompts(rows, opts.seed + rows)
        generator = Generator(model, tokenizer)
        assert generator.fast_path_reason() is None, generator.fast_path_reason()
        prompts = generator.render(conversations)
        run, stats = fast_call(config, model, generator, conversations, prompts, opts.max_new_tokens)
        sync(opts.device)
        start = time.perf_counter()
        run()
        sync(opts.device)
        first_call_s = time.perf_counter() - start
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        replies = run()
        sync(opts.device)
        seconds = time.perf_counter() - start
        tokens = sum(len(r[0]) for r in replies)
        assert tokens == rows * opts.max_new_tokens, (tokens, rows)  # forced lengths: every row ran to the end
        context = sum(len(p) for p in prompts) / rows + opts.max_new_tokens / 2
        bound = bandwidth_bound(model, rows, context, opts.bandwidth_tbs)
        record = {"model": shape, "config": config, "problems": rows, "new_tokens": tokens,
                  "seconds": seconds, "problems_per_s": rows / seconds, "tokens_per_s": tokens / seconds,
                  "first_call_s": first_call_s, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  "batch_size": rows, "max_new_tokens": opts.max_new_tokens, **bound,
                  "share_of_bound": tokens / seconds / bound["bound_tokens_per_s"], "bandwidth_tbs": opts.bandwidth_tbs,
                  "cuda_graphs": stats()["cuda_graphs"],
                  "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                  "date": datetime.date.today().isoformat()}
        shown = ("model", "config", "problems", "tokens_per_s", "bound_tokens_per_s", "share_of_bound", "seconds",
                 "first_call_s", "cuda_graphs")
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items() if k in shown}),
              flush=True)
        results.append(record)
    return results


def run_model(shape: str, opts) -> list[dict]:
    import torch

    from mathtune.generate import Generator, Sampling

    device = opts.device
    cuda = device.startswith("cuda")
    conversations = gsm_prompts(opts.prompts, opts.seed)
    tokenizer = build_tokenizer(conversations, min(2000, SHAPES[shape]["vocab_size"]))
    prompts = Generator(None, tokenizer).render(conversations)
    model = build_model(shape, device, torch.bfloat16 if cuda else torch.float32).eval()
    model.config.use_cache = True
    model.generation_config.use_cache = True  # build_model made it for training (use_cache False): decode with a cache
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.min_new_tokens = opts.max_new_tokens  # random weights must not stop early
    # Warm up kernels and the caching allocator with one full batch: a dynamic KV cache grows by one token per step, so
    # a first full-length decode allocates fresh blocks at every step. Warmed with 4 tokens only (2026-12-01 run),
    # whichever config ran first paid for that: hf_batched measured 2.2 problems/s there against 4.6 for mathtune.
    hf_generate(model, tokenizer, prompts[: opts.batch_size], opts.batch_size, opts.max_new_tokens, device)
    lengths = sorted(len(p) for p in prompts)
    print(f"{shape}: {len(prompts)} prompts of {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}),"
          f" {opts.max_new_tokens} new tokens each", flush=True)
    results = []
    single = prompts[: opts.single_limit]

    def call(name: str, model) -> int:
        if name == "hf_single":
            return hf_generate(model, tokenizer, single, 1, opts.max_new_tokens, device)
        if name == "hf_batched":
            return hf_generate(model, tokenizer, prompts, opts.batch_size, opts.max_new_tokens, device)
        replies = Generator(model, tokenizer, fast=False).generate(conversations, Sampling(opts.max_new_tokens),
                                                       batch_size=opts.batch_size, progress=False,
                                                       static_cache=name == "mathtune_static")
        return opts.max_new_tokens * len(replies)

    for name in opts.configs:
        if name in ("mathtune_fast", "mathtune_fast_repeat_kv"):
            results += run_fast(shape, model, tokenizer, opts, name)
            continue
        problems = len(single) if name == "hf_single" else len(prompts)
        first_call_s = None
        if name == "mathtune_static":  # the first call compiles; time the second
            sync(device)
            start = time.perf_counter()
            call(name, model)
            sync(device)
            first_call_s = time.perf_counter() - start
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        tokens = call(name, model)
        sync(device)
        seconds = time.perf_counter() - start
        record = {"model": shape, "config": name, "problems": problems, "new_tokens": tokens, "seconds": seconds,
                  "problems_per_s": problems / seconds, "tokens_per_s": tokens / seconds,
                  "first_call_s": first_call_s, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  "batch_size": 1 if name == "hf_single" else opts.batch_size, "max_new_tokens": opts.max_new_tokens,
                  "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                  "date": datetime.date.today().isoformat()}
        shown = ("model", "config", "problems_per_s", "tokens_per_s", "seconds", "first_call_s")
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items() if k in shown}),
              flush=True)
        results.append(record)
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=sorted(SHAPES), default=["smol135m", "yi6b"])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--prompts", type=int, default=None, help="number of prompts (default 64; tiny 8)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="tokens per reply, forced (default 256; "
                                                                         "tiny 16)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--single_limit", type=int, default=4, help="prompts timed one at a time in hf_single")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                        help="hf_single: plain generate one prompt at a time; hf_batched: plain generate, batches in "
                             "prompt order; mathtune: mathtune.generate on transformers' generate; mathtune_static: "
                             "with a static KV cache, which transformers compiles on a GPU (its compilation is timed "
                             "too); mathtune_fast: mathtune.decode's loop, every prompt in one batch (--fast_rows); "
                             "mathtune_fast_repeat_kv: that loop with transformers' attention at its steps")
    parser.add_argument("--fast_rows", type=int, nargs="+", default=None,
                        help="sequences per mathtune_fast batch (default 64 512; tiny 8 32)")
    parser.add_argument("--bandwidth_tbs", type=float, default=4.8, help="memory bandwidth for the bound (H200: 4.8)")
    parser.add_argument("--out", default=None, help="append one JSON line per config to this file")
    opts = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not opts.device.startswith("cuda"):
        torch.set_num_threads(1)  # tiny shapes: threads only contend
    tiny_only = opts.model == ["tiny"]
    opts.prompts = opts.prompts or (8 if tiny_only else 64)
    opts.max_new_tokens = opts.max_new_tokens or (16 if tiny_only else 256)
    opts.fast_rows = opts.fast_rows or ([8, 32] if tiny_only else [64, 512])
    if tiny_only:
        opts.batch_size = min(opts.batch_size, 4)
        opts.single_limit = min(opts.single_limit, 2)
    results = []
    for shape in opts.model:
        for record in run_model(shape, opts):
            results.append(record)
            if opts.out:
                Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
                with open(opts.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
    print("\n| model | config | problems | problems/s | generated tok/s | peak GiB | x hf_single |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        single = next((x for x in results if x["model"] == r["model"] and x["config"] == "hf_single"), None)
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        ratio = f"{r['tokens_per_s'] / single['tokens_per_s']:.1f}x" if single else "-"
        bound = f" (bound {r['bound_tokens_per_s']:,.0f})" if "bound_tokens_per_s" in r else ""
        print(f"| {r['model']} | {r['config']} | {r['problems']} | {r['problems_per_s']:.2f} | {r['tokens_per_s']:,.0f}"
              f"{bound} | {peak} | {ratio} |")
    print(f"\n{opts.max_new_tokens} new tokens per reply (forced), greedy; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
