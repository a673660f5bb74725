"""Bad input from a user: one line naming what and where, exit code 2, no traceback, nothing left behind."""

import json

import pytest

from mathtune.cli import main


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "What is 1 + 1?", "response": "2"}) + "\n")
    missing_field = tmp_path / "nofield.jsonl"
    missing_field.write_text(json.dumps({"query": "q", "response": "r"}) + "\n" + json.dumps({"query": "q2"}) + "\n")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\x9c\n")
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text('{"query": "q", "response": "r"}\n{"query": "q2", "resp')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("learning_rate: [1, 2\n")
    yaml_unknown = tmp_path / "unknown.yaml"
    yaml_unknown.write_text("learning_rat: 0.1\n")
    return tmp_path


CASES = [
    # (id, argv after "sft", text the one line must contain)
    ("missing model", ["--model_id_or_path", "{tmp}/nope", "--dataset", "{tmp}/good.jsonl"], "nope' does not exist"),
    ("model is a file", ["--model_id_or_path", "{tmp}/good.jsonl", "--dataset", "{tmp}/good.jsonl"], "is a file"),
    ("missing dataset", ["--model", "{model}", "--dataset", "{tmp}/absent.jsonl"], "absent.jsonl"),
    ("row without field", ["--model", "{model}", "--dataset", "{tmp}/nofield.jsonl"], "nofield.jsonl:2: field 'response'"),
    ("binary dataset", ["--model", "{model}", "--dataset", "{tmp}/binary.jsonl"], "binary.jsonl"),
    ("truncated json", ["--model", "{model}", "--dataset", "{tmp}/truncated.jsonl"], "truncated.jsonl:2"),
    ("empty dataset", ["--model", "{model}", "--dataset", "{tmp}/empty.jsonl"], "empty.jsonl"),
    ("no dataset", ["--model", "{model}"], "--dataset is required"),
    ("bad #N", ["--model", "{model}", "--dataset", "{tmp}/good.jsonl#zero"], "good.jsonl#zero"),
    ("zero batch", ["--model", "{model}", "--dataset", "{tmp}/good.jsonl", "--batch_size", "0"], "--batch_size"),
    ("negative lr", ["--model", "{model}", "--dataset", "{tmp}/good.jsonl", "--learning_rate", "-1"], "--learning_rate"),
    ("bad yaml", ["--config", "{tmp}/bad.yaml", "--dataset", "{tmp}/good.jsonl"], "bad.yaml"),
    ("unknown yaml key", ["--config", "{tmp}/unknown.yaml", "--dataset", "{tmp}/good.jsonl"], "learning_rat"),
    ("resume without checkpoint", ["--model", "{model}", "--dataset", "{tmp}/good.jsonl", "--resume_from_checkpoint",
                                   "{tmp}/nowhere"], "nowhere"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sft_bad_input_one_line_exit_2_nothing_written(files, tiny_model_dir, capsys, argv, needle):
    out = files / "output"
    args = [a.format(tmp=files, model=tiny_model_dir) for a in argv]
    code = main(["sft", *args, "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert needle in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists() or not any(out.rglob("v*-*")), "a run dir was left behind"


@pytest.mark.parametrize("argv, needle", [
    (["sft", "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["sft", "--batch_size", "two"], "--batch_size"),
    (["infer", "--ckpt_dir", "{tmp}/nope", "--query", "hi"], "nope' does not exist"),
    (["infer", "--ckpt_dir", "{model}", "--input", "{tmp}/absent.jsonl", "--output", "{tmp}/o.jsonl"], "absent.jsonl"),
    (["infer", "--ckpt_dir", "{model}", "--input", "{tmp}/good.jsonl"], "--input and --output go together"),
    (["export", "--ckpt_dir", "{tmp}/nope"], "nope' does not exist"),
    (["export", "--ckpt_dir", "{model}"], "holds no LoRA adapter"),
    (["plot", "{tmp}"], "has no logging.jsonl"),
])
def test_other_verbs_bad_input(files, tiny_model_dir, capsys, argv, needle):
    code = main([a.format(tmp=files, model=tiny_model_dir) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert needle in err[0]
    assert not (files / "o.jsonl").exists()
