"""`mathtune eval`: flags and dispatch. The work is in runner.py and report.py."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.config import parse_bool
from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `mathtune eval`."""
    parser.add_argument("--model", "--model_id_or_path", "--ckpt_dir", dest="model", metavar="PATH_OR_ID",
                        help="a model folder, hub id, adapter checkpoint or merged folder (default: embedded model)")
    parser.add_argument("--adapter", metavar="CHECKPOINT", help="a LoRA checkpoint to put on top of --model")
    parser.add_argument("--benchmarks", "--eval_dataset", dest="benchmarks", nargs="+", metavar="BENCH",
                        help="benchmarks to run, e.g. rg:gsm-symbolic champ gsm8k=/data/gsm8k_test.jsonl")
    parser.add_argument("--limit", "--eval_limit", dest="limit", type=int, help="questions per benchmark (default all)")
    parser.add_argument("--output_dir", metavar="DIR",
                        help="default output/eval/<model>-<YYYYMMDD-HHMMSS>; with --compare, where the chart goes")
    parser.add_argument("--num_samples", type=int, default=1, metavar="K",
                        help="answers per question; K > 1 adds pass@K and majority vote (needs --temperature > 0)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per generation batch")
    parser.add_argument("--data_seed", type=int, default=42, help="picks the questions; keep it equal to compare runs")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--baseline", action="store_true",
                        help="also evaluate the base model without the adapter (into DIR/base and DIR/adapter) "
                             "and print the comparison")
    parser.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"),
                        help="compare two finished evaluation folders instead of running one")
    parser.add_argument("--infer_backend", choices=("pt", "vllm"), default="pt",
                        help="pt (PyTorch, default) or vllm when it is installed")
    parser.add_argument("--static_cache", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                        help="pt backend: a preallocated KV cache with a compiled decoding step (CUDA graphs on a "
                             "GPU); decodes several times faster once compiled, compiling takes about 40 s (135M) to "
                             "150 s (6B) per benchmark, and again for the adapter under --baseline (default false)")
    parser.add_argument("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                        help="run the model repository's own Python code (default false; only for code you trust)")


def default_output_dir(model: str | None, adapter: str | None) -> Path:
    """output/eval/<name>-<YYYYMMDD-HHMMSS>, the name taken from the adapter's run and step, else the model."""
    if adapter:
        path = Path(adapter).resolve()
        name = f"{path.parent.name}-{path.name}"
    elif model:
        name = Path(model).name or model.replace("/", "_")
    else:
        name = "default"
    return Path("output") / "eval" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    """Run `mathtune eval` from parsed flags; returns the exit code."""
    from ..run_dir import check_output_dir
    from .report import compare
    from .runner import EvalSettings, evaluate

    if args.output_dir is not None and not args.output_dir.strip():
        raise UserError("--output_dir is empty: pass a folder, or leave the flag out")
    if args.benchmarks:
        args.benchmarks = list(dict.fromkeys(args.benchmarks))  # a name given twice is measured once
    if args.compare:
        if args.benchmarks or args.baseline:
            raise UserError("--compare takes two finished evaluation folders; drop --benchmarks and --baseline")
        dir_a, dir_b = args.compare
        if args.output_dir:
            check_output_dir(args.output_dir)
        print(compare(dir_a, dir_b, out_dir=args.output_dir))
        return 0
    if not args.benchmarks:
        from .benchmarks import list_benchmarks

        raise UserError(f"--benchmarks is required; available: {' '.join(list_benchmarks())}")
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model, args.adapter)
    settings = EvalSettings(limit=args.limit, num_samples=args.num_samples, temperature=args.temperature,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            data_seed=args.data_seed, seed=args.seed, infer_backend=args.infer_backend,
                            static_cache=args.static_cache, trust_remote_code=args.trust_remote_code)
    evaluate(args.benchmarks, settings, output_dir, model=args.model, adapter=args.adapter, baseline=args.baseline)
    if args.baseline:
        print(compare(output_dir / "base", output_dir / "adapter", out_dir=output_dir, labels=("base", "adapter")))
    print(f"results: {output_dir}")
    return 0

