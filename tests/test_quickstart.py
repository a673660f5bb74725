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
