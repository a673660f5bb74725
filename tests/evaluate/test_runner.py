"""Scoring, statistics, files and the eval CLI; generation is real on a tiny model, or a fixed fake where noted."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import pytest

from mathtune import atomic
from mathtune.errors import UserError
from mathtune.evaluate import cli, runner
from mathtune.evaluate.benchmarks import BenchItem, Benchmark, get_benchmark
from mathtune.evaluate.runner import (
    NOT_AN_ADAPTER,
    EvalSettings,
    bench_dir_name,
    evaluate,
    majority_vote,
    pass_at_k,
    score_outputs,
    wilson_interval,
)
from mathtune.generate import Generator

ITEMS = [BenchItem("q1", "What is 2 + 3?", "5"), BenchItem("q2", "What is 10 * 100?", "1000"),
         BenchItem("q3", "What is 1 / 2?", "0.5"), BenchItem("q4", "What is 7 - 9?", "-2")]
BENCH = Benchmark("toy", "en", "math", "{question}\nPut the answer in \\boxed{{}}.", lambda: list(ITEMS))


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)


def test_majority_vote_groups_equal_answers_and_skips_unparsed():
    answer, right = majority_vote(["1,000", None, "7", "1000.0", None, None], [True, False, False, True, False, False])
    assert (answer, right) == ("1,000", True)
    assert majority_vote(["3", "4"], [False, True]) == ("3", False)  # a tie goes to the answer given first
    assert majority_vote([None, None], [False, False]) == (None, False)


def test_score_outputs_single_sample(tiny_tokenizer):
    outputs = [["2 + 3 = 5. The answer is \\boxed{5}."], ["10 * 100 = 1,000, so \\boxed{1,000}"],
               ["I am not sure."], ["7 - 9 = 2. \\boxed{2}"]]
    result = score_outputs(BENCH, ITEMS, outputs, tiny_tokenizer, [BENCH.render(i.question) for i in ITEMS])
    assert (result.n, result.accuracy, result.unparsed, result.num_samples) == (4, 0.5, 1, 1)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(2, 4))
    assert result.pass_at_k == {"1": 0.5} and result.majority_accuracy is None
    lengths = [len(tiny_tokenizer(o[0], add_special_tokens=False)["input_ids"]) for o in outputs]
    assert result.mean_output_tokens == pytest.approx(sum(lengths) / 4)
    first, _, third, fourth = result.records
    assert first["extracted"] == ["5"] and first["verdicts"] == [True] and first["correct"] is True
    assert first["prompt"] == "What is 2 + 3?\nPut the answer in \\boxed{}."
    assert third["parsed"] == [False] and third["correct"] is False
    assert fourth["extracted"] == ["2"] and fourth["score"] == 0.0
    assert result.summary()["prompt_template"] == BENCH.prompt and "records" not in result.summary()


def test_score_outputs_several_samples():
    outputs = [["\\boxed{5}", "\\boxed{6}", "\\boxed{5}"],
               ["\\boxed{999}", "\\boxed{1000}", "\\boxed{999}"],
               ["no", "no", "no"],
               ["\\boxed{-2}", "\\boxed{-2}", "\\boxed{-2}"]]
    result = score_outputs(BENCH, ITEMS, outputs)
    assert result.num_samples == 3
    assert result.accuracy == pytest.approx((2 / 3 + 1 / 3 + 0 + 1) / 4)
    assert result.pass_at_k["1"] == pytest.approx(result.accuracy)
    assert result.pass_at_k["3"] == pytest.approx(3 / 4)
    assert result.majority_accuracy == pytest.approx(2 / 4)  # q2's majority says 999
    assert result.unparsed == 3 and result.mean_output_tokens is None
    assert [r["correct"] for r in result.records] == [True, False, False, True]


def test_score_outputs_rejects_misaligned_outputs():
    with pytest.raises(ValueError):
        score_outputs(BENCH, ITEMS, [["\\boxed{5}"]])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_samples": 4}, "temperature > 0"), ({"limit": 0}, "--limit"), ({"top_p": 0.0}, "top_p"),
    ({"batch_size": 0}, "positive"), ({"infer_backend": "tgi"}, "pt or vllm"),
    ({"infer_backend": "vllm", "static_cache": True}, "--static_cache is for --infer_backend pt"),
])
def test_settings_are_validated(kwargs, message):
    with pytest.raises(UserError, match=message):
        EvalSettings(**kwargs)


def test_bench_dir_name():
    assert bench_dir_name("rg:gsm-symbolic") == "rg_gsm-symbolic"
    assert bench_dir_name("gsm8k=/data/gsm8k.jsonl") == "gsm8k"
    assert bench_dir_name("platinum:gsm8k=/data/gsm8k.jsonl") == "platinum"
    assert bench_dir_name("rg:gsm-symbolic-unseen") == "rg_gsm-symbolic-unseen"


def test_two_copies_of_one_benchmark_need_labels_before_any_model_loads():
    gsm8k = Path(__file__).resolve().parents[1] / "fixtures" / "bench" / "gsm8k.jsonl"
    with pytest.raises(UserError, match="would both be reported as 'gsm8k'"):
        runner._check_names([f"gsm8k={gsm8k}", f"gsm8k={gsm8k}x"], data_seed=42)
    with pytest.raises(UserError, match="would both be reported as 'a'"):
        runner._check_names([f"a:gsm8k={gsm8k}", f"a:gsm8k={gsm8k}"], data_seed=42)
    runner._check_names([f"a:gsm8k={gsm8k}", f"b:gsm8k={gsm8k}"], data_seed=42)


def test_save_result_never_overwrites_another_benchmarks_results(tmp_path):
    result = score_outputs(BENCH, ITEMS, [["\\boxed{5}"]] * len(ITEMS))
    summary = {"model": "m", "benchmarks": {}}
    runner.save_result(tmp_path, summary, result)
    assert summary["benchmarks"]["toy"]["dir"] == "toy"
    before = (tmp_path / "toy" / "predictions.jsonl").read_text()
    for clash in ("toy", "TOY"):  # the same name, or one filed in the same folder on a case-insensitive disk
        result.name = clash
        with pytest.raises(UserError, match="would overwrite the results of 'toy'"):
            runner.save_result(tmp_path, summary, result)
    assert (tmp_path / "toy" / "predictions.jsonl").read_text() == before and list(summary["benchmarks"]) == ["toy"]


def _answer_yes(generator, conversations, sampling, **kwargs):
    return [["All men are mortal, so it follows.\n\\boxed{Yes}"] for _ in conversations]


def test_evaluate_writes_predictions_and_summary(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(Generator, "generate", _answer_yes)  # fixed answers: the scores are known
    settings = EvalSettings(limit=6, max_new_tokens=16, batch_size=2)
    summary = evaluate(["rg:syllogism"], settings, tmp_path, loaded=(None, tiny_tokenizer), description="fake model",
                       progress=False).summary
    items = get_benchmark("rg:syllogism").load(limit=6, seed=42)
    expected = sum(item.gold == "Yes" for item in items) / 6
    bench = summary["benchmarks"]["rg:syllogism"]
    assert bench["n"] == 6 and bench["accuracy"] == pytest.approx(expected) and bench["unparsed"] == 0
    assert bench["dir"] == "rg_syllogism" and bench["checker"] == "rg" and "{question}" in bench["prompt_template"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["model"] == "fake model" and on_disk["settings"]["limit"] == 6
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", on_disk["date"])
    rows = [json.loads(line) for line in (tmp_path / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [item.id for item in items]
    assert all(r["extracted"] == ["Yes"] and r["correct"] is (r["gold"] == "Yes") for r in rows)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_unknown_benchmark_fails_before_loading(tmp_path, monkeypatch):
    from mathtune import model

    def never(*args, **kwargs):
        raise AssertionError("loading must not start")

    monkeypatch.setattr(model, "load_for_inference", never)
    with pytest.raises(UserError, match="unknown benchmark"):
        evaluate(["rg:syllogism", "nope"], EvalSettings(), tmp_path, progress=False)
    assert not (tmp_path / "summary.json").exists()


def test_baseline_without_an_adapter_fails_before_loading(tmp_path, tiny_model_dir, monkeypatch):
    from mathtune import model

    monkeypatch.setattr(model, "load_for_inference", lambda *args, **kwargs: pytest.fail("loaded"))
    with pytest.raises(UserError, match=re.escape(NOT_AN_ADAPTER)):
        evaluate(["rg:syllogism"], EvalSettings(limit=1), tmp_path, model=str(tiny_model_dir), baseline=True)


def test_a_model_in_memory_and_one_to_load_are_not_both_given(tmp_path, tiny_model_dir, tiny_tokenizer):
    with pytest.raises(ValueError, match="not both"):
        evaluate(["rg:syllogism"], EvalSettings(), tmp_path, model=str(tiny_model_dir), loaded=(None, tiny_tokenizer))


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(UserError, match=r"cannot write '.*summary.json': disk full; results written before"):
        runner.write_summary(target, {"new": 1})
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_disk_full_mid_eval_is_one_line_and_keeps_the_finished_benchmarks(tmp_path, tiny_model_dir, capsys,
                                                                          monkeypatch):
    import errno
    import os

    from mathtune.cli import main

    real_open = Path.open

    def fills_up(self, mode="r", *args, **kwargs):  # the disk is full by the time the second benchmark is written
        if self.parent.name == "rg_arithmetic" and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fills_up)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", "rg:syllogism", "rg:arithmetic", "--limit",
                 "2", "--max_new_tokens", "2", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f"mathtune eval: error: cannot write '{out / 'rg_arithmetic' / 'predictions.jsonl'}': No space left on device")
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["benchmarks"]) == ["rg:syllogism"]
    assert len((out / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()) == 2
    assert not list(out.rglob(".*.tmp"))


def test_run_eval_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir):
    summary = evaluate(["rg:syllogism"], EvalSettings(limit=3, max_new_tokens=6, batch_size=2), tmp_path,
                       model=str(tiny_model_dir), progress=False).summary
    bench = summary["benchmarks"]["rg:syllogism"]
    assert bench["n"] == 3 and 0.0 <= bench["accuracy"] <= 1.0
    assert bench["mean_output_tokens"] > 0  # re-tokenized text: random tokens need not round-trip to 6
    assert summary["model"] == str(tiny_model_dir)
    rows = (tmp_path / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 3 and all(len(json.loads(r)["outputs"]) == 1 for r in rows)


def test_run_eval_with_the_static_cache_writes_the_same_predictions(tmp_path, tiny_model_dir):
    def outputs(folder: Path) -> list[list[str]]:
        rows = (folder / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()
        return [json.loads(r)["outputs"] for r in rows]

    settings = EvalSettings(limit=5, max_new_tokens=6, batch_size=2)
    evaluate(["rg:syllogism"], settings, tmp_path / "dynamic", model=str(tiny_model_dir), progress=False)
    summary = evaluate(["rg:syllogism"], dataclasses.replace(settings, static_cache=True), tmp_path / "static",
                       model=str(tiny_model_dir), progress=False).summary
    assert summary["settings"]["static_cache"] is True
    assert outputs(tmp_path / "static") == outputs(tmp_path / "dynamic")
    assert len(outputs(tmp_path / "static")) == 5  # three batches, the last filled up to two rows, one kept


def test_a_model_in_memory_gives_the_predictions_of_the_same_model_loaded_by_name(tmp_path, tiny_model_dir,
                                                                                  tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    def outputs(folder: Path) -> list[list[str]]:
        rows = (folder / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()
        return [json.loads(r)["outputs"] for r in rows]

    settings = EvalSettings(limit=3, max_new_tokens=5, batch_size=2)
    network = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    in_memory = evaluate(["rg:syllogism"], settings, tmp_path / "memory", loaded=(network, tiny_tokenizer),
                         progress=False)
    evaluate(["rg:syllogism"], settings, tmp_path / "named", model=str(tiny_model_dir), progress=False)
    assert outputs(tmp_path / "memory") == outputs(tmp_path / "named")
    assert in_memory.base is None and in_memory.summary["model"] == str(tiny_model_dir)


def test_sampled_evaluation_is_seeded(tmp_path, tiny_model_dir):
    def outputs(folder: Path) -> list[list[str]]:
        rows = (folder / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()
        return [json.loads(r)["outputs"] for r in rows]

    settings = EvalSettings(limit=2, max_new_tokens=5, num_samples=2, temperature=1.0, seed=7)
    for name in ("a", "b"):
        evaluate(["rg:syllogism"], settings, tmp_path / name, model=str(tiny_model_dir), progress=False)
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b") and all(len(o) == 2 for o in outputs(tmp_path / "a"))


def test_baseline_through_the_entry_point_returns_both_summaries(tmp_path, tiny_model_dir):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "run" / "checkpoint-5")
    run = evaluate(["rg:syllogism"], EvalSettings(limit=2, max_new_tokens=4), tmp_path / "eval",
                   model=str(tiny_model_dir), adapter=str(adapter), baseline=True, progress=False)
    assert run.base is not None and "adapter disabled" in run.base["model"] and str(adapter) in run.summary["model"]
    assert json.loads((tmp_path / "eval" / "base" / "summary.json").read_text())["model"] == run.base["model"]
    assert json.loads((tmp_path / "eval" / "adapter" / "summary.json").read_text())["model"] == run.summary["model"]


def _save_adapter(model_dir: Path, target: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a LoRA fresh from init changes nothing; make this one change the outputs
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(target)
    return target


def test_cli_baseline_evaluates_base_and_adapter_and_compares(tmp_path, tiny_model_dir, capsys):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "run" / "checkpoint-5")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(["--model", str(tiny_model_dir), "--adapter", str(adapter), "--benchmarks",
                              "rg:syllogism", "--limit", "3", "--max_new_tokens", "5", "--output_dir", str(out),
                              "--baseline"])
    assert cli.run(args) == 0
    base = json.loads((out / "base" / "summary.json").read_text())
    tuned = json.loads((out / "adapter" / "summary.json").read_text())
    assert "adapter disabled" in base["model"] and str(adapter) in tuned["model"]
    base_rows = (out / "base" / "rg_syllogism" / "predictions.jsonl").read_text()
    tuned_rows = (out / "adapter" / "rg_syllogism" / "predictions.jsonl").read_text()
    assert base_rows != tuned_rows  # the adapter was on for one run and off for the other
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "A: base" in printed and "B: adapter" in printed and f"results: {out}" in printed


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("argv", "message"), [
    ([], "--benchmarks is required"),
    (["--benchmarks", "rg:syllogism", "--baseline"], "--baseline compares an adapter"),
    (["--benchmarks", "rg:syllogism", "--infer_backend", "vllm"], "vllm is not installed"),
    (["--benchmarks", "rg:syllogism", "--num_samples", "4"], "temperature > 0"),
    (["--compare", "a", "b", "--benchmarks", "x"], "drop --benchmarks"),
])
def test_cli_user_errors(argv, message, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, wherever the tests run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        cli.run(_parse(argv))


def test_default_output_dir():
    path = cli.default_output_dir("/models/Yi-1.5-6B-Chat", None)
    assert re.fullmatch(r"output/eval/Yi-1\.5-6B-Chat-\d{8}-\d{6}", path.as_posix())
    assert re.fullmatch(r"output/eval/v3-20261201-101010-checkpoint-40-\d{8}-\d{6}",
                        cli.default_output_dir(None, "output/m/v3-20261201-101010/checkpoint-40").as_posix())
    assert cli.default_output_dir(None, None).name.startswith("default-")


def test_summary_statistics_are_finite(tiny_tokenizer):
    result = score_outputs(BENCH, ITEMS, [["\\boxed{5}"]] * 4, tiny_tokenizer)
    assert all(math.isfinite(x) for x in (result.accuracy, result.ci_low, result.ci_high, result.mean_output_tokens))
