"""eval's --limit and --max_new_tokens left out: sized for the device, said in one line on a CPU; given: kept."""

import json

from mathtune.evaluate.runner import DEVICE_DEFAULTS, EvalSettings, evaluate, resolve_for_device


def test_a_cpu_gets_short_answers_and_fewer_questions_in_one_line(capsys):
    settings = resolve_for_device(EvalSettings(), "cpu")
    assert (settings.max_new_tokens, settings.limit) == (256, 50)
    line = "on cpu: --max_new_tokens 256 and --limit 50 by default (give the flags to change them)\n"
    assert capsys.readouterr().out == line


def test_a_gpu_keeps_long_answers_and_every_question_silently(capsys):
    settings = resolve_for_device(EvalSettings(), "cuda:1")
    assert (settings.max_new_tokens, settings.limit) == (1024, None)
    assert DEVICE_DEFAULTS["gpu"].limit is None
    assert capsys.readouterr().out == ""


def test_given_values_always_win(capsys):
    given = EvalSettings(limit=500, max_new_tokens=2048)
    assert resolve_for_device(given, "cpu") == given
    assert capsys.readouterr().out == ""
    only_limit = resolve_for_device(EvalSettings(limit=7), "cpu")
    assert (only_limit.max_new_tokens, only_limit.limit) == (256, 7)
    assert capsys.readouterr().out == "on cpu: --max_new_tokens 256 by default (give the flags to change them)\n"


def test_evaluate_on_a_cpu_model_applies_and_records_the_cpu_defaults(tmp_path, tiny_model_dir, capsys):
    from mathtune.model import load_for_inference

    model, tokenizer, _ = load_for_inference(str(tiny_model_dir), device="cpu")
    summary = evaluate(["rg:arithmetic"], EvalSettings(limit=3), tmp_path, loaded=(model, tokenizer)).summary
    assert "on cpu: --max_new_tokens 256 by default" in capsys.readouterr().out
    assert summary["settings"]["max_new_tokens"] == 256 and summary["settings"]["limit"] == 3
    assert summary["benchmarks"]["rg:arithmetic"]["n"] == 3
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["settings"]["max_new_tokens"] == 256  # what was run, not None, is on record
