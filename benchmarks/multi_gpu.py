#!/usr/bin/env python
"""Multi-GPU training speed and memory through mathtune's own path (train.train with distributed.Parallel, as
`mathtune sft` under torchrun runs it), on random-weight Llama models and ragged rows (train_speed.py's shapes and
data):

- lora:      the Yi-1.5-6B shape, LoRA r8 on all linear layers, the headline config (mt_p16k_nogc: 128 rows per
             optimizer step, 16k-token packs, no checkpointing, liger, varlen attention, fused LoRA); DDP on N GPUs;
- full_fsdp: the Yi shape, full fine-tuning (mt_p16k_gc_full) with --fsdp;
- big_fsdp:  a 70B-shaped model (Llama-2-70B: 80 layers, hidden 8192; 129 GiB of bf16 weights, more than one card
             holds with room to train), built on the meta device, sharded, then materialised shard by shard on the
             GPUs; LoRA r8, checkpointing, 32 rows per step, 8k packs; --fsdp.

The global batch (rows per optimizer step) is the same on any number of GPUs, so tokens/s compare directly: scaling
efficiency = tok/s on N GPUs / (N x tok/s on one). Each rank appends nothing; rank 0 appends one JSON line per case to
--out with the peak memory of every GPU.

    torchrun --nproc_per_node 1 benchmarks/multi_gpu.py --cases lora full_fsdp --out results/multi.jsonl
    torchrun --nproc_per_node 2 benchmarks/multi_gpu.py --cases lora full_fsdp big_fsdp --out results/multi.jsonl
    python benchmarks/multi_gpu.py --summarize results/multi.jsonl
    torchrun --nproc_per_node 2 benchmarks/multi_gpu.py --device cpu --model tiny --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

from train_speed import SHAPES, build_model, parse_config, ragged_rows  # noqa: E402

BIG_SHAPES = {
    "llama70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                 num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=4096,
                 rms_norm_eps=1e-5),  # Llama-2-70B
    "tiny": dict(SHAPES["tiny"], num_hidden_layers=4),
}
BIG_OF = {"yi6b": "llama70b", "tiny": "tiny"}  # --model -> the big_fsdp case's shape (the Yi shape fits one card)
CASES = {  # case -> (train_speed config, shape, fsdp)
    "lora": ("mt_p16k_nogc", "model", False),
    "full_fsdp": ("mt_p16k_gc_full", "model", True),
    "big_fsdp": ("mt_r32_p8k_gc", "big", True),
}


def param_gib(shape: dict) -> float:
    """bf16 weights of a Llama shape in GiB."""
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * (h // shape["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    heads = shape["vocab_size"] * h * (1 if shape["tie_word_embeddings"] else 2)
    return 2 * (n * per_layer + heads + h) / 2**30


def build_on_meta(shape: dict, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="sdpa",
                         use_cache=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            return LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)


def materialise(wrapped, model, device: str) -> None:
    """Meta-device weights -> random values on `device`, each rank filling only its shards; rotary tables
    recomputed (to_empty leaves buffers uninitialised too)."""
    import torch

    wrapped.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(1234 + int(os.environ.get("RANK", "0")))
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = getattr(p, "_local_tensor", p)
            if "norm" in name:
                local.fill_(1.0)
            elif "lora_B" in name:
                local.zero_()
            else:
                local.normal_(0.0, 0.02, generator=gen)
        for module in model.modules():
            if hasattr(module, "inv_freq"):
                module.inv_freq.copy_(rotary_table(module))
                if hasattr(module, "original_inv_freq"):
                    module.original_inv_freq.copy_(module.inv_freq)


def rotary_table(module):
    """The inverse frequencies a rotary module computes in its __init__ (transformers 5 keeps no handle on the
    function it used: the default one, or the rope_type's)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_type = getattr(module, "rope_type", "default")
    init = module.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
    return init(module.config)[0]


def prepare(case: str, opts, d):
    """(model, Parallel or None, loss_fn, bench, shape) ready to train."""
    import torch

    from mathtune import distributed, fastpath
    from mathtune.config import FastArgs
    from mathtune.fastpath.checkpointing import decoder_layers, set_gradient_checkpointing
    from mathtune.fastpath.liger import liger_available
    from mathtune.model import attach_lora

    config, which, fsdp = CASES[case]
    bench = parse_config(config)
    cuda = opts.device.startswith("cuda")
    if bench.liger and not (cuda and liger_available()):
        bench = dataclasses.replace(bench, liger=False)
    if opts.rows_per_step:
        bs = min(bench.batch_size, opts.rows_per_step)
        bench = dataclasses.replace(bench, batch_size=bs, accumulation=max(1, opts.rows_per_step // bs))
    dtype = getattr(torch, opts.dtype) if opts.dtype else (torch.bfloat16 if cuda else torch.float32)
    shape = BIG_SHAPES[BIG_OF[opts.model]] if which == "big" else SHAPES[opts.model]
    # Sharded cases start on the meta device: no rank ever holds the whole model, and no slow host-side init.
    meta = (fsdp and d.active) or which == "big"
    model = build_on_meta(shape, dtype) if meta else build_model(opts.model, opts.device, dtype)
    if bench.sft == "lora":
        model = attach_lora(model, 8, 32, 0.05, "all-linear")
    else:
        model.requires_grad_(True)
    model.train()
    set_gradient_checkpointing(model, bench.gc_layers)
    fast = FastArgs(gradient_checkpointing=False, use_liger_kernel=bench.liger, fast_lora=bench.fast_lora,
                    attn_impl=bench.attn, fsdp=fsdp)
    path = fastpath.apply(model, fast, opts.device)
    parallel = distributed.Parallel(model, path.loss_fn, d, fsdp, opts.device, decoder_layers(model)) \
        if d.active else None
    if meta:
        materialise(model if parallel is None else parallel.wrapped, model, opts.device)
    return model, parallel, path.loss_fn, bench, shape


def run_case(case: str, opts, d) -> dict:
    import torch

    from mathtune import distributed
    from mathtune.config import OptimArgs
    from mathtune.train import packing_capacity, peak_rss_gib, train

    config, which, fsdp = CASES[case]
    cuda = opts.device.startswith("cuda")
    if which == "big" and not d.active and opts.model != "tiny":
        gib = param_gib(BIG_SHAPES[BIG_OF[opts.model]])
        return {"status": "skipped", "note": f"{gib:.0f} GiB of bf16 weights: run it on 2 or more GPUs"}
    model, parallel, loss_fn, bench, shape = prepare(case, opts, d)
    rows = ragged_rows(bench.rows_per_step * (opts.warmup + opts.steps), seed=opts.seed, vocab=shape["vocab_size"],
                       median=opts.median_len, sigma=0.6, min_len=opts.min_len, max_len=opts.max_length)
    args = OptimArgs(max_steps=opts.warmup + opts.steps, batch_size=bench.batch_size,
                     gradient_accumulation_steps=bench.accumulation, packing=True,
                     packing_length=bench.packing_length, seed=42)
    records: list[dict] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train(model, rows, [], args, loss_fn=loss_fn, capacity=packing_capacity(args, opts.max_length), pad_id=0,
          logging_steps=1, save_steps=10**9, eval_steps=10**9, on_log=records.append if d.is_main else None,
          progress=False, parallel=parallel)
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else peak_rss_gib()
    peaks = distributed.gather_objects(round(peak, 2))
    if not d.is_main:
        return {}
    timed = [r for r in records if r["step"] > opts.warmup]
    tok_s = len(timed) / sum(1 / r["tokens_per_s"] for r in timed)  # equal step sizes: the harmonic mean is fair
    return {"status": "ok", "tok_s": tok_s, "tok_s_per_gpu": tok_s / d.world, "peak_gib_per_gpu": peaks,
            "peak_kind": "cuda max_memory_allocated" if cuda else "process peak RSS", "loss": timed[-1]["loss"],
            "config": config, "fsdp": fsdp and d.active, "rows_per_step": bench.rows_per_step,
            "packing_length": bench.packing_length, "weights_gib_bf16": round(param_gib(shape), 1),
            "wall_s": round(wall, 1)}


def summarize(path: str) -> str:
    """A markdown table of the lines in `path`, with scaling efficiency against the 1-GPU line of the same case."""
    lines = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    one = {(r["case"], r["model"]): r for r in lines if r["world"] == 1 and r["status"] == "ok"}
    out = ["| case | GPUs | tok/s | tok/s per GPU | scaling efficiency | peak GiB per GPU | note |",
           "|---|---:|---:|---:|---:|---|---|"]
    for r in lines:
        if r["status"] != "ok":
            out.append(f"| {r['case']} ({r['model']}) | {r['world']} | {r['status']} | | | | {r.get('note', '')} |")
            continue
        base = one.get((r["case"], r["model"]))
        eff = f"{r['tok_s'] / (r['world'] * base['tok_s']):.2f} ({r['tok_s'] / base['tok_s']:.2f}x)" if base else "-"
        peaks = ", ".join(f"{p:.1f}" for p in r["peak_gib_per_gpu"])
        out.append(f"| {r['case']} ({r['model']}) | {r['world']} | {r['tok_s']:,.0f} | {r['tok_s_per_gpu']:,.0f} | "
                   f"{eff} | {peaks} | {r['config']}{', fsdp' if r['fsdp'] else ''} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["lora", "full_fsdp", "big_fsdp"])
    parser.add_argument("--model", choices=sorted(BIG_OF), default="yi6b",
                        help="yi6b (big_fsdp: the 70B shape) or tiny (a CPU check of the code path)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps per case")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu (gloo)")
    parser.add_argument("--rows_per_step", type=int, default=None, help="override every case's rows per step")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                        help="weights (default bf16 on CUDA, fp32 on CPU; bf16 on CPU checks mixed-dtype sharding)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="rank 0 appends one JSON line per case")
    parser.add_argument("--summarize", default=None, metavar="JSONL", help="print the table of a results file")
    opts = parser.parse_args(argv)
    if opts.summarize:
        print(summarize(opts.summarize))
        return 0

    import torch

    from mathtune import distributed

    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not opts.device.startswith("cuda"):
        torch.set_num_threads(1)
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # gloo, even on a GPU machine
    tiny = opts.model == "tiny"
    opts.median_len, opts.min_len, opts.max_length = (60, 8, 256) if tiny else (250, 32, 1024)
    if tiny and opts.rows_per_step is None:
        opts.rows_per_step = 16
    failed = 0
    with distributed.session() as d:
        for case in opts.cases:
            try:
                result = run_case(case, opts, d)
            except Exception as exc:  # one case's OOM must not lose the others' lines
                failed += 1
                result = {"status": "oom" if "out of memory" in str(exc).lower() else "error",
                          "note": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
                if d.is_main:
                    traceback.print_exc()
            if not d.is_main:
                continue
            line = {"case": case, "model": opts.model, "world": d.world, "device": opts.device,
                    "gpu": torch.cuda.get_device_name() if opts.device.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "dtype": opts.dtype or "default",
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **result}
            print(json.dumps(line), flush=True)
            if opts.out:
                Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
                with open(opts.out, "a") as f:
                    f.write(json.dumps(line) + "\n")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
