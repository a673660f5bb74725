"""`mathtune VERB ...`: each verb is its help, its flags (sections of the one table in mathtune.flags) and an entry
function taking the typed configs those flags fill. Parsing and dispatch only: configs check themselves."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import UserError
from .flags import Section, add_flags, did_you_mean, option_names, typed


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with code 2; a mistyped flag name gets
    the closest names the verb takes."""

    flag_names: Sequence[str] = ()

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            message += did_you_mean(message, self.flag_names)
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Verb:
    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _typed_verb(help_text: str, sections: Callable[[], tuple[Section, ...]], entry: Callable[..., int]) -> Verb:
    """A verb whose flags all fill config sections; `entry` gets one config per section, in order. `sections` is
    called only for the verb that runs, so that one verb's imports never slow another."""
    return Verb(help_text, lambda p: add_flags(p, sections()), lambda ns: entry(*typed(ns, sections())))


def _sft_flags() -> tuple[Section, ...]:
    from .config import SFT_FLAGS

    return SFT_FLAGS


def _sft(args: argparse.Namespace) -> int:
    from .config import build_config  # defaults < YAML (--config) < typed flags
    from .sft import run_sft

    return 130 if run_sft(build_config(args)).interrupted else 0


def _infer_flags() -> tuple[Section, ...]:
    from .infer import InferArgs, InferJob

    return (Section("model and questions", InferJob, ("model", "adapter", "dtype", "trust_remote_code", "swift_backend",
                                                      "eval_human", "query", "input", "output")),
            Section("generation", InferArgs, ("system", "stop_words", "max_new_tokens", "temperature", "top_p",
                                               "gen_batch_size", "static_cache")))


def _infer(job, settings) -> int:
    from .infer import run_infer

    return run_infer(job.model, query=job.query, input_path=job.input, output_path=job.output,
                     eval_human=job.eval_human, args=settings, dtype=job.dtype, adapter=job.adapter,
                     trust_remote_code=job.trust_remote_code)


def _export_flags() -> tuple[Section, ...]:
    from .verbs import ExportArgs

    return (Section("", ExportArgs, ("export_ckpt_dir", "merge_lora", "merged_dir", "dtype", "trust_remote_code")),)


def _export(args) -> int:
    from .export import merge_lora

    merged = merge_lora(args.ckpt_dir, args.output_dir, args.dtype, trust_remote_code=args.trust_remote_code)
    print(f"merged model: {merged}")
    return 0


def _plot_flags() -> tuple[Section, ...]:
    from .verbs import PlotArgs

    return (Section("", PlotArgs, ("run_dir",)),)


def _plot(args) -> int:
    from .plot import plot_run

    print(plot_run(args.run_dir))
    return 0


def _quickstart_flags() -> tuple[Section, ...]:
    from .quickstart import QuickstartArgs

    return (Section("", QuickstartArgs, ("run_output_dir", "train_rows", "task")),)


def _quickstart(args) -> int:
    from .quickstart import quickstart

    return quickstart(args)


def _eval_flags() -> tuple[Section, ...]:
    from .evaluate.cli import EVAL_FLAGS

    return EVAL_FLAGS


def _eval(job, settings) -> int:
    from .evaluate.cli import run_eval

    return run_eval(job, settings)


def _deploy_flags() -> tuple[Section, ...]:
    from .serve.config import DeployArgs

    return (Section("", DeployArgs, ("model", "adapters", "served_model_name", "dtype", "trust_remote_code",
                                     "infer_backend", "host", "port", "api_key", "max_new_tokens", "max_batch_size",
                                     "max_queue", "batch_wait_ms")),)


def _deploy(args) -> int:
    from .serve import deploy

    return deploy(args)


def _add_data(p: argparse.ArgumentParser) -> None:
    from .data.cli import add_arguments

    add_arguments(p)


def _data(args: argparse.Namespace) -> int:
    from .data.cli import run

    return run(args)


def _rl_cli():
    from .rl import cli

    return cli


