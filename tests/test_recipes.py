"""The shipped recipes (configs/*.yaml) load as sft configs with the values their comments and docs/results.md
describe, and name only benchmarks mathtune knows."""

from pathlib import Path

import pytest

from mathtune.cli import build_parser
from mathtune.config import build_config
from mathtune.evaluate.benchmarks import get_benchmark

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load(name: str, *flags: str):
    return build_config(build_parser("sft").parse_args(["sft", "--config", str(CONFIGS / name), *flags]))


def test_the_embedded_recipe_is_the_one_measured():
    cfg = load("smollm2-135m-math.yaml")
    assert cfg.model.model_id_or_path is None  # the embedded model
    assert cfg.data.dataset == ("rg:gsm-symbolic#6000",)
    assert (cfg.lora.sft_type, cfg.lora.lora_rank, cfg.lora.lora_alpha) == ("lora", 16, 32)
    assert cfg.optim.learning_rate == pytest.approx(5e-4)
    assert (cfg.optim.batch_size, cfg.optim.gradient_accumulation_steps, cfg.optim.packing_length) == (16, 1, 32768)
    assert cfg.fast.gradient_checkpointing is False
    assert "rg:gsm-symbolic-unseen" in cfg.eval_benchmarks


def test_the_yi_recipe_keeps_the_tutorials_model_and_flags_still_win():
    cfg = load("yi-1.5-6b-chat-math.yaml", "--dataset", "ruozhiba#5000", "--lora_rank", "16")
    assert cfg.model.model_id_or_path == "01ai/Yi-1.5-6B-Chat"
    assert cfg.data.dataset == ("ruozhiba#5000",) and cfg.lora.lora_rank == 16
    assert cfg.fast.gradient_checkpointing is True and cfg.optim.packing_length == 16384


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_names_known_benchmarks(name):
    for bench in load(name).eval_benchmarks:
        assert get_benchmark(bench).name == bench
