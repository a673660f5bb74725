"""Run benchmarks on a model: generate, grade, and write predictions.jsonl per benchmark plus summary.json.

Statistics: accuracy is the mean over questions of the fraction of samples graded right (with one sample, plain
accuracy; with k samples, the unbiased pass@1). Its 95% interval is Wilson's on the number of questions, the
standard for a proportion that stays sensible near 0 and 1 and for small n. With k samples, pass@k uses the unbiased
estimator of Chen et al. (2021) and the majority vote groups equal answers ("1,000" = "1000.0"); unparsed answers
do not vote.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import atomic
from ..distributed import is_main, session
from ..errors import UserError
from ..model import is_adapter_dir
from ..run_dir import check_output_dir, lock_folder
from ..seeding import check_seed
from .grading import answer_key, grade
from .remote import RemoteArgs, remote_generator
from .remote import check_job as check_remote_job

NOT_AN_ADAPTER = "--baseline compares an adapter with its base model: pass the checkpoint with --adapter"
GenerateFn = Callable[[list[list[dict[str, str]]]], list[list[str]]]
Z95 = 1.959963984540054


@dataclass(frozen=True)
class EvalSettings:
    """How a benchmark run generates; saved in summary.json."""

    limit: int | None = None  # questions per benchmark (a seeded subset); None: by device (see resolve_for_device)
    num_samples: int = 1  # outputs per question; >1 gives pass@k and majority vote and needs temperature > 0
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: by device (see resolve_for_device); a cut-off answer is graded as written
    batch_size: int = 32
    data_seed: int = 42  # picks the benchmark items (the same seed gives the same questions)
    seed: int = 0  # sampling seed
    infer_backend: str = "pt"
    static_cache: bool = False  # pt backend: a static KV cache and a compiled decoding step (GPU)
    trust_remote_code: bool = False  # a model loaded by name may run its repository's own Python code

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.num_samples < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1) or self.batch_size < 1:
            raise UserError("--num_samples, --max_new_tokens and --batch_size must be positive")
        if not (math.isfinite(self.temperature) and self.temperature >= 0) or not 0 < self.top_p <= 1:
            raise UserError("--temperature must be >= 0 and --top_p in (0, 1]")
        check_seed("--seed", self.seed)
        check_seed("--data_seed", self.data_seed)
        if self.num_samples > 1 and self.temperature == 0:
            raise UserError("--num_samples > 1 needs --temperature > 0: greedy decoding gives the same answer k times")
        if self.infer_backend not in ("pt", "vllm"):
            raise UserError(f"--infer_backend must be pt or vllm, got '{self.infer_backend}'")
        if self.static_cache and self.infer_backend != "pt":
            raise UserError("--static_cache is for --infer_backend pt; vLLM manages its own cache and CUDA graphs")


@dataclass(frozen=True)
class DeviceDefaults:
    """What `limit` and `max_new_tokens` left as None become on a kind of device."""

    max_new_tokens: int
    limit: int | None  # None: every question


# A GPU has room for step-by-step math: 1024 new tokens, every question. A 2-core CPU decodes the embedded 135M model
# at about 10-20 tokens/s per batch, so 200 questions x 1024 tokens took hours there; 50 questions x 256 tokens keep
# an example run in minutes (README, "Measuring the gain") and 50 still gives a +-14-point interval.
DEVICE_DEFAULTS = {"cpu": DeviceDefaults(max_new_tokens=256, limit=50),
                   "gpu": DeviceDefaults(max_new_tokens=1024, limit=None)}


def resolve_for_device(settings: EvalSettings, device: str, announce: bool = True) -> EvalSettings:
    """`settings` with `limit` and `max_new_tokens` that are None filled in for `device` ("cpu", "cuda", "cuda:1",
    "mps", ...); values given explicitly are kept. With `announce`, one line says which defaults were applied."""
    kind = "cpu" if str(device).split(":")[0] == "cpu" else "gpu"
    defaults = DEVICE_DEFAULTS[kind]
    applied: list[str] = []
    changes: dict[str, Any] = {}
    if settings.max_new_tokens is None:
        changes["max_new_tokens"] = defaults.max_new_tokens
        applied.append(f"--max_new_tokens {defaults.max_new_tokens}")
    if settings.limit is None and defaults.limit is not None:
        changes["limit"] = defaults.limit
        applied.append(f"--limit {defaults.limit}")
    if announce and applied and kind == "cpu":  # a GPU's defaults are the plain ones: nothing to point out
        print(f"on {device}: {' and '.join(applied)} by default (give the flags to change them)", flush=True)
    return replace(settings, **changes) if changes else settings


@dataclass
class BenchResult:
    """Scores of one benchmark; `records` are the predictions.jsonl rows."""

    name: str
    checker: str
    language: str
    prompt_template: str
    n: int
    num_samples: int
    accuracy: float
    ci_low: float
    ci_high: float
    pass_at_k: dict[str, float]
    majority_accuracy: float | None
    unparsed: int
    mean_output_tokens: float | None
    # the trivial baseline: what always giving the commonest gold answer of these questions would score
    commonest_gold: str | None = None
    commonest_accuracy: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("records")
        return data


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends at 0 and n: the formula gives them up to float rounding (2.8e-17)
    return (0.0 if successes <= 0 else centre - half), (1.0 if successes >= n else centre + half)


def commonest_answer(golds: Sequence[Any]) -> tuple[str | None, float]:
    """The trivial baseline of a set of questions: their commonest gold answer and the share of questions it is the
    answer of, i.e. the accuracy of always giving it ((None, 0.0) for no questions). Answers compare as text."""
    if not golds:
        return None, 0.0
    gold, count = Counter(str(g) for g in golds).most_common(1)[0]
    return gold, count / len(golds)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(extracted: Sequence[str | None], verdicts: Sequence[bool]) -> tuple[str | None, bool]:
    """The most frequent answer (ties: the one given first) and whether it is right."""
    groups: dict[str, list[int]] = {}
    for i, answer in enumerate(extracted):
        key = answer_key(answer)
        if key is not None:
            groups.setdefault(key, []).append(i)
    if not groups:
        return None, False
    best = max(groups.values(), key=lambda idx: (len(idx), -idx[0]))
    return extracted[best[0]], verdicts[best[0]]


def score_outputs(benchmark: Any, items: Sequence[Any], outputs: Sequence[Sequence[str]], tokenizer: Any = None,
                  prompts: Sequence[str] | None = None) -> BenchResult:
    """Grade `outputs[i]` (the samples for `items[i]`) and compute the benchmark's statistics."""
    if len(items) != len(outputs):
        raise ValueError(f"{len(items)} items but {len(outputs)} output lists")
    k = len(outputs[0]) if outputs else 1
    flat = [text for samples in outputs for text in samples]
    lengths = _token_counts(tokenizer, flat) if tokenizer is not None else None
    records, scores, majority, unparsed, passes = [], [], [], 0, {str(j): 0.0 for j in sorted({1, k})}
    for i, (item, samples) in enumerate(zip(items, outputs, strict=True)):
        if len(samples) != k:
            raise ValueError(f"item {item.id}: {len(samples)} outputs, expected {k}")
        verdicts = [grade(text, item, benchmark.checker, benchmark.language) for text in samples]
        right = sum(v.correct for v in verdicts)
        unparsed += sum(not v.parsed for v in verdicts)
        for j in passes:
            passes[j] += pass_at_k(k, right, int(j))
        voted, voted_ok = majority_vote([v.extracted for v in verdicts], [v.correct for v in verdicts])
        scores.append(right / k)
        majority.append(voted_ok)
        records.append({
            "id": item.id, "question": item.question, "gold": item.gold,
            "prompt": prompts[i] if prompts is not None else None,
            "outputs": list(samples), "extracted": [v.extracted for v in verdicts],
            "verdicts": [v.correct for v in verdicts], "parsed": [v.parsed for v in verdicts],
            "output_tokens": lengths[i * k : (i + 1) * k] if lengths is not None else None,
            "score": right / k, "majority_answer": voted,
            # one verdict per question for before/after comparisons: the sample's, or the majority's with k > 1
            "correct": verdicts[0].correct if k == 1 else voted_ok,
        })
    n = len(items)
    accuracy = sum(scores) / n if n else 0.0
    low, high = wilson_interval(accuracy * n, n)
    commonest_gold, commonest_accuracy = commonest_answer([item.gold for item in items])
    return BenchResult(
        name=benchmark.name, checker=benchmark.checker, language=benchmark.language,
        prompt_template=benchmark.prompt, n=n, num_samples=k, accuracy=accuracy, ci_low=low, ci_high=high,
        pass_at_k={j: total / n if n else 0.0 for j, total in passes.items()},
        majority_accuracy=(sum(majority) / n if n else 0.0) if k > 1 else None,
        unparsed=unparsed, mean_output_tokens=sum(lengths) / len(lengths) if lengths else None,
        commonest_gold=commonest_gold, commonest_accuracy=commonest_accuracy, records=records,
    )


