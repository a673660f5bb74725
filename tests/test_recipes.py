"""The shipped recipes (configs/*.yaml) load as sft configs with the values their comments and docs/results.md
describe, and name only benchmarks mathtune knows."""

from pathlib import Path

import pytest

from mathtune import quickstart
from mathtune.cli import build_parser
from mathtune.config import build_config
from mathtune.evaluate.benchmarks import get_benchmark

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load(name: str, *flags: str):
    return build_config(build_parser("sft").parse_args(["sft", "--config", str(CONFIGS / name), *flags]))


def test_the_embedded_recipe_is_what_the_cuda_quickstart_runs(tmp_path):
    cfg = load("smollm2-135m-math.yaml", "--output_dir", str(tmp_path))
    assert cfg.model.model_id_or_path is None  # the embedded model
    assert cfg.data.dataset[0] == "rg:gsm-symbolic#48000" and len(cfg.data.dataset) == 8  # gsm + seven arithmetic tasks
    assert "rg:gsm-symbolic-unseen" in cfg.eval_benchmarks
    assert cfg.optim.num_train_epochs == 2
    # The quickstart builds the same sft config in code (the file is not installed with the package); everything it
    # trains with must match, apart from its replay rows (added after the recipe's own sources) and, in the quickstart
    # itself, one epoch instead of two (its 5 minutes).
    quick = quickstart.gsm_config(str(tmp_path), None, cfg.data.data_seed, None)
    for section in ("model", "lora", "data", "optim", "run", "fast"):
        assert getattr(quick, section) == getattr(cfg, section), section
    with_replay = quickstart.gsm_config(str(tmp_path), None, cfg.data.data_seed, tmp_path / "replay.jsonl")
    assert with_replay.data.dataset[:-1] == cfg.data.dataset
    one_epoch = quickstart.gsm_config(str(tmp_path), None, cfg.data.data_seed, None, quickstart.GSM_QUICK_EPOCHS)
    assert one_epoch.optim.num_train_epochs == 1 and one_epoch.data == cfg.data and one_epoch.lora == cfg.lora


def test_the_yi_recipe_keeps_the_tutorials_model_and_flags_still_win():
    cfg = load("yi-1.5-6b-chat-math.yaml", "--dataset", "ruozhiba#5000", "--lora_rank", "16")
    assert cfg.model.model_id_or_path == "01ai/Yi-1.5-6B-Chat"
    assert cfg.data.dataset == ("ruozhiba#5000",) and cfg.lora.lora_rank == 16
    assert cfg.fast.gradient_checkpointing is True and cfg.optim.packing_length == 16384


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_names_known_benchmarks(name):
    for bench in load(name).eval_benchmarks:
        assert get_benchmark(bench).name == bench


def _sweep2():
    import importlib.util

    path = CONFIGS.parent / "docs" / "results" / "recipe_sweep" / "sweep2.py"
    spec = importlib.util.spec_from_file_location("sweep2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_sweep2_variant_is_a_valid_sft_config(tmp_path):
    # The GPU sweep runs once in a short call: a variant with a mistyped option would cost its share of that call.
    sweep2 = _sweep2()
    default = load("smollm2-135m-math.yaml")
    built = {name: sweep2.build_config(overrides, tmp_path / name, smoke=False)
             for name, overrides in sweep2.variants(sweep2.load_config())}
    assert list(built)[:2] == ["default", "tutorial"]
    assert built["default"].data.dataset == default.data.dataset and built["default"].optim == default.optim
    assert built["default"].lora == default.lora and built["default"].fast == default.fast
    assert built["default"].data.split_dataset_ratio == 0  # the sweep measures on benchmarks, not a validation split
    tutorial = built["tutorial"]
    assert (tutorial.lora.lora_rank, tutorial.lora.lora_alpha, tutorial.lora.target_modules) == (
        8, 32, ("q_proj", "k_proj", "v_proj"))
    assert (tutorial.optim.learning_rate, tutorial.optim.lr_scheduler_type, tutorial.optim.warmup_ratio) == (
        1e-4, "linear", 0.05)
    assert tutorial.optim.batch_size * tutorial.optim.gradient_accumulation_steps == 16
    assert tutorial.data.dataset == default.data.dataset  # the same data
    assert built["gsm_only"].data.dataset == ("rg:gsm-symbolic#48000",)
    for name, rows_a_step in (("gsm18k", 32), ("b128", 128)):  # fewer gsm rows, the same mix
        assert built[name].data.dataset[0] == "rg:gsm-symbolic#18000"
        assert built[name].data.dataset[1:] == default.data.dataset[1:]
        assert built[name].optim.batch_size == rows_a_step
    for name in ("gsm18k", "b128", "1ep"):  # one-epoch recipes, as measured, whatever the default's epochs
        assert built[name].optim.num_train_epochs == 1
    assert built["1ep"].data.dataset == default.data.dataset and built["1ep"].lora == default.lora
    assert (built["full_fp32"].lora.sft_type, built["full_fp32"].model.dtype) == ("full", "fp32")
    smoke = sweep2.build_config({}, tmp_path / "smoke", smoke=True).data.dataset
    assert smoke[0] == "rg:gsm-symbolic#48" and all(d.endswith("#2") for d in smoke[1:])
