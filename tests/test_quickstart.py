"""`mathtune quickstart` end to end on the tiny model (standing in for the embedded one): its answers before and after
fine-tuning are scored through eval's entry point, kept in the run folder, and shown with live progress in tokens; the
result is one table with the trivial baseline, an untrained task and a chat check."""

import json
import re
import tempfile

import pytest

from mathtune import embedded, quickstart


def test_quickstart_keeps_the_predictions_it_summarises(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(embedded, "embedded_model_dir", lambda: tiny_model_dir)
    monkeypatch.setattr(quickstart, "EVAL_QUESTIONS", 3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert quickstart.run_quickstart(str(tmp_path / "output"), train_rows=8) == 0
    out, err = capsys.readouterr()
    (run_dir,) = (tmp_path / "output" / "tiny-llama").iterdir()
    before, after = run_dir / "eval" / "before", run_dir / "eval" / "after"
    assert f"predictions:    {before} and {after}" in out
    for name, label in (("rg:number_sequence", "trained task"), ("rg:chain_sum", "not trained on")):
        printed = re.search(rf"^{name} \({label}, 3 held-out\)\s+(\d+)% \[\d+%, \d+%\]\s+(\d+)% \[\d+%, \d+%\]\s+"
                            r"(\d+)% \('", out, re.M)
        assert printed, out
        folder_name = name.replace(":", "_")
        for folder, shown in zip((before, after), printed.groups()[:2], strict=True):
            summary = json.loads((folder / "summary.json").read_text())
            rows = [json.loads(line) for line in (folder / folder_name / "predictions.jsonl").read_text().splitlines()]
            assert len(rows) == 3 and summary["benchmarks"][name]["n"] == 3
            assert round(100 * sum(r["correct"] for r in rows) / 3) == int(shown)
            assert summary["settings"]["max_new_tokens"] == 64
        golds = [r["gold"] for r in rows]
        assert int(printed.group(3)) == round(100 * max(golds.count(g) for g in golds) / 3)
    for folder in (before, after):
        chat = [json.loads(line) for line in (folder / "chat.jsonl").read_text().splitlines()]
        assert [c["prompt"] for c in chat] == [p for p, _ in quickstart.CHAT_PROMPTS]
    relevant = sum(c["relevant"] for c in chat)
    assert re.search(rf"^ordinary prompts \(5\): relevant / looping .* {relevant}/5 / \d/5", out, re.M)
    assert (run_dir / "eval" / "comparison.png").is_file()
    first = json.loads((before / "rg_number_sequence" / "predictions.jsonl").read_text().splitlines()[0])
    assert f"Q: {first['question'].strip()[:40]}" in out  # the questions shown are the ones saved
    assert err.count("prompts 3/3") >= 4 and "tok/s" in err  # both benchmarks of both phases show progress in tokens
    assert not list((tmp_path / "tmp").iterdir())  # the answers before training moved into the run, none left


@pytest.mark.parametrize("text, loops", [
    ("Paris is the capital of France.", False),
    ("The answer is 5. The answer is 5. The answer is 5.", True),
    ("The answer is \"The answer is \"The answer is \"The answer is", True),
    ("one two three one two three", False),  # twice is not a loop
    ("", False),
    ("a b", False),
])
def test_looping_flags_a_reply_that_repeats_itself(text, loops):
    assert quickstart.looping(text) is loops


def test_the_plan_follows_the_device_unless_a_task_is_given():
    on_gpu, on_cpu = quickstart.make_plan(None, "cuda"), quickstart.make_plan(None, "cpu")
    assert on_gpu.gsm and on_gpu.benchmarks == ("rg:gsm-symbolic", "rg:gsm-symbolic-unseen", "rg:equations")
    assert (on_gpu.questions, on_gpu.max_new_tokens) == (200, 512)
    assert not on_cpu.gsm and on_cpu.benchmarks == ("rg:number_sequence", "rg:chain_sum")
    assert (on_cpu.questions, on_cpu.max_new_tokens) == (100, 64)
    assert quickstart.make_plan("gsm-symbolic", "cpu").gsm  # asked for by name, on any device
    assert quickstart.make_plan("chain_sum", "cuda").benchmarks == ("rg:chain_sum",)
    assert quickstart.QuickstartArgs().task is None
    assert quickstart.QuickstartArgs(task="gsm_symbolic").task == "gsm-symbolic"


def test_the_gsm_recipe_scales_every_source_and_adds_replay_rows(tmp_path):
    full = quickstart.gsm_config(str(tmp_path), None, 42, tmp_path / "replay.jsonl").data.dataset
    assert full[:2] == ("rg:gsm-symbolic#48000", "rg:arithmetic#500")
    assert full[-1] == f"{tmp_path / 'replay.jsonl'}#600"
    small = quickstart.gsm_config(str(tmp_path), 4800, 42, None).data.dataset
    assert small == ("rg:gsm-symbolic#4800", *(f"{d.rpartition('#')[0]}#50" for d in full[1:-1]))
    # The CUDA quickstart's default size: the whole recipe, replay rows included.
    whole = quickstart.gsm_config(str(tmp_path), quickstart.GSM_QUICK_ROWS, 42, tmp_path / "r.jsonl").data.dataset
    assert whole[:-1] == full[:-1] and whole[-1].endswith("#600")


def test_gsm_quickstart_shows_seen_and_unseen_templates(tmp_path, tiny_model_dir, capsys, monkeypatch):
    # The CUDA plan, run on the tiny model on the CPU (same code path, tiny counts).
    monkeypatch.setattr(embedded, "embedded_model_dir", lambda: tiny_model_dir)
    monkeypatch.setattr(quickstart, "GSM_EVAL_QUESTIONS", 3)
    monkeypatch.setattr(quickstart, "GSM_MAX_NEW_TOKENS", 8)
    monkeypatch.setattr(quickstart, "GSM_QUICK_ROWS", 12)  # the default size, without --train_rows
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert quickstart.run_quickstart(str(tmp_path / "output"), task="gsm-symbolic") == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "output" / "tiny-llama").iterdir()
    for name, label in (("rg:gsm-symbolic", "trained task"), ("rg:gsm-symbolic-unseen", "unseen templates"),
                        ("rg:equations", "not trained on")):
        assert re.search(rf"^{name} \({label}, 3 held-out\)\s+\d+% \[\d+%, \d+%\]\s+\d+% \[\d+%, \d+%\]\s+\d+% \('",
                         out, re.M), out
        for phase in ("before", "after"):
            summary = json.loads((run_dir / "eval" / phase / "summary.json").read_text())
            assert summary["benchmarks"][name]["n"] == 3 and summary["settings"]["max_new_tokens"] == 8
    assert "held-out rg:gsm-symbolic-unseen questions right" in out
    saved = json.loads((run_dir / "args.json").read_text())
    trained = saved["data"]["dataset"]
    assert trained[:2] == ["rg:gsm-symbolic#12", "rg:arithmetic#1"]
    assert saved["optim"]["num_train_epochs"] == quickstart.GSM_QUICK_EPOCHS == 1  # the recipe's 2 exceed 5 minutes
    assert trained[-1].endswith("quickstart-replay.jsonl#1")
    assert (run_dir / "eval" / "comparison.png").is_file()


def test_the_gsm_recipe_is_refused_on_a_cpu_in_one_line(tmp_path, capsys, monkeypatch):
    from mathtune import model
    from mathtune.cli import main

    monkeypatch.setattr(model, "default_device", lambda: "cpu")  # also on a machine with a GPU

    assert main(["quickstart", "--task", "gsm-symbolic", "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs a CUDA GPU" in err
    assert not (tmp_path / "out").exists()
