"""GRPO end to end on the tests' tiny model: the reward rises on a task it can learn, a resumed run repeats the
uninterrupted one exactly, and the run folder is sft's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mathtune.cli import main
from mathtune.rl.config import build
from mathtune.rl.grpo import run_grpo

# Learnable by a randomly initialised 2-layer model within a few steps: write lowercase letters (about 40% of what
# it samples at first), with group variance from the start.
PLUGIN = "def lowercase(completions, **kwargs):\n    return [sum(c.islower() for c in t) / max(len(t), 1) for t in " \
         "completions]\n"


@pytest.fixture
def plugin(tmp_path) -> Path:
    path = tmp_path / "rewards.py"
    path.write_text(PLUGIN)
    return path


def _config(model_dir, questions, plugin, out, **grpo):
    sections = {"model": {"model_id_or_path": str(model_dir)}, "data": {"dataset": (str(questions),)},
                "run": {"output_dir": str(out), "logging_steps": 1, "save_steps": 1, "save_total_limit": None},
                "grpo": {"num_generations": 8, "max_completion_length": 8, "reward_funcs": ("lowercase", "format"),
                         "external_plugins": (str(plugin),), "log_completions_steps": 1, **grpo}}
    return sections


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]


def test_reward_rises_on_a_learnable_task(tiny_model_dir, questions, plugin, tmp_path):
    sections = _config(tiny_model_dir, questions, plugin, tmp_path / "out", loss_type="grpo")
    sections["lora"] = {"sft_type": "full"}
    sections["optim"] = {"max_steps": 14, "learning_rate": 2e-2, "batch_size": 16}
    sections["run"]["save_steps"] = 100
    result = run_grpo(build(sections), progress=False)
    records = _records(result.run_dir)
    rewards = [r["rewards/lowercase"] for r in records]
    assert len(records) == 14
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    for key in ("reward", "rewards/format", "accuracy", "reward_std", "frac_reward_zero_std", "clip_ratio",
                "completion_length", "loss", "grad_norm", "learning_rate"):
        assert isinstance(records[-1][key], float), key
    # Each step's wall-clock time and its sampling part (one generation batch per step here).
    assert all(0 < r["generation_s"] <= r["step_s"] for r in records)
    assert (result.run_dir / "images" / "grpo_curves.png").is_file()
    assert (result.run_dir / "args.json").is_file()
    assert (result.run_dir / "checkpoint-14" / "model.safetensors").exists()
    lines = [json.loads(line) for line in (result.run_dir / "completions.jsonl").read_text().splitlines()]
    assert len(lines) == 14 * 16 and set(lines[0]) >= {"step", "prompt", "completion", "rewards", "advantage"}


def test_resume_repeats_the_uninterrupted_run(tiny_model_dir, questions, plugin, tmp_path):
    """LoRA with beta > 0 (the reference is the adapter switched off) and two steps per generation batch: resuming
    from step 1 must continue that batch and the sampling RNG exactly."""
    sections = _config(tiny_model_dir, questions, plugin, tmp_path / "out", beta=0.04, num_iterations=2)
    sections["optim"] = {"max_steps": 4, "learning_rate": 1e-3, "batch_size": 8, "gradient_accumulation_steps": 2}
    whole = run_grpo(build(sections), progress=False)
    expected = _records(whole.run_dir)
    assert all(r["kl"] is not None for r in expected) and expected[-1]["kl"] > 0
    # Two steps per generation batch: only the first of each samples.
    assert [r["generation_s"] is None for r in expected] == [False, True, False, True]
    final = tmp_path / "final.safetensors"
    shutil.copy(whole.run_dir / "checkpoint-4" / "adapter_model.safetensors", final)

    sections["run"]["resume_from_checkpoint"] = str(whole.run_dir / "checkpoint-1")
    resumed = run_grpo(build(sections), progress=False)
    assert resumed.run_dir == whole.run_dir
    got = _records(resumed.run_dir)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got, strict=True):
        for key in ("reward", "loss", "kl", "completion_length", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    from safetensors.torch import load_file

    before, after = load_file(final), load_file(whole.run_dir / "checkpoint-4" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    for name in before:
        assert (before[name] - after[name]).abs().max() < 1e-6, name


# A reward with variance only for the questions `What is a + ...?` with an even a: the others' groups have none, so
# dynamic sampling draws more questions.
PICKY = "def picky(completions, prompts, **kwargs):\n    even = [int(p[-1]['content'].split()[2]) % 2 == 0 for p in " \
        "prompts]\n    return [sum(c.islower() for c in t) / max(len(t), 1) if e else 0.0 for t, e in " \
        "zip(completions, even)]\n"


def test_resume_with_dynamic_sampling_repeats_the_uninterrupted_run(tiny_model_dir, questions, tmp_path):
    """The extra questions are drawn by the step's own RNG and their completions by the restored global one: a run
    resumed mid-way samples, keeps and trains on what the uninterrupted one did."""
    picky = tmp_path / "picky.py"
    picky.write_text(PICKY)
    sections = _config(tiny_model_dir, questions, picky, tmp_path / "out", reward_funcs=("picky",),
                       dynamic_sample=True, max_resample_times=3)
    sections["optim"] = {"max_steps": 4, "learning_rate": 1e-3, "batch_size": 8, "gradient_accumulation_steps": 2}
    whole = run_grpo(build(sections), progress=False)
    expected = _records(whole.run_dir)
    assert any(r["resample_rounds"] > 0 for r in expected), expected
    assert all(r["frac_reward_zero_std"] <= r["frac_reward_zero_std_sampled"] for r in expected)

    sections["run"]["resume_from_checkpoint"] = str(whole.run_dir / "checkpoint-2")
    got = _records(run_grpo(build(sections), progress=False).run_dir)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got, strict=True):
        for key in ("reward", "loss", "resample_rounds", "frac_reward_zero_std", "frac_reward_zero_std_sampled",
                    "completion_length", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_cli_row_without_gold_is_one_line(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n"
                    + json.dumps({"question": "Tell me a story."}) + "\n")
    code = main(["rlhf", "--rlhf_type", "grpo", "--model", str(tiny_model_dir), "--dataset", str(data),
                 "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and f"{data}:2: no gold answer" in err, err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_bad_grpo_options(tiny_model_dir, questions, tmp_path, capsys):
    code = main(["rlhf", "--model", str(tiny_model_dir), "--dataset", str(questions), "--num_generations", "3",
                 "--batch_size", "8", "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "multiple of --num_generations (3)" in capsys.readouterr().err
    code = main(["rlhf", "--model", str(tiny_model_dir), "--dataset", str(questions), "--reward_funcs", "mine",
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "--external_plugins" in capsys.readouterr().err
