"""rlhf's flags come from the one flag table: every spelling it took before, no parser defaults, each flag once in
--help with the default of its dataclass (TRL's GRPO ones for training), and the typed values reach GrpoConfig."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from mathtune import flags
from mathtune.cli import build_parser, main
from mathtune.config import OptimArgs
from mathtune.rl.cli import RLHF_FLAGS, config_from
from mathtune.rl.config import GRPO_OPTIM_DEFAULTS, GrpoArgs, GrpoOptimDefaults
from mathtune.rl.loss import LOSS_TYPES

GRPO_SPELLINGS = ("--rlhf_type --ckpt_dir --num_generations --max_completion_length --reward_funcs --reward_weights "
                  "--external_plugins --beta --epsilon --epsilon_high --loss_type --scale_rewards --num_iterations "
                  "--temperature --top_p --dynamic_sample --max_resample_times --log_completions_steps "
                  "--log_completions").split()


def _sft_spellings() -> set[str]:
    return set(flags.option_names(build_parser("sft"))) - {"--help"}


def test_rlhf_takes_every_spelling_it_took_before():
    taken = set(flags.option_names(build_parser("rlhf")))
    assert set(GRPO_SPELLINGS) <= taken
    assert _sft_spellings() <= taken  # sft's flags, as `rl/cli.py` added them before the table


def test_every_grpo_option_has_a_flag_of_the_table():
    keys = {flag.field for section in RLHF_FLAGS for flag in section.flags}
    assert {f.name for f in fields(GrpoArgs)} <= keys
    assert flags.GRPO_LOSS_TYPES == LOSS_TYPES  # the flag's choices are the loss's


def test_rlhf_parser_sets_no_defaults():
    parsed = vars(build_parser("rlhf").parse_args(["rlhf"]))
    assert set(parsed) - {"command", "func"} == set()


def test_help_shows_each_flag_once_with_grpo_defaults(capsys):
    assert main(["rlhf", "--help"]) == 0
    out = capsys.readouterr().out
    for name in (*GRPO_SPELLINGS, *_sft_spellings()):
        # An option line starts with the flag (or lists it after another spelling of the same flag).
        starts = re.findall(rf"^ {{2}}(?:-\S+(?: \S+)?, )*{re.escape(name)}\b", out, re.M)
        assert len(starts) == 1, (name, starts)
    text = re.sub(r"\s+", "", out)  # argparse wraps lines anywhere, at hyphens too
    for shown in ("completions per prompt (default 8)", "longest completion in tokens (default 512)",
                  "(default accuracy format)", "(ms-swift uses grpo) (default dapo)", "(default 0.0)",
                  "upper ratio clipping; DAPO uses 0.28 (default: --epsilon)", "(default: all 1)",
                  "sampling temperature (default 1.0)"):
        assert re.sub(r"\s+", "", shown) in text, shown
    # Training options show TRL's GRPO defaults, read from the dataclass that holds them, not sft's.
    assert f"--learning_rateLEARNING_RATEdefault{GRPO_OPTIM_DEFAULTS['learning_rate']}" in text
    # --batch_size says what it counts in GRPO (completions), not sft's rows.
    assert "--per_device_train_batch_sizeBATCH_SIZEcompletionspermicro-batchofthepolicyloss" in text
    assert "rowspermicro-batch" not in text
    assert f"default{OptimArgs().learning_rate}" not in text


def test_grpo_help_defaults_are_the_ones_runs_take():
    for name, value in GRPO_OPTIM_DEFAULTS.items():
        assert getattr(GrpoOptimDefaults(), name) == value
    assert {f.name for f in fields(GrpoOptimDefaults)} == {f.name for f in fields(OptimArgs)}


def test_typed_flags_reach_the_config(tmp_path):
    argv = ["rlhf", "--ckpt_dir", str(tmp_path), "--dataset", "rg:gsm-symbolic#8", "--reward_funcs", "accuracy",
            "--reward_weights", "2", "--num_generations", "4", "--beta", "0.04", "--loss_type", "grpo",
            "--temperature", "0.7", "--learning_rate", "1e-5", "--log_completions", "--rlhf_type", "grpo"]
    cfg = config_from(build_parser("rlhf").parse_args(argv))
    assert cfg.model.model_id_or_path == str(tmp_path)
    assert (cfg.grpo.reward_funcs, cfg.grpo.reward_weights, cfg.grpo.num_generations) == (("accuracy",), (2.0,), 4)
    assert (cfg.grpo.beta, cfg.grpo.loss_type, cfg.grpo.temperature) == (0.04, "grpo", 0.7)
    assert cfg.optim.learning_rate == 1e-5
    assert cfg.optim.batch_size == GRPO_OPTIM_DEFAULTS["batch_size"]  # not typed: TRL's default
    assert cfg.grpo.max_completion_length == GrpoArgs().max_completion_length


@pytest.mark.parametrize(("argv", "said"), [
    (["--loss_type", "ppo"], "argument --loss_type: invalid choice: 'ppo'"),
    (["--beta", "nan"], "argument --beta: expected a finite number, got 'nan'"),
    (["--num_generations", "many"], "argument --num_generations: invalid int value: 'many'"),
    (["--rlhf_type", "dpo"], "argument --rlhf_type: invalid choice: 'dpo'"),
])
def test_a_bad_grpo_flag_is_one_line(argv, said, capsys):
    assert main(["rlhf", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err


def test_grpo_options_in_a_yaml_config_are_taken_and_flags_override_them(tmp_path):
    config = tmp_path / "grpo.yaml"
    config.write_text("model: base-folder\ndataset: rg:gsm-symbolic#8\nnum_generations: 4\nbeta: 4e-2\n"
                      "reward_funcs: accuracy\nreward_weights: [2, 0.5e0]\nloss_type: grpo\ntemperature: 0.7\n"
                      "rlhf_type: grpo\nlog_completions: true\nper_device_train_batch_size: 16\n"
                      "learning_rate: 1e-4\nmax_completion_length: 128\n")
    argv = ["rlhf", "--config", str(config), "--max_completion_length", "64", "--reward_funcs", "accuracy", "format"]
    cfg = config_from(build_parser("rlhf").parse_args(argv))
    assert cfg.model.model_id_or_path == "base-folder" and cfg.data.dataset == ("rg:gsm-symbolic#8",)
    assert (cfg.grpo.num_generations, cfg.grpo.beta, cfg.grpo.loss_type, cfg.grpo.temperature) == (4, 0.04, "grpo",
                                                                                                     0.7)
    assert cfg.grpo.reward_weights == (2.0, 0.5) and cfg.grpo.reward_funcs == ("accuracy", "format")
    assert cfg.grpo.max_completion_length == 64  # the flag beats the file
    assert cfg.optim.batch_size == 16
    assert cfg.optim.learning_rate == 1e-4  # given in the file: kept although it is sft's default, not TRL's


@pytest.mark.parametrize(("text", "said"), [
    ("num_generations: many\n", "option 'num_generations' takes a whole number, got 'many'"),
    ("reward_weights: [a]\n", "option 'reward_weights' takes a number or a list of numbers"),
    ("num_generation: 4\n", "unknown option 'num_generation'"),
])
def test_a_bad_grpo_option_in_yaml_is_one_line(tmp_path, capsys, text, said):
    config = tmp_path / "grpo.yaml"
    config.write_text(text)
    assert main(["rlhf", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and str(config) in err[0], err
