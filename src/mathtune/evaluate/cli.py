"""`mathtune eval`: its flags (a selection of mathtune.flags) and dispatch. The work is in runner.py and report.py."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..flags import Section, add_flags, typed
from .remote import RemoteArgs
from .runner import EvalSettings, evaluate


@dataclass(frozen=True)
class EvalJob:
    """What `mathtune eval` measures and where the results go; `EvalSettings` says how it generates."""

    model: str | None = None  # a model folder, hub id, adapter checkpoint or merged folder; None: the embedded model
    adapter: str | None = None
    benchmarks: tuple[str, ...] = ()
    output_dir: str | None = None  # None: default_output_dir(model, adapter)
    baseline: bool = False  # also the base model without the adapter, and the comparison
    compare: tuple[str, str] | None = None  # two finished evaluation folders to compare instead of running one
    api_base: str | None = None  # a served model instead of a local one (evaluate/remote.py)
    served_model: str | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.output_dir is not None and not self.output_dir.strip():
            raise UserError("--output_dir is empty: pass a folder, or leave the flag out")
        object.__setattr__(self, "benchmarks", tuple(dict.fromkeys(self.benchmarks)))  # a name twice runs once
        if self.compare is not None:
            if self.benchmarks or self.baseline:
                raise UserError("--compare takes two finished evaluation folders; drop --benchmarks and --baseline")
            object.__setattr__(self, "compare", tuple(self.compare))
        elif not self.benchmarks:
            from .benchmarks import list_benchmarks

            raise UserError(f"--benchmarks is required; available: {' '.join(list_benchmarks())}")


EVAL_FLAGS = (
    Section("what", EvalJob, ("model", "adapter", "benchmarks", "eval_output_dir", "baseline", "compare",
                              "api_base", "served_model", "remote_api_key")),
    Section("generation", EvalSettings, ("limit", "num_samples", "temperature", "top_p", "max_new_tokens",
                                         "gen_batch_size", "data_seed", "seed", "infer_backend", "static_cache",
                                         "trust_remote_code")),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `mathtune eval`."""
    add_flags(parser, EVAL_FLAGS)


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
    job, settings = typed(args, EVAL_FLAGS)
    return run_eval(job, settings)


def run_eval(job: EvalJob, settings: EvalSettings) -> int:
    """Evaluate (or compare) and print where the results are; returns the exit code."""
    from ..run_dir import check_output_dir
    from .report import compare

    if job.compare:
        dir_a, dir_b = job.compare
        if job.output_dir:
            check_output_dir(job.output_dir)
        print(compare(dir_a, dir_b, out_dir=job.output_dir))
        return 0
    remote = RemoteArgs(job.api_base, job.served_model, job.api_key)
    served = (job.served_model or "served") if job.api_base else None
    output_dir = Path(job.output_dir) if job.output_dir else default_output_dir(job.model or served, job.adapter)
    evaluate(list(job.benchmarks), settings, output_dir, model=job.model, adapter=job.adapter, baseline=job.baseline,
             remote=remote)
    if job.baseline:
        print(compare(output_dir / "base", output_dir / "adapter", out_dir=output_dir, labels=("base", "adapter")))
    print(f"results: {output_dir}")
    return 0