def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# ---------------------------------------------------------------------------------------------------------------
# Files


def bench_dir_name(name: str) -> str:
    """A folder name for a benchmark: 'rg:gsm-symbolic' -> 'rg_gsm-symbolic', 'gsm8k=/data/x.jsonl' -> 'gsm8k',
    'platinum:gsm8k=/data/x.jsonl' -> 'platinum' (a labelled local copy is filed under its label)."""
    from .benchmarks import dir_name, parse_name

    label, raw, _ = parse_name(name)
    return dir_name(label or raw)


# A failed write ends the run; the files written before it, summary.json of the finished benchmarks included, stay.
INTACT = "; results written before are intact"


def write_predictions(path: Path, records: Sequence[dict[str, Any]]) -> None:
    atomic.write_jsonl(path, records, INTACT, default=str)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic.write_json(path, summary, INTACT, default=str)


def save_result(output_dir: Path, summary: dict[str, Any], result: BenchResult) -> None:
    """Write a benchmark's predictions.jsonl, add it to `summary` and rewrite summary.json.

    summary.json is rewritten after each benchmark, so a crash keeps the benchmarks already finished.
    """
    folder = bench_dir_name(result.name)
    for other, entry in summary["benchmarks"].items():
        if other == result.name or str(entry.get("dir", "")).lower() == folder.lower():
            raise UserError(f"benchmark '{result.name}' would overwrite the results of '{other}' in {output_dir}")
    write_predictions(output_dir / folder / "predictions.jsonl", result.records)
    summary["benchmarks"][result.name] = {**result.summary(), "dir": folder}
    write_summary(output_dir / "summary.json", summary)


