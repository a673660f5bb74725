"""The GRPO gain experiment (docs/results/grpo/grpo_gain.py) runs once on a GPU: its GRPO flags must parse through
`mathtune rlhf`'s own parser into the settings its docstring gives, and its question file must ask exactly what the
rg:gsm-symbolic path would for the same rows, with the same golds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mathtune.cli import build_parser
from mathtune.rl.cli import config_from
from mathtune.rl.prompts import load_prompts

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "grpo" / "grpo_gain.py"


@pytest.fixture(scope="module")
def gain():
    spec = importlib.util.spec_from_file_location("grpo_gain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpo_flags_parse_into_the_documented_settings(gain, tmp_path):
    args = gain.parse_args(["--out", str(tmp_path / "out.jsonl")])
    questions = tmp_path / "q.jsonl"
    cfg = config_from(build_parser("rlhf").parse_args(gain.grpo_argv(args, "ckpt-dir", tmp_path / "runs", questions)))
    g, optim, lora = cfg.grpo, cfg.optim, cfg.lora
    assert (g.num_generations, g.max_completion_length, g.temperature, g.beta, g.loss_type, g.scale_rewards,
            g.num_iterations, g.reward_funcs, g.weights) == (8, 320, 1.0, 0.0, "dapo", "group", 1,
                                                             ("accuracy", "format"), (1.0, 1.0))
    assert (optim.learning_rate, optim.lr_scheduler_type, optim.warmup_ratio) == (1e-4, "constant", 0.0)
    assert (optim.batch_size, optim.gradient_accumulation_steps, cfg.prompts_per_step) == (64, 2, 16)
    assert (lora.sft_type, lora.lora_rank, lora.lora_alpha, lora.lora_dropout) == ("lora", 16, 32, 0.0)
    assert (cfg.model.model_id_or_path, cfg.data.dataset, cfg.data.data_seed) == ("ckpt-dir", (str(questions),), 42)
    assert cfg.eval_benchmarks == ()  # the script answers the benchmarks itself, after the deadline stop
    base = config_from(build_parser("rlhf").parse_args(gain.grpo_argv(args, None, tmp_path / "runs", questions)))
    assert base.model.model_id_or_path is None  # the embedded model


def test_question_file_asks_what_the_rg_path_asks_for_the_rows_after_sfts(gain, tmp_path):
    path = tmp_path / "q.jsonl"
    made = gain.write_questions(path, skip=50, n=20)
    assert made["questions"] == 20 and made["skipped_sft_rows"] == 50
    from_file = load_prompts([str(path)], 42)
    from_rg = load_prompts(["rg:gsm-symbolic#70"], 42)[50:]
    assert [p.messages for p in from_file] == [p.messages for p in from_rg]
    assert [p.item.gold for p in from_file] == [p.item.gold for p in from_rg]
    assert {p.checker for p in from_file} == {p.checker for p in from_rg} == {"math"}
    # None of them is among the rows the SFT recipe trained on.
    sft = {p.messages[-1]["content"] for p in load_prompts(["rg:gsm-symbolic#50"], 42)}
    assert not sft & {p.messages[-1]["content"] for p in from_file}


def test_sft_rows_reads_the_recipes_gsm_count(gain):
    assert gain.sft_rows(gain.sweep2.load_config()) == 48000


def test_the_filter_and_epoch_flags_reach_grpo(gain, tmp_path):
    # The 2026-12-03 call ran GRPO on the filtered questions for up to 3 epochs, after the recipe's 18,000 gsm rows.
    args = gain.parse_args(["--out", str(tmp_path / "out.jsonl"), "--filter_samples", "8", "--epochs", "3",
                            "--sft_gsm_rows", "18000", "--learning_rate", "3e-4"])
    assert (args.filter_samples, args.sft_gsm_rows) == (8, 18000)
    cfg = config_from(build_parser("rlhf").parse_args(gain.grpo_argv(args, "ckpt", tmp_path / "runs", tmp_path / "q")))
    assert (cfg.optim.num_train_epochs, cfg.optim.learning_rate) == (3, 3e-4)


def test_dynamic_sampling_and_temperature_reach_grpo(gain, tmp_path):
    # The 2026-12-04 (second) call: rollouts at 0.7, DAPO's dynamic sampling with at most two extra rounds.
    plain = gain.parse_args(["--out", str(tmp_path / "out.jsonl")])
    args = gain.parse_args(["--out", str(tmp_path / "out.jsonl"), "--temperature", "0.7", "--dynamic_sample",
                            "--max_resample_times", "2"])
    configs = [config_from(build_parser("rlhf").parse_args(gain.grpo_argv(a, "ckpt", tmp_path / "r", tmp_path / "q")))
               for a in (plain, args)]
    assert [(c.grpo.dynamic_sample, c.grpo.temperature) for c in configs] == [(False, 1.0), (True, 0.7)]
    assert configs[1].grpo.max_resample_times == 2
