#!/usr/bin/env python
"""Training speed and memory: HF + PEFT baselines against mathtune's own training path, on ragged rows.

Random-weight Llama models in bf16 (Yi-1.5-6B shape, SmolLM2-135M shape, or a tiny one for CPU checks), LoRA r8
alpha 32 dropout 0.05 on all linear layers (or full fine-tuning), rows drawn from a seeded lognormal length mix like
the tutorial's math data. For each config: warmup optimizer steps, then timed steps; reports useful (non-padding)
tokens/s, padded tokens/s, peak GiB (torch.cuda.max_memory_allocated) and MFU. See benchmarks/README.md.

    python benchmarks/train_speed.py --model yi6b --out results/train_yi6b.jsonl
    python benchmarks/train_speed.py --model tiny --device cpu --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

SHAPES = {
    "yi6b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=64000, tie_word_embeddings=False, max_position_embeddings=4096,
                 rms_norm_eps=1e-6),
    "smol135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192,
                     rms_norm_eps=1e-5),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False, max_position_embeddings=1024,
                 rms_norm_eps=1e-6),
}
DEFAULT_CONFIGS = {  # most telling first: --max_seconds cuts from the end
    "yi6b": ["hf_tutorial", "hf_b8_liger", "hf_flat8_liger_flex", "hf_b8_gc", "mt_p8k_nogc", "mt_p8k_gc",
             "mt_default", "mt_r16_p8k_nogc", "hf_b8", "hf_b8_liger_gc", "mt_p16k_gc", "mt_p32k_gc", "mt_p16k_nogc",
             "mt_r16_p8k_gc", "mt_p8k_gc28", "mt_p4k_gc24", "mt_p8k_nogc_sdpa", "mt_p8k_nogc_slowlora",
             "mt_p16k_gc_full", "hf_flat8", "hf_flat8_liger", "hf_flat8_liger_gc"],
    "smol135m": ["hf_b8", "mt_r256_p64k_nogc", "mt_p32k_nogc", "mt_default", "mt_r16_p8k_nogc", "mt_p16k_nogc",
                 "mt_p32k_nogc_noliger", "mt_p32k_nogc_slowlora", "mt_p32k_nogc_sdpa", "hf_b8_full",
                 "mt_p32k_nogc_full", "mt_r256_p64k_nogc_full"],
    "tiny": ["hf_tutorial", "hf_b8_gc", "hf_b8", "hf_b8_liger", "mt_default", "mt_p8k_gc", "mt_p8k_nogc",
             "mt_p8k_gc1", "mt_p8k_nogc_sdpa", "mt_p8k_nogc_slowlora", "mt_p8k_nogc_full"],
}
IGNORE = -100


# --- configs ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bench:
    name: str
    engine: str  # "hf" (plain transformers + peft loop) or "mt" (mathtune.train.train)
    sft: str = "lora"
    batch_size: int = 8
    accumulation: int = 4
    gc_layers: int | None = 0  # None: every layer checkpointed, 0: none, N: the first N layers
    liger: bool = False
    packing_length: int | None = None
    attn: str = "varlen"
    fast_lora: bool = True
    compile: bool = False
    flat: bool = False  # hf only: padding-free micro-batches (DataCollatorWithFlattening), no attention mask

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.accumulation


HF = {
    "hf_tutorial": dict(batch_size=1, accumulation=16, gc_layers=None),
    "hf_b8_gc": dict(gc_layers=None),
    "hf_b8": dict(),
    "hf_b8_liger": dict(liger=True),
    "hf_b8_liger_gc": dict(liger=True, gc_layers=None),
    "hf_flat8": dict(flat=True),
    "hf_flat8_liger": dict(liger=True, flat=True),
    "hf_flat8_liger_gc": dict(liger=True, flat=True, gc_layers=None),
    "hf_flat8_liger_flex": dict(liger=True, flat=True, attn="flex_attention"),
    "hf_b8_full": dict(sft="full"),
    "hf_b8_gc_full": dict(sft="full", gc_layers=None),
}


def parse_config(name: str) -> Bench:
    """hf_* names are fixed (HF above); mt_* names are composed of parts:

    mt_default                 mathtune's defaults: batch 1 x accumulation 16, packing_length max(8192, batch x
                               max_length), gradient checkpointing on, liger on, varlen attention, fast LoRA
    r<N>                       rows per optimizer step (default 128 = batch 8 x accumulation 16)
    p<N>[k]                    --packing_length (tokens per packed micro-batch), e.g. p16k
    gc | nogc | gc<N>          gradient checkpointing on every layer / none / on the first N layers (default gc)
    noliger  sdpa  slowlora    turn off liger-kernel / varlen attention / the fused LoRA forward
    compile  full              torch.compile each decoder layer / full fine-tuning instead of LoRA
    """
    if name in HF:
        return Bench(name, "hf", **{"attn": "sdpa", **HF[name]})
    if not name.startswith("mt_"):
        raise SystemExit(f"unknown config '{name}' (hf: {', '.join(HF)}; mt_...: see --help)")
    if name == "mt_default":
        return Bench(name, "mt", batch_size=1, accumulation=16, gc_layers=None, liger=True)
    fields = dict(batch_size=8, accumulation=16, gc_layers=None, liger=True)
    for part in name.split("_")[1:]:
        if m := re.fullmatch(r"r(\d+)", part):
            rows = int(m.group(1))
            fields.update(batch_size=max(1, rows // 16), accumulation=16 if rows >= 16 else rows)
        elif m := re.fullmatch(r"p(\d+)(k?)", part):
            fields["packing_length"] = int(m.group(1)) * (1024 if m.group(2) else 1)
        elif part == "gc":
            fields["gc_layers"] = None
        elif part == "nogc":
            fields["gc_layers"] = 0
        elif m := re.fullmatch(r"gc(\d+)", part):
            fields["gc_layers"] = int(m.group(1))
        elif part == "noliger":
            fields["liger"] = False
        elif part == "sdpa":
            fields["attn"] = "sdpa"
        elif part == "slowlora":
            fields["fast_lora"] = False
        elif part == "compile":
            fields["compile"] = True
        elif part == "full":
            fields["sft"] = "full"
        else:
            raise SystemExit(f"config '{name}': unknown part '{part}' (see --help)")
    return Bench(name, "mt", **fields)


# --- data ------------------------------------------------------------------------------------------------------------

def ragged_rows(n: int, *, seed: int, vocab: int, median: int, sigma: float, min_len: int, max_len: int):
    """`n` token rows: lengths ~ lognormal(log(median), sigma) clipped to [min_len, max_len]; the first 20-50% of each
    row is prompt (label -100), the rest is trained. Token ids are uniform in [3, vocab)."""
    import torch

    from mathtune.data.tokenize import Encoded

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.exp(math.log(median) + sigma * torch.randn(n, generator=gen)).round().clamp(min_len, max_len)
    rows = []
    for length in lengths.long().tolist():
        ids = torch.randint(3, vocab, (length,), generator=gen).tolist()
        prompt = int(length * (0.2 + 0.3 * torch.rand(1, generator=gen).item()))
        rows.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return rows


# --- models ----------------------------------------------------------------------------------------------------------

def build_model(shape: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="sdpa",
                         use_cache=False)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device)


def matmul_params(shape: str) -> int:
    """Parameters that take part in matmuls: every linear layer including the output head (tied or not); not the
    embedding lookup or the norms."""
    s = SHAPES[shape]
    h, i, layers = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    kv = s["num_key_value_heads"] * (h // s["num_attention_heads"])
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i) + s["vocab_size"] * h


def model_flops(shape: str, lengths: list[int], full: bool) -> float:
    """Model FLOPs of one forward + backward over rows of these lengths (recomputation not counted).

    Linear layers: 2 FLOPs per parameter per token forward, 2 backward for the input gradient, and 2 more for the
    weight gradient only under full fine-tuning (frozen weights under LoRA get none): 4N or 6N per token. Causal
    attention per layer and row of length l: QK^T and PV forward 2 * 2 * hidden * l^2 / 2, backward twice that:
    6 * hidden * l^2 (the same for LoRA and full, attention has no weights). LoRA's own FLOPs (rank 8) are left out.
    """
    s = SHAPES[shape]
    per_token = (6 if full else 4) * matmul_params(shape)
    attention = 6 * s["num_hidden_layers"] * s["hidden_size"] * sum(n * n for n in lengths)
    return per_token * sum(lengths) + attention


# --- loops -----------------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    seconds: float = 0.0
    useful: int = 0
    padded: int = 0
    lengths: list = dataclasses.field(default_factory=list)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_micro_batch(micro, flat: bool) -> dict:
    """Padded to the longest row with an attention mask (DataCollatorForSeq2Seq), or padding-free: the rows
    concatenated into one sequence with per-row position ids (transformers' DataCollatorWithFlattening, what TRL's
    padding_free does); transformers then finds the row boundaries from the position ids."""
    import torch

    if flat:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_tensors="pt")(
            [{"input_ids": r.input_ids, "labels": r.labels} for r in micro])
    width = max(len(r) for r in micro)
    ids = torch.zeros((len(micro), width), dtype=torch.long)
    labels = torch.full((len(micro), width), IGNORE)
    mask = torch.zeros((len(micro), width), dtype=torch.long)
    for j, r in enumerate(micro):
        ids[j, : len(r)] = torch.tensor(r.input_ids)
        labels[j, : len(r)] = torch.tensor(r.labels)
        mask[j, : len(r)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def run_hf(model, bench: Bench, rows, device: str, steps: int, warmup: int) -> Timing:
    """The plain transformers + peft loop: padded (or flattened) micro-batches, model(labels=...) loss,
    accumulation, clipping, fused AdamW."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=device.startswith("cuda"))
    timing = Timing()
    per_step = bench.rows_per_step
    for step in range(warmup + steps):
        chosen = [rows[(step * per_step + i) % len(rows)] for i in range(per_step)]
        sync(device)
        start = time.perf_counter()
        padded = 0
        for k in range(0, per_step, bench.batch_size):
            batch = hf_micro_batch(chosen[k : k + bench.batch_size], bench.flat)
            out = model(**{key: value.to(device) for key, value in batch.items()}, use_cache=False)
            (out.loss / bench.accumulation).backward()
            padded += batch["input_ids"].numel()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step >= warmup:
            timing.seconds += time.perf_counter() - start
            timing.useful += sum(len(r) for r in chosen)
            timing.padded += padded
            timing.lengths += [len(r) for r in chosen]
    return timing