def format_table(summary: dict[str, Any]) -> str:
    """A short text table of a summary."""
    rows = [("benchmark", "n", "accuracy", "95% CI", "commonest answer", "unparsed", "tokens")]
    for name, b in summary["benchmarks"].items():
        extra = ""
        if b["num_samples"] > 1:
            k = str(b["num_samples"])
            extra = f"  pass@{k} {100 * b['pass_at_k'][k]:.1f}%  maj@{k} {100 * b['majority_accuracy']:.1f}%"
        tokens = f"{b['mean_output_tokens']:.0f}" if b["mean_output_tokens"] is not None else "-"
        trivial = f"{100 * b['commonest_accuracy']:.1f}%" if b.get("commonest_gold") is not None else "-"
        rows.append((name, str(b["n"]), f"{100 * b['accuracy']:.1f}%",
                     f"[{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}]", trivial, str(b["unparsed"]),
                     tokens + extra))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    note = "commonest answer: the accuracy of always giving the commonest correct answer of these questions"
    return "\n".join([f"model: {summary['model']}", *lines, note])


# ---------------------------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class EvalRun:
    """What `evaluate` scored: the summary of the model as given and, with `baseline`, that of its base model."""

    summary: dict[str, Any]
    base: dict[str, Any] | None = None


def evaluate(benchmarks: Sequence[str], settings: EvalSettings, output_dir: str | Path, *, model: str | None = None,
             adapter: str | None = None, loaded: tuple[Any, Any] | None = None, baseline: bool = False,
             description: str | None = None, progress: bool = True, remote: RemoteArgs | None = None) -> EvalRun:
    """Evaluate a model on `benchmarks`: predictions.jsonl per benchmark and summary.json in `output_dir`.

    The model is `loaded` = (model, tokenizer), already in memory (sft before and after training, quickstart), or
    else loaded here from `model` (a folder, hub id, adapter checkpoint or merged folder; None: the embedded model)
    and `adapter`. With `baseline`, the adapter's base model goes into output_dir/base and the adapter into
    output_dir/adapter: one model, its LoRA layers switched off for the base run, so the runs differ by the adapter
    alone. `description` names the model in summary.json (default: what loading it says). `remote` with an api_base:
    the model served there instead (evaluate/remote.py).
    """
    if loaded is not None and (model is not None or adapter is not None):
        raise ValueError("pass loaded=(model, tokenizer) or a model to load, not both")
    with session():  # under torchrun: join the ranks (sft has already), to share questions across them
        return _evaluate(benchmarks, settings, output_dir, model=model, adapter=adapter, loaded=loaded,
                         baseline=baseline, description=description, progress=progress and is_main(), remote=remote)