VERBS: dict[str, Verb] = {
    "sft": Verb("fine-tune with LoRA (or fully) on a dataset mix", lambda p: add_flags(p, _sft_flags()), _sft),
    "export": _typed_verb("merge a LoRA checkpoint into its base model", _export_flags, _export),
    "infer": _typed_verb("chat with a model, an adapter checkpoint or a merged folder", _infer_flags, _infer),
    "eval": _typed_verb("measure math and logic accuracy with verified answer checking", _eval_flags, _eval),
    "deploy": _typed_verb("serve a model over an OpenAI-compatible API (batched, streaming)", _deploy_flags,
                          _deploy),
    "rlhf": Verb("GRPO with verifiable rewards (--rlhf_type grpo)", lambda p: _rl_cli().add_arguments(p),
                 lambda a: _rl_cli().run(a)),
    "data": Verb("preview, measure and check datasets", _add_data, _data),
    "plot": _typed_verb("draw a run's loss curve", _plot_flags, _plot),
    "quickstart": _typed_verb("the whole workflow on the embedded model, offline, in minutes", _quickstart_flags,
                              _quickstart),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only the `selected` verb gets its flags, so that one verb's imports never slow another."""
    parser = Parser(prog="mathtune", description="Make a chat LLM measurably better at math and logic.")
    sub = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)
    for name, verb in VERBS.items():
        verb_parser = sub.add_parser(name, help=verb.help, description=verb.help)
        if selected is None or name == selected:
            verb.add(verb_parser)
        if name == selected:
            parser.flag_names = option_names(verb_parser)
        verb_parser.set_defaults(func=verb.run)
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
    if args.command in LAUNCHED_VERBS and os.environ.get("NPROC_PER_NODE") and "LOCAL_RANK" not in os.environ:
        return _launch(args.command, argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; our own bars show training and generation
    try:
        return args.func(args)
    except UserError as exc:
        if _reports(exc):
            print(f"mathtune {args.command}: error: {exc}", file=sys.stderr)
        else:  # let rank 0, which meets the same input, say so before torchrun stops the job on this exit
            import time

            time.sleep(2.0)
        return 2
    except KeyboardInterrupt:
        print(f"\nmathtune {args.command}: interrupted", file=sys.stderr)
        return 130


LAUNCHED_VERBS = ("sft", "eval")
"""Verbs that `NPROC_PER_NODE=N mathtune VERB ...` runs on N processes per node under torchrun."""


def _reports(exc: UserError) -> bool:
    """Under torchrun every rank meets the same bad input: rank 0 alone says so."""
    return os.environ.get("RANK", "0") == "0"


def _launch(command: str, argv: list[str]) -> int:
    """Run this same command under torchrun (ms-swift's spelling): NPROC_PER_NODE processes on this node, and with
    NNODES > 1 a rendezvous at MASTER_ADDR:MASTER_PORT as node NODE_RANK. A rank that fails ends the job: its own
    line says why, and this adds one line naming it (torchrun's report would be a page)."""
    import logging
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    env = os.environ
    try:
        nproc, nnodes, node_rank = (int(env.get(k, d)) for k, d in
                                    (("NPROC_PER_NODE", "1"), ("NNODES", "1"), ("NODE_RANK", "0")))
    except ValueError:
        print(f"mathtune {command}: error: NPROC_PER_NODE, NNODES and NODE_RANK must be whole numbers", file=sys.stderr)
        return 2
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        print(f"mathtune {command}: error: need NPROC_PER_NODE >= 1, NNODES >= 1 and 0 <= NODE_RANK < NNODES "
              f"(got {nproc}, {nnodes}, {node_rank})", file=sys.stderr)
        return 2
    launch = [f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}"]
    if nnodes == 1 and "MASTER_PORT" not in env:
        launch.append("--standalone")  # a free port on this host
    else:
        launch += [f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}",
                   f"--master_port={env.get('MASTER_PORT', '29500')}"]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report: see below
    try:
        run(get_args_parser().parse_args([*launch, "-m", "mathtune", *argv]))
    except SignalException as exc:  # Ctrl-C or SIGTERM: torchrun has passed it on and waited for the ranks
        print(f"mathtune {command}: stopped by {signal.Signals(exc.sigval).name}", file=sys.stderr)
        return 130
    except ChildFailedError as exc:
        from .distributed import PEER_LOST_EXIT

        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        # A rank exiting 2 met a user error, which rank 0 has reported (the others wait for it before they exit);
        # PEER_LOST_EXIT is a survivor that reported the lost rank.
        said = any(f.exitcode in (2, PEER_LOST_EXIT) for f in exc.failures.values())
        if not said:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            print(f"mathtune {command}: rank {rank} {how}; the job stopped", file=sys.stderr)
        return code if code > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
