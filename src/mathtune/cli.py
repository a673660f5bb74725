"""`mathtune VERB ...`: parses flags and dispatches to one entry function per verb; no logic here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .data.config import parse_bool
from .errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sft(args: argparse.Namespace) -> int:
    from .config import build_config
    from .sft import run_sft

    result = run_sft(build_config(args))
    return 130 if result.interrupted else 0


def _add_sft(p: argparse.ArgumentParser) -> None:
    from .config import add_sft_arguments

    add_sft_arguments(p)


def _add_infer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt_dir", "--model_id_or_path", "--model", dest="ckpt_dir", metavar="PATH",
                   help="a model folder, an adapter checkpoint or a merged folder (default: the embedded model)")
    p.add_argument("--adapter", metavar="CHECKPOINT", help="a LoRA checkpoint to put on top of --ckpt_dir")
    p.add_argument("--eval_human", type=parse_bool, nargs="?", const=True, metavar="BOOL",
                   help="interactive chat (default when no --query or --input is given)")
    p.add_argument("--query", help="answer this one question and exit")
    p.add_argument("--input", metavar="FILE.jsonl",
                   help="answer every row of this file (any training row shape; an answer in it is ignored)")
    p.add_argument("--output", metavar="FILE.jsonl", help="where --input's answers go")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--stop_words", nargs="+", default=[], metavar="WORD", help="stop generating at any of these")
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=16, help="rows per generation batch with --input")
    p.add_argument("--static_cache", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="with --input: a preallocated KV cache with a compiled decoding step (CUDA graphs on a GPU); "
                        "several times faster once compiled, which takes about 40 s (135M) to 150 s (6B)")
    p.add_argument("--dtype", default="AUTO")
    p.add_argument("--infer_backend", choices=("pt",), default="pt", help="pt (PyTorch); accepted for SWIFT users")
    _add_trust_remote_code(p)


def _add_trust_remote_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="run the model repository's own Python code (default false; only for code you trust)")


def _infer(args: argparse.Namespace) -> int:
    from .infer import InferArgs, run_infer

    if args.static_cache and not args.input:
        raise UserError("--static_cache batches the rows of --input; --query and chat answer one prompt at a time")
    settings = InferArgs(args.max_new_tokens, args.temperature, args.top_p, tuple(args.stop_words), args.system,
                         args.batch_size, args.static_cache)
    return run_infer(args.ckpt_dir, query=args.query, input_path=args.input, output_path=args.output,
                     eval_human=args.eval_human, args=settings, dtype=args.dtype, adapter=args.adapter,
                     trust_remote_code=args.trust_remote_code)


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt_dir", required=True, metavar="CHECKPOINT", help="the LoRA checkpoint to merge")
    p.add_argument("--merge_lora", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="merge the adapter into the base model (default true)")
    p.add_argument("--output_dir", metavar="DIR", help="default: CHECKPOINT-merged next to the checkpoint")
    p.add_argument("--dtype", default="AUTO")
    _add_trust_remote_code(p)


def _export(args: argparse.Namespace) -> int:
    from .export import merge_lora

    if not args.merge_lora:
        raise UserError("export only merges for now: pass --merge_lora true")
    merged = merge_lora(args.ckpt_dir, args.output_dir, args.dtype, trust_remote_code=args.trust_remote_code)
    print(f"merged model: {merged}")
    return 0


def _add_plot(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder (output/<model>/v<N>-<timestamp>)")


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    print(plot_run(args.run_dir))
    return 0


def _add_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", default="output", help="where the run goes (default output)")
    p.add_argument("--train_rows", type=int, default=None, help="training rows (default: sized for a 2-core CPU)")
    p.add_argument("--task", default="syllogism",
                   help="built-in task to learn and measure: syllogism (default), gsm-symbolic, arithmetic, equations, "
                   "fractions, knights_knaves, propositional_logic")


def _quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart
    from .run_dir import check_output_dir

    # Checked here because a bad value would otherwise surface only after minutes of answering and training.
    if args.train_rows is not None and args.train_rows < 1:
        raise UserError(f"--train_rows must be a positive whole number, got {args.train_rows}")
    check_output_dir(args.output_dir)
    return run_quickstart(args.output_dir, args.train_rows, args.task)


def _add_eval(p: argparse.ArgumentParser) -> None:
    from .evaluate.cli import add_arguments

    add_arguments(p)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate.cli import run

    return run(args)


def _add_data(p: argparse.ArgumentParser) -> None:
    from .data.cli import add_arguments

    add_arguments(p)


def _data(args: argparse.Namespace) -> int:
    from .data.cli import run

    return run(args)


VERBS: dict[str, tuple[str, Callable, Callable]] = {
    "sft": ("fine-tune with LoRA (or fully) on a dataset mix", _add_sft, _sft),
    "export": ("merge a LoRA checkpoint into its base model", _add_export, _export),
    "infer": ("chat with a model, an adapter checkpoint or a merged folder", _add_infer, _infer),
    "eval": ("measure math and logic accuracy with verified answer checking", _add_eval, _eval),
    "data": ("preview, measure and check datasets", _add_data, _data),
    "plot": ("draw a run's loss curve", _add_plot, _plot),
    "quickstart": ("the whole workflow on the embedded model, offline, in minutes", _add_quickstart, _quickstart),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only the `selected` verb gets its flags, so that one verb's imports never slow another."""
    parser = Parser(prog="mathtune", description="Make a chat LLM measurably better at math and logic.")
    sub = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)
    for name, (help_text, add, run) in VERBS.items():
        verb = sub.add_parser(name, help=help_text, description=help_text)
        if selected is None or name == selected:
            add(verb)
        verb.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in VERBS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag already reported in one line
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; our own bars show training and generation
    try:
        return args.func(args)
    except UserError as exc:
        print(f"mathtune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmathtune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