def _evaluate(benchmarks: Sequence[str], settings: EvalSettings, output_dir: str | Path, *, model: str | None,
              adapter: str | None, loaded: tuple[Any, Any] | None, baseline: bool, description: str | None,
              progress: bool, remote: RemoteArgs | None = None) -> EvalRun:
    if loaded is not None and settings.infer_backend != "pt":
        raise ValueError("a model already in memory is evaluated with the pt backend")
    _check_names(benchmarks, settings.data_seed)
    out = Path(output_dir)
    check_output_dir(out)  # before loading and generating, which take minutes
    served = remote is not None and remote.api_base is not None  # --api_base: the model behind a server
    if served:
        check_remote_job(remote, model=model, adapter=adapter, loaded=loaded, baseline=baseline, settings=settings)
    if baseline and loaded is None and adapter is None and not (model and is_adapter_dir(Path(model))):
        raise UserError(NOT_AN_ADAPTER)
    if settings.limit is None or settings.max_new_tokens is None:
        # a server's device is unknown here: the GPU's defaults (every question, 1024 tokens)
        settings = resolve_for_device(settings, "remote" if served else _device_of(loaded, settings), announce=progress)
    if served:
        make_generate, tokenizer, name = remote_generator(remote, settings, progress)
    elif settings.infer_backend == "vllm":
        make_generate, tokenizer, name = vllm_generator(model, adapter, settings, progress)
    else:
        make_generate, tokenizer, name = _pt_generator(model, adapter, loaded, settings, progress, baseline)
    name = description or name
    with _writer_of(out) if is_main() else contextlib.nullcontext():  # under torchrun, rank 0 alone writes
        if not baseline:
            return EvalRun(_run_benchmarks(make_generate(True), tokenizer, benchmarks, out, settings, name, progress))
        base = _run_benchmarks(make_generate(False), tokenizer, benchmarks, out / "base", settings,
                               f"{name} (adapter disabled)", progress)
        tuned = _run_benchmarks(make_generate(True), tokenizer, benchmarks, out / "adapter", settings, name,
                                progress)
        return EvalRun(tuned, base)


