"""`mathtune quickstart` end to end on the tiny model (standing in for the embedded one): its answers before and after
fine-tuning are scored through eval's entry point, kept in the run folder, and shown with live progress in tokens."""

import json
import re
import tempfile

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
    printed = re.search(r"accuracy on 3 held-out rg:syllogism questions: (\d+)% -> (\d+)%", out)
    for folder, shown in zip((before, after), printed.groups(), strict=True):
        summary = json.loads((folder / "summary.json").read_text())["benchmarks"]["rg:syllogism"]
        rows = [json.loads(line) for line in (folder / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and summary["n"] == 3
        assert round(100 * sum(r["correct"] for r in rows) / 3) == round(100 * summary["accuracy"]) == int(shown)
        assert json.loads((folder / "summary.json").read_text())["settings"]["max_new_tokens"] == 96
    first = json.loads((before / "rg_syllogism" / "predictions.jsonl").read_text().splitlines()[0])
    assert f"Q: {first['question'].strip()[:40]}" in out  # the questions shown are the ones saved
    assert err.count("prompts 3/3") >= 2 and "tok/s" in err  # both answering phases show progress in tokens
    assert not list((tmp_path / "tmp").iterdir())  # the answers before training moved into the run, none left
