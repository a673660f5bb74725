"""The public Python API (`mathtune.sft`, `evaluate`, `Generator`, `grade`, `load_model`, `merge_lora`, the configs),
used as a notebook would, on the tiny test model."""

import json
import subprocess
import sys

import pytest

import mathtune


def test_import_stays_light_and_names_load_on_first_use():
    code = ("import sys, mathtune; heavy = [m for m in ('torch', 'transformers', 'mathtune.sft', 'mathtune.config') "
            "if m in sys.modules]; print(heavy); mathtune.RunConfig; print('mathtune.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_every_public_name_resolves_and_unknown_ones_raise():
    for name in mathtune.__all__:
        assert getattr(mathtune, name) is not None
    assert set(mathtune.__all__) <= set(dir(mathtune))
    assert callable(mathtune.sft) and callable(mathtune.evaluate)  # modules of the same name, made callable
    assert mathtune.sft.run_sft.__name__ == "run_sft" and mathtune.load_model.__name__ == "load_for_inference"
    with pytest.raises(AttributeError, match="no attribute 'finetune'"):
        _ = mathtune.finetune


def test_configs_check_themselves_in_one_line():
    with pytest.raises(mathtune.UserError, match="--lora_rank must be a positive whole number"):
        mathtune.LoraArgs(lora_rank=0)
    with pytest.raises(mathtune.UserError, match="--num_samples > 1 needs --temperature > 0"):
        mathtune.EvalSettings(num_samples=4)
    assert mathtune.RunConfig().optim.learning_rate == mathtune.OptimArgs().learning_rate


def test_grade_checks_an_answer_against_the_gold():
    item = mathtune.BenchItem(id="1", question="What is 2 + 3?", gold="5")
    right = mathtune.grade("2 + 3 = 5, so the answer is \\boxed{5}.", item, "math")
    wrong = mathtune.grade("The answer is \\boxed{6}.", item, "math")
    assert (right.extracted, right.correct) == ("5", True)
    assert (wrong.extracted, wrong.correct) == ("6", False)
    assert mathtune.grade("5", item, "math", mode="strict").correct is False  # strict wants one final box


def test_sft_then_load_generate_evaluate_and_merge(tmp_path, tiny_model_dir, math_jsonl):
    cfg = mathtune.RunConfig(
        model=mathtune.ModelArgs(model_id_or_path=str(tiny_model_dir)),
        data=mathtune.DataArgs(dataset=(str(math_jsonl),), split_dataset_ratio=0, max_length=128),
        optim=mathtune.OptimArgs(max_steps=2, batch_size=4, gradient_accumulation_steps=1),
        run=mathtune.RunArgs(output_dir=str(tmp_path / "output"), save_steps=2),
        fast=mathtune.FastArgs(gradient_checkpointing=False),
    )
    result = mathtune.sft(cfg, progress=False)
    assert isinstance(result, mathtune.SftResult) and not result.interrupted
    assert result.last_checkpoint.name == "checkpoint-2" and result.final_loss is not None
    assert json.loads((result.run_dir / "args.json").read_text())["optim"]["max_steps"] == 2

    model, tokenizer, description = mathtune.load_model(str(result.last_checkpoint), device="cpu")
    assert str(result.last_checkpoint) in description
    generator = mathtune.Generator(model, tokenizer)
    replies = generator.generate([[{"role": "user", "content": "What is 2 + 3?"}]],
                                 mathtune.Sampling(max_new_tokens=4), progress=False)
    assert len(replies) == 1 and len(replies[0]) == 1 and isinstance(replies[0][0], str)

    settings = mathtune.EvalSettings(limit=2, max_new_tokens=4, batch_size=2)
    run = mathtune.evaluate(["rg:arithmetic"], settings, tmp_path / "eval", loaded=(model, tokenizer),
                            progress=False)
    scores = run.summary["benchmarks"]["rg:arithmetic"]
    assert scores["n"] == 2 and 0.0 <= scores["accuracy"] <= 1.0
    assert (tmp_path / "eval" / "summary.json").is_file()

    merged = mathtune.merge_lora(result.last_checkpoint, tmp_path / "merged", device="cpu")
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()


def test_evaluate_stays_callable_once_its_package_is_imported():
    # Importing mathtune.evaluate.<anything> binds the name mathtune.evaluate to the package; it must still run evals.
    import mathtune.evaluate.grading  # noqa: F401
    from mathtune.evaluate.runner import evaluate

    assert callable(mathtune.evaluate)
    with pytest.raises(mathtune.UserError, match="no benchmarks"):
        mathtune.evaluate([], mathtune.EvalSettings(), "unused")
    assert evaluate.__module__ == "mathtune.evaluate.runner"
