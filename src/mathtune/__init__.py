"""mathtune: make a chat LLM measurably better at math and logic.

The public Python API, for notebooks and scripts (each name loads its module on first use, so `import mathtune`
stays fast):

    cfg = mathtune.RunConfig(data=mathtune.DataArgs(dataset=("rg:arithmetic#200",)))
    result = mathtune.sft(cfg)                                   # -> SftResult(run_dir, last_checkpoint, ...)
    model, tokenizer, _ = mathtune.load_model(str(result.last_checkpoint))
    answers = mathtune.Generator(model, tokenizer).generate([[{"role": "user", "content": "2+3?"}]])
    run = mathtune.evaluate(["rg:arithmetic"], mathtune.EvalSettings(limit=20), "out/eval", loaded=(model, tokenizer))
    merged_dir = mathtune.merge_lora(result.last_checkpoint)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute). Strings, not imports: a module is loaded only when its name is first used.
_API = {
    "RunConfig": ("mathtune.config", "RunConfig"),
    "ModelArgs": ("mathtune.config", "ModelArgs"),
    "LoraArgs": ("mathtune.config", "LoraArgs"),
    "OptimArgs": ("mathtune.config", "OptimArgs"),
    "RunArgs": ("mathtune.config", "RunArgs"),
    "FastArgs": ("mathtune.config", "FastArgs"),
    "DataArgs": ("mathtune.data.config", "DataArgs"),
    "sft": ("mathtune.sft", None),  # the module, callable: mathtune.callable_module
    "SftResult": ("mathtune.sft", "SftResult"),
    "evaluate": ("mathtune.evaluate", None),  # the package, callable: mathtune.callable_module
    "EvalSettings": ("mathtune.evaluate.runner", "EvalSettings"),
    "Generator": ("mathtune.generate", "Generator"),
    "Sampling": ("mathtune.generate", "Sampling"),
    "grade": ("mathtune.evaluate.grading", "grade"),
    "BenchItem": ("mathtune.evaluate.benchmarks", "BenchItem"),
    "load_model": ("mathtune.model", "load_for_inference"),
    "merge_lora": ("mathtune.export", "merge_lora"),
    "UserError": ("mathtune.errors", "UserError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:  # PEP 562
    if name not in _API:
        raise AttributeError(f"module 'mathtune' has no attribute {name!r}")
    module, attribute = _API[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