@contextlib.contextmanager
def _writer_of(out: Path) -> Iterator[None]:
    """Hold `out` for this evaluation alone: two evaluations into one folder would mix one model's summary with
    the other's predictions. The lock is run_dir's (the kernel drops it when the process ends)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --output_dir '{out}': {exc.strerror or exc}") from None
    fd = lock_folder(out, "--output_dir")
    try:
        yield
    finally:
        os.close(fd)


def _run_benchmarks(generate_fn: GenerateFn, tokenizer: Any, benchmarks: Sequence[str], out: Path,
                    settings: EvalSettings, description: str, progress: bool) -> dict[str, Any]:
    """Generate, grade and write each benchmark in turn with `generate_fn(conversations) -> outputs`; the summary."""
    from .benchmarks import resolve_benchmarks

    resolved = resolve_benchmarks(benchmarks, data_seed=settings.data_seed)
    summary: dict[str, Any] = {"model": description, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "settings": asdict(settings), "benchmarks": {}}
    for name, bench in zip(benchmarks, resolved, strict=True):
        items = bench.load(limit=settings.limit, seed=settings.data_seed)
        if not items:
            raise UserError(f"benchmark '{name}' has no questions")
        prompts = [bench.render(item.question) for item in items]
        if progress:
            print(f"{bench.name}: {len(items)} questions x {settings.num_samples} sample(s)", flush=True)
        # The pt generator seeds each call (one per benchmark), so a benchmark's samples do not depend on the others.
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = _shared_generate(generate_fn, conversations) if settings.infer_backend == "pt" else \
            generate_fn(conversations)
        if outputs is not None:
            save_result(out, summary, score_outputs(bench, items, outputs, tokenizer, prompts))
    if is_main():
        print(format_table(summary), flush=True)
    return summary


def _shared_generate(generate_fn: GenerateFn, conversations: list) -> list[list[str]] | None:
    """Under torchrun, each rank answers every world-th question and rank 0 gathers the answers in question order
    (None on the other ranks, which write nothing); in one process, generate_fn itself."""
    from ..distributed import current, gather_objects

    d = current()
    if not d.active:
        return generate_fn(conversations)
    mine = generate_fn(conversations[d.rank :: d.world]) if conversations[d.rank :: d.world] else []
    parts = gather_objects(mine)
    if parts is None:
        return None
    outputs: list[list[str]] = [[] for _ in conversations]
    for rank, part in enumerate(parts):
        outputs[rank :: d.world] = part
    return outputs


def _device_of(loaded: tuple[Any, Any] | None, settings: EvalSettings) -> str:
    """Where generation will run: the loaded model's device, vLLM's GPU, else where a model would be loaded."""
    if loaded is not None:
        parameters = getattr(loaded[0], "parameters", None)  # a stand-in without parameters counts as the CPU
        parameter = next(iter(parameters()), None) if parameters is not None else None
        return str(parameter.device) if parameter is not None else "cpu"
    if settings.infer_backend == "vllm":
        return "cuda"
    from ..model import default_device

    return default_device()


def _describe(model: Any) -> str:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
    if hasattr(model, "peft_config"):
        return f"{name} + LoRA adapter (in memory)"
    return str(name) or type(model).__name__


def _pt_generator(model: str | None, adapter: str | None, loaded: tuple[Any, Any] | None, settings: EvalSettings,
                  progress: bool, baseline: bool) -> tuple[Callable[[bool], GenerateFn], Any, str]:
    """(make_generate(use_adapter), tokenizer, description) on one PyTorch model, loaded here unless `loaded`."""
    from ..generate import Generator, Sampling, within_context

    if loaded is None:
        from ..model import load_for_inference

        network, tokenizer, name = load_for_inference(model, adapter, trust_remote_code=settings.trust_remote_code)
    else:
        (network, tokenizer), name = loaded, _describe(loaded[0])
    if baseline and not hasattr(network, "disable_adapter"):
        raise UserError(NOT_AN_ADAPTER)
    generator = Generator(network, tokenizer)
    sampling = Sampling(within_context(network, settings.max_new_tokens), settings.temperature, settings.top_p,
                        settings.num_samples, settings.seed)

    def make_generate(use_adapter: bool) -> GenerateFn:
        def generate_fn(conversations: list[list[dict[str, str]]]) -> list[list[str]]:
            with contextlib.nullcontext() if use_adapter else network.disable_adapter():
                return generator.generate(conversations, sampling, batch_size=settings.batch_size,
                                          static_cache=settings.static_cache, progress=progress)

        return generate_fn

    return make_generate, tokenizer, name


def _check_names(benchmarks: Sequence[str], data_seed: int) -> None:
    """Resolve every benchmark name now: a typo, or two benchmarks sharing a name or label, fails before minutes of
    model loading."""
    from .benchmarks import resolve_benchmarks

    if not benchmarks:
        raise UserError("no benchmarks given")
    resolve_benchmarks(benchmarks, data_seed=data_seed)


# ---------------------------------------------------------------------------------------------------------------
# Optional vLLM backend (--infer_backend vllm). Not exercised by the tests: vllm needs a GPU build.


def vllm_generator(model: str | None, adapter: str | None, settings: EvalSettings,
                   progress: bool = True) -> tuple[Callable[[bool], GenerateFn], Any, str]:
    """(make_generate(use_adapter), tokenizer, description) backed by one vllm.LLM; the adapter served as LoRA."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise UserError("--infer_backend vllm: vllm is not installed (pip install vllm); "
                        "or use --infer_backend pt") from None
    from ..model import base_of_adapter, is_adapter_dir, load_tokenizer, resolve_model_path

    if model and adapter is None and is_adapter_dir(Path(model)):
        adapter, model = model, base_of_adapter(Path(model))
    base = resolve_model_path(model)
    tokenizer = load_tokenizer(base, settings.trust_remote_code)
    rank = 16
    if adapter is not None:
        if not is_adapter_dir(Path(adapter)):
            raise UserError(f"adapter '{adapter}' has no adapter_config.json")
        rank = max(rank, int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16)))
    llm = vllm.LLM(model=str(base), enable_lora=adapter is not None, max_lora_rank=rank, seed=settings.seed,
                   trust_remote_code=settings.trust_remote_code)
    params = vllm.SamplingParams(n=settings.num_samples, temperature=settings.temperature, top_p=settings.top_p,
                                 max_tokens=settings.max_new_tokens, seed=settings.seed)
    lora = LoRARequest("adapter", 1, str(adapter)) if adapter is not None else None

    def make_generate(use_adapter: bool) -> GenerateFn:
        def generate_fn(conversations: list[list[dict[str, str]]]) -> list[list[str]]:
            results = llm.chat(conversations, params, use_tqdm=progress, lora_request=lora if use_adapter else None)
            return [[out.text for out in result.outputs] for result in results]

        return generate_fn

    description = f"{base} + {adapter} (vllm)" if adapter is not None else f"{base} (vllm)"
    return make_generate, tokenizer, description
