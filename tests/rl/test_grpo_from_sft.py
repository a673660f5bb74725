"""GRPO from an sft LoRA checkpoint: the adapter is merged into its base, the run's base-merged/ holds that merge and
is every GRPO checkpoint's base, the reference is the SFT policy, and export / infer take the GRPO checkpoint as they
take an sft one (also after a resume, which reloads base-merged/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathtune.cli import main

# A reward a random 2-layer model can earn in part from the start, so that the GRPO adapter does learn something.
PLUGIN = "def lowercase(completions, **kwargs):\n    return [sum(c.islower() for c in t) / max(len(t), 1) for t in " \
         "completions]\n"


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory, tiny_model_dir) -> Path:
    """checkpoint-2 of an sft LoRA run with a large learning rate, so that its adapter changes the weights."""
    root = tmp_path_factory.mktemp("sft")
    data = root / "math.jsonl"
    data.write_text("".join(json.dumps({"query": f"What is {a} + 2?", "response": f"{a + 2}"}) + "\n"
                            for a in range(12)))
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(root / "out"),
                 "--max_steps", "2", "--save_steps", "1", "--batch_size", "4", "--gradient_accumulation_steps", "1",
                 "--max_length", "128", "--learning_rate", "0.05", "--lora_dropout", "0"]) == 0
    (run_dir,) = (root / "out").glob("*/v*")
    return run_dir / "checkpoint-2"


def _merged(base_dir: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """base + adapter merged by peft directly: what the GRPO run's starting weights must be."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathtune.model import quiet_peft

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with quiet_peft():
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {name: value.detach().clone() for name, value in merged.state_dict().items()}


def _assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]


def test_grpo_from_an_sft_lora_checkpoint_exports_and_infers(sft_checkpoint, tiny_model_dir, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"What is {a} + {7 - a}?", "answer": "7"}) + "\n"
                                 for a in range(8)))
    plugin = tmp_path / "rewards.py"
    plugin.write_text(PLUGIN)
    argv = ["rlhf", "--rlhf_type", "grpo", "--ckpt_dir", str(sft_checkpoint), "--dataset", str(questions),
            "--reward_funcs", "lowercase", "--external_plugins", str(plugin), "--num_generations", "4",
            "--batch_size", "4", "--max_completion_length", "8", "--max_steps", "2", "--beta", "0.04",
            "--learning_rate", "0.01", "--logging_steps", "1", "--save_steps", "1", "--save_total_limit", "5",
            "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "out" / "tiny-llama-grpo").glob("v*")  # named after the sft checkpoint's base
    base_merged = run_dir / "base-merged"

    # The starting weights: the sft adapter merged into its base, which it did change.
    start = _merged(tiny_model_dir, sft_checkpoint)
    _assert_same(load_file(base_merged / "model.safetensors"), start)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert max(float((start[n] - base[n]).abs().max()) for n in base) > 1e-3
    merged_from = json.loads((base_merged / "mathtune_merged.json").read_text())
    assert merged_from["adapter"] == str(sft_checkpoint.resolve())
    assert merged_from["base"] == str(tiny_model_dir.resolve())

    # The reference is the SFT policy: no KL before the first update, some after it.
    records = _records(run_dir)
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-7) and records[1]["kl"] > 0

    # Every GRPO checkpoint names base-merged/ as its base (by folder and fingerprint).
    for step in (1, 2):
        record = json.loads((run_dir / f"checkpoint-{step}" / "mathtune_base.json").read_text())
        assert record["path"] == str(base_merged.resolve()) and record["fingerprint"]

    # A resume reloads base-merged/ and continues as the uninterrupted run did.
    final = {k: v.clone() for k, v in load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors").items()}
    assert main([*argv, "--resume_from_checkpoint", str(run_dir / "checkpoint-1")]) == 0
    assert list((tmp_path / "out" / "tiny-llama-grpo").glob("v*")) == [run_dir]
    for a, b in zip(records, _records(run_dir), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    _assert_same(load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors"), final)

    # export merges the GRPO adapter into base-merged/, not into the original base.
    assert main(["export", "--ckpt_dir", str(run_dir / "checkpoint-2"), "--merge_lora", "true"]) == 0
    exported = load_file(run_dir / "checkpoint-2-merged" / "model.safetensors")
    expected = _merged(base_merged, run_dir / "checkpoint-2")
    _assert_same(exported, expected)
    assert max(float((expected[n] - start[n]).abs().max()) for n in start) > 0  # GRPO's adapter changed something

    capsys.readouterr()
    assert main(["infer", "--ckpt_dir", str(run_dir / "checkpoint-2"), "--query", "What is 2 + 3?",
                 "--max_new_tokens", "4"]) == 0
    assert main(["infer", "--ckpt_dir", str(run_dir / "checkpoint-2-merged"), "--query", "What is 2 + 3?",
                 "--max_new_tokens", "4"]) == 0
    assert "Traceback" not in capsys.readouterr().err