def run_mathtune(model, bench: Bench, rows, device: str, steps: int, warmup: int, max_length: int, loss_fn) -> Timing:
    """mathtune.train.train itself (plan_steps, collate, the fast path's loss, token-weighted accumulation, clipping,
    fused AdamW, logging), through its public signature: no on_save, so nothing is written. Times come from its
    per-step log records (tokens_per_s)."""
    from mathtune.config import OptimArgs
    from mathtune.data.packing import plan_steps
    from mathtune.train import packing_capacity, train

    args = OptimArgs(max_steps=warmup + steps, batch_size=bench.batch_size,
                     gradient_accumulation_steps=bench.accumulation, packing=True,
                     packing_length=bench.packing_length, seed=42)
    records: list[dict] = []
    train(model, rows, [], args, loss_fn=loss_fn, capacity=packing_capacity(args, max_length), pad_id=0,
          logging_steps=1, save_steps=10**9, eval_steps=10**9, on_log=records.append, progress=False)
    logs = {r["step"]: r for r in records if "tokens_per_s" in r}
    lengths = [len(r) for r in rows]
    plan = plan_steps(lengths, seed=args.seed, epoch=0, packing=True,
                      capacity=packing_capacity(args, max_length),
                      rows_per_step=args.batch_size * args.gradient_accumulation_steps, batch_size=args.batch_size)
    timing = Timing()
    for step in range(warmup + 1, warmup + steps + 1):
        step_lengths = [lengths[r] for micro in plan[(step - 1) % len(plan)] for r in micro]
        tokens = sum(step_lengths)
        timing.seconds += tokens / logs[step]["tokens_per_s"]
        timing.useful += tokens
        timing.padded += tokens
        timing.lengths += step_lengths
    return timing


