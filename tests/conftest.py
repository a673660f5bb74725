"""Tiny models the tests build themselves: a ChatML tokenizer and a 2-layer Llama, no hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is 2 + 3? The answer is 5.", "Solve x + 4 = 9. x = 5.", "Knights always tell the truth.",
    "Compute 12 * 7 = 84. Therefore \\boxed{84}.", "system user assistant helpful You are a",
    "The quick brown fox jumps over the lazy dog 0123456789 +-*/=()[]{}.,:;!?", "Hello! How are you?",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML
    return tokenizer


def build_model_dir(path: Path, tokenizer) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved 2-layer Llama with a ChatML tokenizer; read-only for tests (copy it before changing it)."""
    return build_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama", tiny_tokenizer)


@pytest.fixture
def tiny(tiny_model_dir, tiny_tokenizer):
    """The tiny model loaded for inference, with its tokenizer: a fresh copy per test."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tiny_tokenizer


@pytest.fixture
def math_jsonl(tmp_path) -> Path:
    """A small SWIFT-style math dataset."""
    import json

    rows = [{"query": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}
            for a in range(1, 9) for b in range(1, 6)]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def train_tiny_run():
    """A function that trains a two-step sft run of the tiny model (see `_train_tiny_run`)."""
    return _train_tiny_run


def _train_tiny_run(root: Path, model_dir: Path, rows: int = 12) -> Path:
    """A two-step sft run of the tiny model through the CLI, a checkpoint per step; returns its run dir."""
    import json

    from mathtune.cli import main

    data = root / "math.jsonl"
    data.write_text("".join(json.dumps({"query": f"What is {a} + 2?", "response": f"{a + 2}"}) + "\n"
                            for a in range(rows)))
    assert main(["sft", "--model", str(model_dir), "--dataset", str(data), "--output_dir", str(root / "tiny_runs"),
                 "--max_steps", "2", "--save_steps", "1", "--batch_size", "4", "--gradient_accumulation_steps", "1",
                 "--max_length", "128"]) == 0
    (run_dir,) = (root / "tiny_runs").glob("*/v*")
    return run_dir


@pytest.fixture(scope="session")
def train_in_folder():
    """A function that trains in a run folder as sft does (see `_train_in_folder`)."""
    return _train_in_folder


def _train_in_folder(run_dir: Path, model, tokenizer, data, val, *, max_length: int = 256, loss_fn=None,
                     resume: Path | None = None, origins=None, **settings):
    """mathtune.sft.train_in on `run_dir` (created if missing) with OptimArgs/RunArgs built from `settings`; Ctrl-C
    and SIGTERM stop it as they stop sft. `loss_fn` defaults to the plain path's on the CPU."""
    from dataclasses import fields

    import torch

    from mathtune.config import DataArgs, OptimArgs, RunArgs, RunConfig
    from mathtune.fastpath import FastPath
    from mathtune.run_dir import RunDir
    from mathtune.sft import train_in
    from mathtune.signals import StopOnSignal

    optim = {k: v for k, v in settings.items() if k in {f.name for f in fields(OptimArgs)}}
    cfg = RunConfig(data=DataArgs(max_length=max_length), optim=OptimArgs(**optim),
                    run=RunArgs(**{k: v for k, v in settings.items() if k not in optim}))
    if loss_fn is None:
        loss_fn = FastPath(torch.device("cpu")).loss_fn
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDir(cfg, run_dir, resume) as run, StopOnSignal() as stop:
        run.lock()
        return train_in(run, model, tokenizer, data, val, loss_fn, origins=origins, should_stop=stop, progress=False)


@pytest.fixture(scope="session")
def lora_model():
    """A function: the tiny model with a seeded LoRA adapter whose B matrices are non-zero (so the adapter branch
    matters), on the CPU in fp32."""
    return _lora_model


def _lora_model(model_dir, dropout=0.0):
    import torch

    from mathtune.model import attach_lora, load_model

    torch.manual_seed(5)
    model = attach_lora(load_model(model_dir, "fp32", "cpu"), rank=4, alpha=16, dropout=dropout,
                        target_modules="all-linear")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model