@contextlib.contextmanager
def llama_module_restored():
    """liger patches transformers' Llama module globally (RoPE function, RMSNorm and MLP classes, forward):
    put it back after each config so later configs run stock code."""
    from transformers.models.llama import modeling_llama

    saved = dict(vars(modeling_llama))
    forward = modeling_llama.LlamaForCausalLM.forward
    try:
        yield
    finally:
        for key, value in saved.items():
            if vars(modeling_llama).get(key) is not value:
                setattr(modeling_llama, key, value)
        modeling_llama.LlamaForCausalLM.forward = forward


@contextlib.contextmanager
def profiled(enabled: bool, name: str):
    """With --profile: torch.profiler over the whole config (its times then carry the profiler's overhead), and a
    table of the kernels that took the most GPU time."""
    if not enabled:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        yield
    print(f"--- profile of {name} (device time, all steps) ---")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=70),
          flush=True)


def run_config(bench: Bench, opts, rows) -> dict:
    import torch

    from mathtune import fastpath
    from mathtune.config import FastArgs
    from mathtune.fastpath.checkpointing import set_gradient_checkpointing
    from mathtune.fastpath.liger import liger_available
    from mathtune.model import attach_lora, unwrap

    device = opts.device
    cuda = device.startswith("cuda")
    note = ""
    if bench.liger and not (cuda and liger_available()):
        if bench.engine == "hf":
            return {"status": "skipped", "note": "needs CUDA and liger-kernel"}
        bench, note = dataclasses.replace(bench, liger=False), "liger-kernel off (needs CUDA and liger-kernel)"
    if bench.compile and not cuda:
        return {"status": "skipped", "note": "torch.compile is only measured on CUDA"}
    dtype = torch.bfloat16 if cuda else torch.float32
    start_gib = torch.cuda.memory_allocated() / 2**30 if cuda else None  # should be ~0: nothing left from before
    model = build_model(opts.model, device, dtype)
    if bench.sft == "lora":
        model = attach_lora(model, 8, 32, 0.05, "all-linear")
    else:
        model.requires_grad_(True)
    model.train()
    set_gradient_checkpointing(model, bench.gc_layers)
    if bench.engine == "hf":
        if bench.attn != "sdpa":
            unwrap(model).set_attn_implementation(bench.attn)
        if bench.liger:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            _apply_liger_kernel_to_instance(model=base)  # Llama defaults: RoPE, RMSNorm, SwiGLU, fused linear CE
        timing = run_hf(model, bench, rows, device, opts.steps, opts.warmup)
        report = {"attention": f"{unwrap(model).config._attn_implementation} (transformers, "
                               + ("rows told apart by position ids)" if bench.flat else "padding mask)")}
    else:
        # checkpointing was set above, as for the hf engine
        fast = FastArgs(gradient_checkpointing=False, use_liger_kernel=bench.liger, fast_lora=bench.fast_lora,
                        torch_compile=bench.compile, attn_impl=bench.attn)
        path = fastpath.apply(model, fast, device)
        report = path.report
        timing = run_mathtune(model, bench, rows, device, opts.steps, opts.warmup, opts.max_length, path.loss_fn)
        del path
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    flops = model_flops(opts.model, timing.lengths, bench.sft == "full")
    del model
    return {"status": "ok", "useful_tok_s": timing.useful / timing.seconds,
            "padded_tok_s": timing.padded / timing.seconds, "peak_gib": peak,
            "mfu": flops / timing.seconds / (opts.peak_tflops * 1e12) if cuda else None,
            "tokens_timed": timing.useful, "seconds_timed": timing.seconds, "fast_path": report, "note": note,
            "start_gib": start_gib}


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def table(results: list[dict], baseline: str | None) -> str:
    base = next((r for r in results if r["config"] == baseline and r["status"] == "ok"), None)
    hf = [r for r in results if r["config"].startswith("hf_") and r["status"] == "ok"]
    best = max(hf, key=lambda r: r["useful_tok_s"]) if hf else None
    lines = [f"| config | useful tok/s | padded tok/s | peak GiB | MFU | x {baseline} | x best hf "
             f"({best['config'] if best else '-'}) | attention / notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['status']} | | | | | | {r.get('note', '')[:80]} |")
            continue
        ratio = f"{r['useful_tok_s'] / base['useful_tok_s']:.1f}x" if base else ""
        vs_best = f"{r['useful_tok_s'] / best['useful_tok_s']:.2f}x" if best else ""
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        route = r.get("fast_path", {}).get("attention", "")
        lines.append(f"| {r['config']} | {r['useful_tok_s']:,.0f} | {r['padded_tok_s']:,.0f} | {peak} | {mfu} | "
                     f"{ratio} | {vs_best} | {route} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=parse_config.__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", choices=sorted(SHAPES), default="yi6b")
    parser.add_argument("--configs", nargs="+", help="config names (default: the model's list)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per config")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps per config")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--out", default=None, help="append one JSON line per config to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--median_len", type=int, default=None, help="median row length (default 250; tiny 60)")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of row lengths")
    parser.add_argument("--min_len", type=int, default=None, help="default 32 (tiny 8)")
    parser.add_argument("--max_length", type=int, default=None, help="longest row, as --max_length (default 1024; "
                                                                        "tiny 256)")
    parser.add_argument("--rows_per_step", type=int, default=None,
                        help="override rows per optimizer step for every config (tiny default 16)")
    parser.add_argument("--profile", action="store_true",
                        help="print the kernels that took the most GPU time for each config (slows it down)")
    parser.add_argument("--peak_tflops", type=float, default=790.0, help="dense bf16 peak for MFU (default 790)")
    parser.add_argument("--max_seconds", type=float, default=560.0,
                        help="skip configs not started by this many seconds (so the table is always printed)")
    opts = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not opts.device.startswith("cuda"):
        torch.set_num_threads(1)  # tiny shapes: threads only contend
    tiny = opts.model == "tiny"
    opts.median_len = opts.median_len or (60 if tiny else 250)
    opts.min_len = opts.min_len or (8 if tiny else 32)
    opts.max_length = opts.max_length or (256 if tiny else 1024)
    if tiny and opts.rows_per_step is None:
        opts.rows_per_step = 16
    names = opts.configs or DEFAULT_CONFIGS[opts.model]
    benches = [parse_config(n) for n in names]
    if opts.rows_per_step:
        benches = [dataclasses.replace(b, batch_size=min(b.batch_size, opts.rows_per_step),
                                       accumulation=max(1, opts.rows_per_step // min(b.batch_size, opts.rows_per_step)))
                   for b in benches]
    most_rows = max(b.rows_per_step for b in benches) * (opts.steps + opts.warmup)
    rows = ragged_rows(max(most_rows, 64), seed=opts.seed, vocab=SHAPES[opts.model]["vocab_size"],
                       median=opts.median_len, sigma=opts.sigma, min_len=opts.min_len, max_len=opts.max_length)
    lengths = sorted(len(r) for r in rows)
    gpu = torch.cuda.get_device_name() if opts.device.startswith("cuda") else "cpu"
    import transformers

    print(f"{opts.model} on {gpu}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{len(rows)} rows, median {lengths[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.0f}, "
          f"max {lengths[-1]} tokens; {opts.warmup} warmup + {opts.steps} timed steps per config", flush=True)
    results = []
    for bench in benches:
        record = {"config": bench.name}
        if time.perf_counter() - started > opts.max_seconds:
            record.update(status="skipped", note=f"past --max_seconds {opts.max_seconds:.0f}")
        else:
            t0 = time.perf_counter()
            failure = None
            try:
                with llama_module_restored(), profiled(opts.profile, bench.name):
                    record.update(run_config(bench, opts, rows))
            except Exception as exc:  # noqa: BLE001 - one failing config must not stop the others
                failure = ("OOM", "") if is_oom(exc) else ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
                if failure[0] == "error":
                    traceback.print_exc()
                exc = None
            if failure is not None:
                record.update(status=failure[0], note=failure[1])
                if opts.device.startswith("cuda"):
                    record["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            free_memory()
            record["wall_s"] = round(time.perf_counter() - t0, 1)
        record.update(model=opts.model, rows_per_step=bench.rows_per_step, batch_size=bench.batch_size,
                      accumulation=bench.accumulation, sft=bench.sft, gc_layers=bench.gc_layers,
                      packing_length=bench.packing_length, steps=opts.steps, warmup=opts.warmup, device=gpu,
                      torch=torch.__version__, transformers=transformers.__version__,
                      date=datetime.date.today().isoformat(), data=dict(median=opts.median_len, sigma=opts.sigma,
                      min=opts.min_len, max=opts.max_length, seed=opts.seed))
        results.append(record)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()
                 if k in ("config", "status", "useful_tok_s", "peak_gib", "mfu", "wall_s", "note", "start_gib")}
        shown["fast_path"] = record.get("fast_path")
        print(json.dumps(shown), flush=True)
        if opts.out:
            Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
            with open(opts.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    baseline = "hf_tutorial" if any(r["config"] == "hf_tutorial" for r in results) else (
        "hf_b8" if any(r["config"] == "hf_b8" for r in results) else None)
    print()
    print(table(results, baseline))
    print(f"\nMFU = model FLOPs / time / {opts.peak_tflops:.0f} TFLOP/s; N = {matmul_params(opts.model) / 1e9:.3f}B "
          f"matmul params; 4N (LoRA) or 6N (full) per token + causal attention 6*layers*hidden*sum(len^2). "
          f"x ratio against {baseline}. total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
